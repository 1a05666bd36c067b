"""Which runs a leaderboard is made of: run directories, parents holding runs, and globs.

`harness eval --shots 0 --shots 5 --output DIR` makes `DIR/shots-0` and `DIR/shots-5`, and
`runs/` may hold many such directories, so a directory that is not itself a run is searched for
the runs below it. Anything that looks like a run but is not a finished one is an error, never
silently skipped: a leaderboard that quietly drops a run would be wrong without saying so.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from harness.errors import RunError
from harness.records import RESULTS, SAMPLES, SETTINGS, Run, load_run

_RUN_FILES = (RESULTS, SAMPLES, SETTINGS)


def collect_runs(arguments: list[str]) -> list[Run]:
    """Every run named by `arguments`, once each, in a stable order (sorted by path)."""
    found: dict[Path, Path] = {}
    for arg in arguments:
        for path in _expand(arg):
            for run_dir in _run_dirs(path, arg):
                found.setdefault(run_dir.resolve(), run_dir)
    return [load_run(found[key]) for key in sorted(found)]


def _expand(arg: str) -> list[Path]:
    path = Path(arg).expanduser()
    if path.exists():
        return [path]
    if glob.has_magic(arg):  # a pattern the shell did not expand (quoted, or on Windows)
        matches = sorted(glob.glob(os.path.expanduser(arg)))
        if not matches:
            raise RunError(f"no runs match {arg}")
        return [Path(m) for m in matches]
    raise RunError(f"no such run directory: {arg}")


def _is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in _RUN_FILES)


def _run_dirs(path: Path, arg: str) -> list[Path]:
    if not path.is_dir():
        raise RunError(f"{path} is not a run directory (a file{f', matched by {arg}' if str(path) != arg else ''})")
    if _is_run(path):
        return [path]
    runs = []
    for root, dirs, _ in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if _is_run(Path(root)):
            runs.append(Path(root))
            dirs[:] = []  # a run holds no runs
    if not runs:
        raise RunError(f"{path} is not a run directory (no {RESULTS}) and holds no runs")
    return runs
