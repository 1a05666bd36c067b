"""Where a scored model came from: the training record `harness train` leaves in its output directory,
found from a run record, and the contamination flag it carries.

A run record (`results.json`) names its model by `model.name`, `model.path` and `model.adapter`.
Any of them that is a local directory holding `harness_train.json` — or a `checkpoint-N` directory
inside one — is a checkpoint this harness trained. When that record's `contamination.contaminated`
is true (the check `harness train` runs on its datasets found evaluated questions), the gate and the
leaderboard flag the run. `harness eval` records local models by absolute path, so the flag does not
depend on where the reader runs; a relative path (a record of an older harness) is taken from the
current directory, as that harness took it, and the flag says so. `harness train merge` copies the adapter's record into the merged model; a checkpoint
copied by other means carries no training record, and so no flag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRAINING_RECORD = "harness_train.json"  # what `harness train` writes into its output directory
_CHECKPOINT = re.compile(r"checkpoint-\d+")


def training_record(directory: str | Path | None) -> Path | None:
    """The training record of a checkpoint directory (or of the run a `checkpoint-N` belongs to);
    None where there is none."""
    if not directory:
        return None
    path = Path(directory).expanduser()
    for candidate in (path, path.parent if _CHECKPOINT.fullmatch(path.name) else None):
        if candidate is not None and (candidate / TRAINING_RECORD).is_file():
            return (candidate / TRAINING_RECORD).resolve()
    return None


def _places(model):
    """(directory, named relatively) for what a record's model names: `path` and `adapter`, and
    `name` where it is an absolute path (a name as typed is a label, not a location)."""
    for key in ("name", "path", "adapter"):
        value = getattr(model, key, None)
        if isinstance(value, str) and value:
            relative = not Path(value).expanduser().is_absolute()
            if not (key == "name" and relative):
                yield value, relative


def training_records(model) -> list[Path]:
    """The training records of the local directories a run record's model (`harness.records.ModelInfo`,
    or anything with `name`, `path` and `adapter`) names, in that order, once each."""
    return list(dict.fromkeys(p for p in (training_record(v) for v, _ in _places(model)) if p is not None))


def contamination_flag(model) -> str | None:
    """Why a run's model is flagged (trained on data holding evaluated questions), or None."""
    seen = set()
    for value, relative in _places(model):
        path = training_record(value)
        if path is None or path in seen:
            continue
        seen.add(path)
        flag = _flag(path)
        if flag:
            if relative:  # an older harness recorded it so; it took it from the directory it ran in
                flag += f" (the record names {value} by a relative path: found from the current directory)"
            return flag
    return None


def _flag(path: Path) -> str | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"its training record {path} cannot be read ({e.__class__.__name__}); contamination unknown"
    check = record.get("contamination") if isinstance(record, dict) else None
    if isinstance(check, dict) and check.get("contaminated"):
        datasets = [name for name, d in (check.get("datasets") or {}).items() if (d or {}).get("questions")]
        where = f" ({', '.join(datasets)})" if datasets else ""
        return f"trained on data holding {check.get('questions', '?')} evaluated question(s){where}; see {path}"
    return None
