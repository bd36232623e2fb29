"""The documentation site: it builds with ``mkdocs build --strict`` (a broken link, a bad
docstring or a failing page generator fails it), every code example on it runs, every
public symbol has a docstring, and in headless Chromium its math renders and its plots
load."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=ROOT, env={**os.environ, **QUIET}, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_site_builds_strict_with_every_page(site):
    for page in ("index.html", "concepts/index.html", "presets/index.html", "api/index.html",
                 "porting/from-tf1/index.html", "porting/from-sb3/index.html",
                 "performance/index.html", "cli/index.html", "benchmarks/index.html"):  # fmt: skip
        assert (site / page).is_file(), page
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for symbol in ("from_preset", "translate", "scale_by_stddev", "get_preset"):
        assert symbol in api


def test_the_api_page_documents_every_argument_of_rmsprop(site):
    """The API reference shows ``rmsprop.RMSprop``'s constructor: each argument by name with
    its description (mkdocstrings reads the docstring from the source, so it must be a
    literal), the docstrings' cross-reference roles rendered as code (no literal
    ``:class:``), and examples as code blocks (no ``>>>`` shown as nested quotes)."""
    import html as html_module

    import rmsprop

    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    start = page.index('id="rmsprop.optim.rmsprop.RMSprop"')
    rmsprop_section = page[start : page.index('class="doc doc-heading"', start + 100)]
    documented = set(re.findall(r"<code>(\w+)</code>", rmsprop_section))
    arguments = set(inspect.signature(rmsprop.RMSprop).parameters)
    assert arguments <= documented, sorted(arguments - documented)
    text = html_module.unescape(re.sub(r"<[^>]+>", "", page))
    for role in (":class:", ":data:", ":func:", ":meth:", ":mod:"):
        assert role not in text, role
    assert "<blockquote>" not in page


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


PAGES = sorted(p for p in DOCS.rglob("*.md") if _python_blocks(p))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_every_code_example_runs(page):
    """A page's Python blocks run in order in one namespace, as a reader would paste them."""
    pytest.importorskip("jax")
    pytest.importorskip("keras")
    namespace: dict = {}
    for number, block in enumerate(_python_blocks(page), 1):
        exec(compile(block, f"{page.name} block {number}", "exec"), namespace)


PUBLIC = ("rmsprop", "rmsprop.reference", "rmsprop.optax", "rmsprop.keras", "rmsprop.port",
          "rmsprop.presets")  # fmt: skip


@pytest.mark.parametrize("module_name", PUBLIC)
def test_every_public_symbol_is_documented(module_name):
    """Every name a public module exports has a docstring (the API reference shows it)."""
    pytest.importorskip("jax")
    pytest.importorskip("keras")
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
    missing = []
    for name in names:
        value = getattr(module, name)
        if (inspect.isfunction(value) or inspect.isclass(value)) and not inspect.getdoc(value):
            missing.append(name)
    assert not missing, f"{module_name}: no docstring for {missing}"
    assert (module.__doc__ or "").strip(), module_name


PROBE = """<script>
window.addEventListener('load', () => {
  const maths = [...document.querySelectorAll('math')];
  const images = [...document.querySelectorAll('article img')];
  const report = {
    math: maths.length,
    mathLaidOut: maths.filter(m => m.getBoundingClientRect().height > 0).length,
    images: images.length,
    imagesLoaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
  };
  const out = document.createElement('pre');
  out.id = 'probe'; out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""


def _chromium(args: list[str], profile: Path) -> str:
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_math_renders_and_plots_load_in_headless_chromium(site, tmp_path):
    """The algorithm's MathML is laid out (not shown as raw TeX) and every plot loads."""
    import json

    expected = {"concepts": ("math", 3), "performance": ("images", 4)}
    for page, (what, at_least) in expected.items():
        html = (site / page / "index.html").read_text(encoding="utf-8")
        assert "\\begin{" not in html and "$$" not in html  # no raw TeX left
        probe = site / page / "probe.html"
        probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = _chromium(
            ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp_path / "p"
        )
        report = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom).group(1))
        assert report[what] >= at_least, (page, report)
        assert report["mathLaidOut"] == report["math"], (page, report)
        assert report["imagesLoaded"] == report["images"], (page, report)
    shot = tmp_path / "concepts.png"
    _chromium(["--window-size=1280,1400", f"--screenshot={shot}",
               (site / "concepts" / "index.html").as_uri()], tmp_path / "s")  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


LAYOUT_PROBE = """<script>
window.addEventListener('load', () => {
  const codes = [...document.querySelectorAll('article pre > code')];
  const scrolled = codes.filter(c => c.scrollWidth > c.clientWidth + 1
      || c.parentElement.scrollWidth > c.parentElement.clientWidth + 1)
    .map(c => c.textContent.slice(0, 60));
  const split = [];
  for (const cell of document.querySelectorAll('article td, article th')) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.textContent.matchAll(/[A-Za-z0-9_.]{4,}/g)) {
        const range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
        if (lines.size > 1) split.push(m[0]);
      }
    }
  }
  const out = document.createElement('pre');
  out.id = 'probe'; out.textContent = JSON.stringify({codes: codes.length, scrolled, split});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_at_1280_px_no_code_block_scrolls_and_no_table_splits_a_word(site, tmp_path):
    """In a 1280-px window, code blocks wrap instead of scrolling sideways (the Quick start,
    the porting pages' exact lines) and no word in a table cell is split across lines (the
    porting tables broke ``eps_in_sqrt`` mid-word)."""
    import json

    for page in ("", "install", "porting/from-tf1", "porting/from-keras", "porting/from-timm",
                 "api"):  # fmt: skip
        html = (site / page / "index.html").read_text(encoding="utf-8")
        probe = site / page / "layout-probe.html"
        probe.write_text(html.replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
        dom = _chromium(["--window-size=1280,1000", "--virtual-time-budget=5000", "--dump-dom",
                         probe.as_uri()], tmp_path / "p")  # fmt: skip
        report = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1))
        assert report["scrolled"] == [] and report["split"] == [], (page, report)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_at_1280_px_every_figures_smallest_text_is_readable(site, tmp_path):
    """The performance page's figures are shown scaled to the article's width: their
    smallest text (``SMALLEST_FONT_PT`` at ``FIGURE_DPI`` in docs/gen_pages.py) is at least
    9 px on screen in a 1280-px window (the large-tensor figure's was about 5 px)."""
    import json

    source = (DOCS / "gen_pages.py").read_text(encoding="utf-8")
    points = int(re.search(r"^SMALLEST_FONT_PT = (\d+)", source, re.M).group(1))
    dpi = int(re.search(r"^FIGURE_DPI = (\d+)", source, re.M).group(1))
    probe_js = """<script>window.addEventListener('load', () => {
      const out = document.createElement('pre'); out.id = 'probe';
      out.textContent = JSON.stringify([...document.querySelectorAll('article img')]
        .map(i => [i.getAttribute('src'), i.clientWidth / i.naturalWidth]));
      document.body.appendChild(out); });</script>"""
    html = (site / "performance" / "index.html").read_text(encoding="utf-8")
    probe = site / "performance" / "figure-probe.html"
    probe.write_text(html.replace("</body>", probe_js + "</body>"), encoding="utf-8")
    dom = _chromium(["--window-size=1280,1000", "--virtual-time-budget=5000", "--dump-dom",
                     probe.as_uri()], tmp_path / "p")  # fmt: skip
    scales = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1))
    assert len(scales) >= 4
    smallest = {src: round(points * dpi / 72 * scale, 1) for src, scale in scales}
    assert all(px >= 9 for px in smallest.values()), smallest
