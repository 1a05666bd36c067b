"""Where a scored model came from: the training record `harness train` leaves in its output directory,
found from a run record, and the contamination flag it carries.

A run record (`results.json`) names its model by `model.name`, `model.path` and `model.adapter`.
Any of them that is an absolute path to a local directory holding `harness_train.json` — or to a
`checkpoint-N` directory inside one — is a checkpoint this harness trained. When that record's
`contamination.contaminated` is true (the check `harness train` runs on its datasets found evaluated
questions), the gate and the leaderboard flag the run. `harness eval` records local models by
absolute path; a relative path (a record of an older harness) is not looked up, since what it
names would depend on the directory the reading command runs in. `harness train merge` copies the adapter's record into the merged model; a checkpoint
copied by other means carries no training record, and so no flag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRAINING_RECORD = "harness_train.json"  # what `harness train` writes into its output directory
_CHECKPOINT = re.compile(r"checkpoint-\d+")


def training_record(directory: str | None) -> Path | None:
    """The training record of a checkpoint directory (or of the run a `checkpoint-N` belongs to),
    given by absolute path; None where there is none."""
    if not isinstance(directory, str) or not directory or not Path(directory).expanduser().is_absolute():
        return None
    path = Path(directory).expanduser()
    for candidate in (path, path.parent if _CHECKPOINT.fullmatch(path.name) else None):
        if candidate is not None and (candidate / TRAINING_RECORD).is_file():
            return (candidate / TRAINING_RECORD).resolve()
    return None


def training_records(model) -> list[Path]:
    """The training records of the local directories a run record's model (`harness.records.ModelInfo`,
    or anything with `name`, `path` and `adapter`) names, in that order, once each."""
    found = (training_record(getattr(model, key, None)) for key in ("name", "path", "adapter"))
    return list(dict.fromkeys(p for p in found if p is not None))


def contamination_flag(model) -> str | None:
    """Why a run's model is flagged (trained on data holding evaluated questions), or None."""
    for path in training_records(model):
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
