"""Writing what the leaderboard and reports render: whole files or nothing, and reproducible PNGs.

Everything is rendered in memory first; files are written only once all of it succeeded, each
through a temporary file in the same directory and an atomic rename.
"""

from __future__ import annotations

import io
import os
import tempfile
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


def write_atomic(path: Path, data: bytes) -> bool:
    """Replace `path` by `data` atomically (keeping its permissions); False if it already held it.

    A symbolic link is followed, so the file it points to is rewritten and the link stays.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    try:
        if path.read_bytes() == data:
            return False  # nothing to change: keep the file (and its mtime) as it is
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror}") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise HarnessError(f"cannot write {path}: {e.strerror}") from None
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise HarnessError(f"cannot write {path}: {e.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
