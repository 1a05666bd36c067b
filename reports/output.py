"""Writing what the leaderboard and reports render: whole files or nothing, and reproducible PNGs.

Everything is rendered in memory first; files are written only once all of it succeeded, each
through a temporary file in the same directory and an atomic rename.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from harness.errors import HarnessError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def checked_target(path: str | Path, what: str = "--output") -> Path:
    """`path` as a file to (re)write: its directory must exist, and it must not be a directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise HarnessError(f"{what} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise HarnessError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise HarnessError(f"{what} {path}: directory {parent} is not writable")
    return path


def image_path(markdown: Path, kind: str) -> Path:
    """Where the image `kind` of the Markdown file `markdown` goes: `<stem>-<kind>.png` beside it."""
    return markdown.with_name(f"{markdown.stem}-{kind}.png")


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (no display needed, same pixels everywhere)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; no software/version metadata, so equal figures give equal bytes."""
    plt = pyplot()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a glyph missing from the font (say, a CJK model name)
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
