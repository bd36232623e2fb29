"""MkDocs hook: math rendered at build time as MathML (no JavaScript, no network), and the
cross-reference roles of the docstrings (``:class:`x```, written for ``help()`` and IDEs)
shown as code.

``pymdownx.arithmatex`` (generic mode) wraps ``$...$`` and ``$$...$$`` in
``<span class="arithmatex">\\(...\\)</span>`` and ``<div class="arithmatex">\\[...\\]</div>``;
this hook replaces each with the MathML ``latex2mathml`` makes, which browsers render
natively. A formula latex2mathml cannot read fails the build (``mkdocs build --strict``).
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.+?)\\\)</span>', re.S)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', re.S)
#: a role before rendered code: ``:class:`~a.b.C``` shows ``C``, ``:data:`a.B``` shows ``a.B``
ROLE = re.compile(r":(?:class|data|func|meth|mod|attr|obj):<code>(~?)([^<]*)</code>")


def _role(match: re.Match) -> str:
    short, name = match.group(1), match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if short else name}</code>"


def _mathml(latex: str, display: str) -> str:
    return convert(html.unescape(latex).strip(), display=display)


def on_page_content(content: str, page, config, files) -> str:  # MkDocs calls it with these names
    content = ROLE.sub(_role, content)
    content = BLOCK.sub(
        lambda m: f'<div class="math">{_mathml(m.group(1), "block")}</div>', content
    )
    return INLINE.sub(lambda m: _mathml(m.group(1), "inline"), content)
