"""The README block: rewrite what lies between the leaderboard markers and not one byte more.

The markers count only alone on their line (a README may mention them in prose or inline code).
The file keeps its encoding (UTF-8, with or without BOM, or UTF-16/32 with BOM), its line
endings (the block is written with the file's own) and whether it ends with a newline. With no
markers, a heading and the marked block are appended at the end.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

START = "<!-- leaderboard:start -->"
END = "<!-- leaderboard:end -->"
HEADING = "## Leaderboard"
_BOMS = (  # longest first: a UTF-32-LE BOM starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass(frozen=True)
class Document:
    """A text file as bytes → text and back, exactly."""

    bom: bytes
    codec: str
    text: str

    def encode(self, text: str) -> bytes:
        return self.bom + text.encode(self.codec)


def read_document(path: Path) -> Document:
    """The file's text and how to write it back; a file that does not exist yet is empty UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Document(b"", "utf-8", "")
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror}") from None
    bom, codec = next(((b, c) for b, c in _BOMS if raw.startswith(b)), (b"", "utf-8"))
    try:
        text = raw[len(bom):].decode(codec)
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path} is not {codec.upper()} text (byte {e.start + len(bom)}); the leaderboard block is written into text files only") from None
    return Document(bom, codec, text)


def _marker(marker: str) -> re.Pattern:
    return re.compile(rf"^[ \t]*{re.escape(marker)}[ \t]*(?=\r?$)", re.MULTILINE)


def with_block(text: str, block: str, where: str = "the README") -> str:
    """`text` with `block` between the markers (appended with the markers if there are none)."""
    fenced = _fenced_spans(text)  # markers shown in a code block are documentation, not the block

    def live(marker: str) -> list[re.Match]:
        return [m for m in _marker(marker).finditer(text) if not any(a <= m.start() < b for a, b in fenced)]

    starts, ends = live(START), live(END)
    if len(starts) > 1 or len(ends) > 1:
        raise HarnessError(f"{where} has {len(starts)} '{START}' and {len(ends)} '{END}' lines; keep one of each")
    if len(starts) != len(ends):
        have, lack = (START, END) if starts else (END, START)
        raise HarnessError(f"{where} has a '{have}' line but no '{lack}' line; add it or remove the other")
    if starts and ends[0].start() < starts[0].end():
        raise HarnessError(f"{where} has '{END}' before '{START}'")
    if starts:
        start, end = starts[0], ends[0]
        nl = _newline(text[: start.start()] + text[end.end():])
        return text[: start.end()] + nl + _lines(block, nl) + nl + text[end.start():]
    nl = _newline(text)
    if not text:
        lead = ""
    elif text.endswith(("\n", "\r")):
        lead = nl
    else:
        lead = nl + nl
    tail = nl if not text or text.endswith(("\n", "\r")) else ""  # keep the file's habit at its end
    return text + lead + HEADING + nl + nl + START + nl + _lines(block, nl) + nl + END + tail


_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})([^\r\n]*)", re.MULTILINE)


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of fenced code blocks (CommonMark: a fence closes with at least as many of
    the same character; an unclosed one runs to the end)."""
    spans, opening = [], None
    for m in _FENCE.finditer(text):
        fence = m.group(1)
        if opening is None:
            opening = m
        elif fence[0] == opening.group(1)[0] and len(fence) >= len(opening.group(1)) and not m.group(2).strip():
            spans.append((opening.start(), m.end()))
            opening = None
    if opening is not None:
        spans.append((opening.start(), len(text)))
    return spans


def _newline(text: str) -> str:
    """The file's line ending: CRLF if most of its lines end so, else LF."""
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"


def _lines(block: str, nl: str) -> str:
    return nl.join(block.strip("\n").split("\n"))
