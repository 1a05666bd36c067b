"""Where a scored model came from: the training record `harness train` leaves in its output directory,
found from a run record, and the contamination flag it carries.

A run record (`results.json`) names its model by `model.name`, `model.path` and `model.adapter`.
Any of them that is a local directory holding `harness_train.json` — or a `checkpoint-N` directory
inside one — is a checkpoint this harness trained. When that record's `contamination.contaminated`
is true (the check `harness train` runs on its datasets found evaluated questions), the gate and the
leaderboard flag the run. Relative paths are taken from the current directory, as `harness eval`
took them. `harness train merge` copies the adapter's record into the merged model; a checkpoint
copied by other means carries no training record, and so no flag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRAINING_RECORD = "harness_train.json"  # the name `harness train` writes (training.workflow.RUN_RECORD)
_CHECKPOINT = re.compile(r"checkpoint-\d+")


def training_records(model: dict) -> list[Path]:
    """The training records of the local directories a run record's `model` names, in that order, once each."""
    found: dict[Path, None] = {}
    for key in ("name", "path", "adapter"):
        value = model.get(key)
        if not isinstance(value, str) or not value:
            continue
        directory = Path(value).expanduser()
        for candidate in (directory, directory.parent if _CHECKPOINT.fullmatch(directory.name) else None):
            if candidate is not None and (candidate / TRAINING_RECORD).is_file():
                found.setdefault((candidate / TRAINING_RECORD).resolve())
                break
    return list(found)


def contamination_flag(results: dict) -> str | None:
    """Why a run's model is flagged (trained on data holding evaluated questions), or None."""
    model = results.get("model") if isinstance(results, dict) else None
    if not isinstance(model, dict):
        return None
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
