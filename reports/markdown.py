"""Markdown that a run record cannot break: escaping and the Jinja2 environment of the templates.

Every `{{ value }}` in a template is escaped unless it is `Raw` (Markdown this code built itself
from numbers and escaped parts), so a model name such as ``a|b<script>`` stays one table cell of
plain text: pipes, backticks, emphasis, links and HTML are neutralised and line breaks become
spaces.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import jinja2

# Characters with a meaning in (GitHub-flavoured) Markdown inline text and table cells.
_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")
# C0/C1 controls and Unicode line/paragraph separators: any of them could end a table row.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
DASH = "–"  # what an empty cell shows, as the model card's tables do


class Raw(str):
    """Markdown that is already safe to insert as it is."""


def md_escape(text: object) -> str:
    """`text` as literal Markdown inline text: one line, no markup, no HTML."""
    if isinstance(text, Raw):
        return text
    s = _BREAKS.sub(" ", str(text))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", s)


def md_url(path: str) -> Raw:
    """A relative link target: percent-encoded, so spaces, parentheses and pipes cannot end it."""
    return Raw(quote(str(path).replace("\\", "/"), safe="/._-~"))


def md_code(text: object) -> Raw:
    """`text` as inline code outside a table (paths, flags): no backtick inside can end it."""
    s = _BREAKS.sub(" ", str(text))
    fence = "`" * (1 + max((len(m) for m in re.findall(r"`+", s)), default=0))
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return Raw(f"{fence}{pad}{s}{pad}{fence}")


def md_fence(text: str, info: str = "") -> Raw:
    """`text` as a fenced code block whose fence no line inside can close."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return Raw(f"{fence}{info}\n{text}\n{fence}")


def _finalize(value):
    if value is None:
        return DASH
    return md_escape(value)


def environment(package: str) -> jinja2.Environment:
    """The Jinja2 environment for `<package>/templates/*.md.j2`; every output escaped unless Raw."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # HTML escaping is the wrong escaping for Markdown; `_finalize` does it
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
