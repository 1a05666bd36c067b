"""Writing files so that no reader ever sees half of one: a temporary file beside the target, then
an atomic rename. Every area writes its records, reports and verdicts through here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.errors import HarnessError


def write_atomic(path: str | Path, data: bytes | str) -> bool:
    """Replace `path` by `data` (str as UTF-8); False, touching nothing, if it already held it.

    An existing file keeps its permissions; a symbolic link is followed, so the link stays.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    data = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror or e}") from None
    tmp = _temporary(path, data)
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise HarnessError(f"cannot write {path}: {e.strerror or e}") from None
    return True


def check_directory_target(path: str | Path, what: str = "--output") -> Path:
    """`path` as a directory to create or add to: checked before any expensive work starts."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{what} {path} is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise HarnessError(f"{what} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise HarnessError(f"{what} {path}: {ancestor} is not writable")
    return path


def read_json_object(path: str | Path, error: type[HarnessError] = HarnessError) -> dict:
    """The JSON object in `path`; anything else (unreadable, not JSON, `[]`, `null`) is `error` naming the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object, not {json_kind(value)}")
    return value


def json_kind(value) -> str:
    """What a JSON value is, in words: 'an array', 'null'..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    kinds = {list: "an array", str: "a string", int: "a number", float: "a number", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def write_json(path: str | Path, obj) -> bool:
    """`obj` as indented UTF-8 JSON, atomically."""
    return write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_changed(files: dict[Path, bytes | str]) -> list[Path]:
    """`write_all_or_none` for the files whose content differs from `files`; the ones written."""
    changed = {}
    for path, data in files.items():
        data = data.encode("utf-8") if isinstance(data, str) else data
        try:
            if Path(path).read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        except OSError as e:
            raise HarnessError(f"cannot read {path}: {e.strerror or e}") from None
        changed[Path(path)] = data
    write_all_or_none(changed)
    return list(changed)


def write_all_or_none(files: dict[Path, bytes | str]) -> None:
    """Write several files that belong together: every one goes to a temporary file first, so a
    failure while writing (disk full, a directory in the way) leaves every target as it was; only
    then is each renamed into place, which does not fail short of the file system itself failing.
    Directories made for them are removed again after a failure."""
    temps: list[tuple[Path, Path]] = []
    made: list[Path] = []
    written = False
    try:
        for path, data in files.items():
            path = Path(path)
            if path.is_symlink():  # the link stays; its target is replaced
                path = path.resolve()
            if path.is_dir():
                raise HarnessError(f"cannot write {path}: it is a directory")
            make_directories(path.parent, made)
            temps.append((_temporary(path, data.encode("utf-8") if isinstance(data, str) else data), path))
        for tmp, path in temps:
            os.replace(tmp, path)
        written = True
    except OSError as e:
        raise HarnessError(f"cannot write {e.filename or 'an output file'}: {e.strerror or e}") from None
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)  # gone already where the rename happened
        if not written:
            remove_empty(made)


def make_directories(path: Path, made: list[Path]) -> None:
    """`path` and its missing parents, each appended to `made` (outermost first) as it is created,
    so that `remove_empty(made)` can take back exactly what this process made."""
    missing = []
    while not path.exists() and not path.is_symlink():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:  # made meanwhile by another process: not ours to remove
            continue
        made.append(directory)


def remove_empty(made: list[Path]) -> None:
    """The directories `make_directories` made, innermost first, each only if empty."""
    for directory in reversed(made):
        try:
            directory.rmdir()
        except OSError:  # not empty: something else was written there meanwhile
            pass


def _temporary(path: Path, data: bytes) -> Path:
    """`data` in a synced temporary file beside `path`, with the mode `path` has or would get."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as e:
        raise HarnessError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise HarnessError(f"cannot write {path}: {e.strerror or e}") from None
    tmp = Path(name)
    try:
        os.chmod(tmp, mode)  # mkstemp makes 0600; what we write is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise HarnessError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
