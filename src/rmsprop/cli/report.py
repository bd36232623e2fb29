"""A self-contained HTML report: sections of text, embedded PNG figures and tables."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Roboto, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.5; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1em 0; text-align: center; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.note { background: #f7f7ff; border-left: 4px solid #88f; padding: .5em 1em; }
nav ul { list-style: none; padding-left: 0; }
nav a { text-decoration: none; }
code, pre { background: #f4f4f4; padding: 0 .2em; }
"""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (png file name, caption)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    conclusion: str = ""  # what to take from the section, written from the measured numbers


@dataclass
class Report:
    title: str
    intro: str
    sections: list[Section] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)  # where the numbers come from

    def write(self, out: Path) -> Path:
        """Write ``index.html`` into ``out`` (the PNGs must already be there); figures are
        embedded as base64, so the HTML opens on its own."""
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(self.title)}</title>",
                 f"<style>{STYLE}</style></head><body><h1>{_e(self.title)}</h1>",
                 f"<p>{_e(self.intro)}</p>"]  # fmt: skip
        links = "".join(f"<li><a href='#s{i}'>{_e(s.title)}</a></li>"
                        for i, s in enumerate(self.sections))  # fmt: skip
        parts.append(f"<nav><ul>{links}</ul></nav>")
        for i, s in enumerate(self.sections):
            parts.append(f"<h2 id='s{i}'>{_e(s.title)}</h2>")
            parts += [f"<p>{_e(p)}</p>" for p in s.paragraphs]
            if s.conclusion:
                parts.append(f"<p class='note'><b>What to take from it.</b> {_e(s.conclusion)}</p>")
            for caption, header, rows in s.tables:
                parts.append(_table(caption, header, rows))
            for png, caption in s.figures:
                data = base64.b64encode((out / png).read_bytes()).decode("ascii")
                parts.append(
                    f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{_e(caption)}</figcaption></figure>"
                )
            parts += [f"<pre>{_e(c)}</pre>" for c in s.code]
        if self.environment:
            rows = [[k, v] for k, v in self.environment.items()]
            parts.append("<h2 id='environment'>Environment</h2>"
                         + _table("Where these numbers were measured", ["what", "value"], rows))  # fmt: skip
        parts.append("</body></html>")
        path = out / "index.html"
        path.write_text("\n".join(parts), encoding="utf-8")
        return path


def _e(text: Any) -> str:
    return html.escape(str(text))


def _table(caption: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><caption>{_e(caption)}</caption><tr>{head}</tr>{body}</table>"
