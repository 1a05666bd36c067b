"""The dataset registry: `dataset_info.json` names each dataset's file, columns and stage.

    {"devops_qa": {"file_name": "devops_qa.json", "file_sha1": "…", "stage": "sft",
                   "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}}}

`file_name` is relative to the registry's folder (or absolute) and may be a folder of files of one
kind; json/jsonl, csv and txt load with `datasets`. Columns default to LLaMA-Efficient-Tuning's
`instruction`/`input`/`output`; a txt file has one column, `text`. `file_sha1`, when given, must
match the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import first_line
from training.errors import DatasetError

REGISTRY = "dataset_info.json"
LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}
ROLES = ("prompt", "query", "response", "history", "system")
DEFAULT_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": None, "system": None}


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset, resolved: its files, loader, stage, and which column plays which role."""

    name: str
    files: tuple[Path, ...]
    loader: str  # a `datasets` builder: json, csv or text
    stage: str | None
    columns: dict  # role -> column name, or None where the dataset has no such column
    explicit: frozenset  # roles the registry maps itself (a missing column is then an error)
    sha1: str | None = None


def read_registry(dataset_dir: str | Path) -> dict:
    path = Path(dataset_dir).expanduser() / REGISTRY
    if not path.is_file():
        raise DatasetError(f"no dataset registry {path} (--dataset_dir {dataset_dir}); point --dataset_dir at the folder holding {REGISTRY}")
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    if not isinstance(registry, dict):
        raise DatasetError(f"{path} must hold an object mapping dataset names to entries")
    return registry


def resolve(dataset_dir: str | Path, names: list[str], stage: str) -> list[DatasetSpec]:
    """The named datasets, each checked to exist, to be of `stage`, and to match its file_sha1."""
    registry = read_registry(dataset_dir)
    where = Path(dataset_dir).expanduser() / REGISTRY
    specs = []
    for name in names:
        if name not in registry:
            raise DatasetError(f"unknown dataset {name!r}: {where} defines {', '.join(sorted(registry)) or 'none'}")
        spec = _spec(name, registry[name], Path(dataset_dir).expanduser(), where)
        if spec.stage and spec.stage != stage:
            fitting = sorted(n for n, e in registry.items() if isinstance(e, dict) and e.get("stage") in (stage, None))
            raise DatasetError(
                f"dataset {name!r} is for stage {spec.stage}, not {stage} (--stage {stage})"
                + (f"; {stage} datasets in {where}: {', '.join(fitting)}" if fitting else "")
            )
        verify_sha1(spec)
        specs.append(spec)
    return specs


def _spec(name: str, entry, root: Path, where: Path) -> DatasetSpec:
    if not isinstance(entry, dict) or "file_name" not in entry:
        kind = next((k for k in ("hf_hub_url", "script_url") if isinstance(entry, dict) and k in entry), None)
        why = f"{kind} entries are not supported, only local files" if kind else "it has no file_name"
        raise DatasetError(f"dataset {name!r} in {where}: {why}")
    path = root / Path(entry["file_name"]).expanduser()
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
    elif path.is_file():
        files = (path,)
    else:
        raise DatasetError(f"dataset {name!r}: no such file or folder {path}")
    loaders = {LOADERS.get(p.suffix.lower()) for p in files}
    if len(loaders) != 1 or None in loaders:
        kinds = ", ".join(sorted({p.suffix or p.name for p in files})) or "nothing"
        raise DatasetError(f"dataset {name!r}: {path} must be json/jsonl, csv or txt file(s) of one kind (found {kinds})")
    loader = loaders.pop()
    mapped = entry.get("columns") or {}
    unknown = set(mapped) - set(ROLES)
    if unknown:
        raise DatasetError(f"dataset {name!r} in {where}: unknown column role(s) {', '.join(sorted(unknown))}; use {', '.join(ROLES)}")
    defaults = {**DEFAULT_COLUMNS, "prompt": "text"} if loader == "text" else DEFAULT_COLUMNS
    columns = {role: (mapped[role] or None) if role in mapped else defaults[role] for role in ROLES}
    explicit = frozenset(r for r in ROLES if mapped.get(r))
    return DatasetSpec(name, files, loader, entry.get("stage"), columns, explicit, entry.get("file_sha1"))


def verify_sha1(spec: DatasetSpec) -> None:
    if not spec.sha1:
        return
    if len(spec.files) != 1:
        raise DatasetError(f"dataset {spec.name!r}: file_sha1 needs a single file, its file_name is a folder of {len(spec.files)}")
    actual = file_sha1(spec.files[0])
    if actual != spec.sha1:
        raise DatasetError(
            f"dataset {spec.name!r}: {spec.files[0]} has sha1 {actual}, the registry says {spec.sha1}; "
            "restore the file or update file_sha1"
        )


def file_sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()  # in chunks: corpora can be large


def load(spec: DatasetSpec, stage: str, cache_dir: str | None = None, max_samples: int | None = None):
    """The dataset's rows (a `datasets.Dataset`) and the column of each role it has (None: absent)."""
    from datasets import load_dataset

    kwargs = {"keep_default_na": False} if spec.loader == "csv" else {}  # an empty cell is "", not NaN
    try:
        dataset = load_dataset(spec.loader, data_files=[str(p) for p in spec.files], split="train", cache_dir=cache_dir, **kwargs)
    except Exception as e:
        raise DatasetError(f"dataset {spec.name!r}: cannot load {', '.join(map(str, spec.files))}: {first_line(e)}") from None
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    needed = {"prompt"} | ({"response"} if stage == "sft" else set()) | spec.explicit
    columns = {}
    for role, column in spec.columns.items():
        present = column in dataset.column_names
        if column and not present and role in needed:
            raise DatasetError(
                f"dataset {spec.name!r}: no column {column!r} for {role} (its columns: {', '.join(dataset.column_names)}); "
                'map it in dataset_info.json under "columns"'
            )
        columns[role] = column if present else None
    return dataset, columns
