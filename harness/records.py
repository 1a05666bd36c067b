"""Run records: a run is a directory holding

- `settings.json`: what the run was started with (a resumed run must match it),
- `samples.jsonl`: one line per scored question, appended as questions finish,
- `results.json`: the summary, written atomically once every question is scored.

Leaderboards, reports and the gate read runs through `load_run` only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import RunError
from harness.files import write_atomic
from harness.stats import macro_interval, wilson_interval

SCHEMA = "devops-eval/run/1"
RESULTS = "results.json"
SAMPLES = "samples.jsonl"
SETTINGS = "settings.json"
# Each data-parallel worker appends to its own file; the finished run merges them into SAMPLES.
RANK_SAMPLES = "samples.rank{rank}.jsonl"
from tasks import LETTERS  # noqa: E402  (defined once, in tasks; readers of run records import it from here)


@dataclass(frozen=True)
class Sample:
    """One scored question: gold and predicted letters and the four letter logits (A..D)."""

    subject: str
    id: int
    gold: str
    pred: str
    logits: tuple[float, float, float, float]
    correct: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.subject, self.id)

    @classmethod
    def scored(cls, subject: str, id: int, gold: str, logits) -> Sample:
        """The sample for fp32 `logits`: argmax, ties going to the earlier letter."""
        values = tuple(float(x) for x in logits)
        pred = LETTERS[int(np.argmax(np.asarray(values, dtype=np.float64)))]
        return cls(subject, int(id), gold, pred, values, pred == gold)


class SampleLog:
    """`samples.jsonl`, appended batch by batch; a torn last line (a killed run) is dropped."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def repair(self) -> None:
        """Cut a partial last line left by a process that died mid-write (before appending)."""
        if not self.path.is_file():
            return
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            with self.path.open("r+b") as f:
                f.truncate(end)

    def load(self) -> dict[tuple[str, int], Sample]:
        """Every complete line, by (subject, id); a partial last line is ignored."""
        if not self.path.is_file():
            return {}
        raw = self.path.read_bytes()
        raw = raw[: raw.rfind(b"\n") + 1]
        samples = {}
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                s = _sample(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                why = f" ({e})" if isinstance(e, _BadSample) else ""
                raise RunError(f"{self.path} line {number}: not a sample record{why}") from None
            samples[s.key] = s
        return samples

    def append(self, samples: Iterable[Sample]) -> None:
        text = "".join(_line(s) for s in samples)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


class _BadSample(ValueError):
    pass


def _sample(d: dict) -> Sample:
    """A sample line read back, refusing what the harness never writes (a reader trusts `correct`)."""
    subject, id_, gold, pred, correct = d["subject"], d["id"], d["gold"], d["pred"], d["correct"]
    logits = tuple(float(x) for x in d["logits"])
    if not isinstance(subject, str) or type(id_) is not int:
        raise _BadSample("subject must be a name and id a row number")
    if gold not in LETTERS or pred not in LETTERS or len(logits) != len(LETTERS):
        raise _BadSample("gold and pred must be letters A-D, logits four numbers")
    if type(correct) is not bool or correct != (pred == gold):
        raise _BadSample(f"correct is {correct!r} but pred {pred} and gold {gold}")
    return Sample(subject, id_, gold, pred, logits, correct)


def _line(sample: Sample) -> str:
    return json.dumps(asdict(sample), ensure_ascii=False) + "\n"


def rank_sample_log(run_dir: Path, rank: int, world_size: int) -> SampleLog:
    """The file this worker appends to: SAMPLES for a single process, its own file otherwise."""
    name = SAMPLES if world_size == 1 else RANK_SAMPLES.format(rank=rank)
    return SampleLog(Path(run_dir) / name)


def read_all_samples(run_dir: Path) -> dict[tuple[str, int], Sample]:
    """Every scored question in a run directory, whichever worker (of any earlier run) wrote it."""
    run_dir = Path(run_dir)
    done: dict[tuple[str, int], Sample] = {}
    for path in [run_dir / SAMPLES, *sorted(run_dir.glob(RANK_SAMPLES.format(rank="*")))]:
        done.update(SampleLog(path).load())
    return done


def write_samples(run_dir: Path, samples: list[Sample]) -> None:
    """Replace the run's sample files by one SAMPLES in the given (canonical) order, atomically."""
    run_dir = Path(run_dir)
    write_atomic(run_dir / SAMPLES, "".join(_line(s) for s in samples))
    for path in run_dir.glob(RANK_SAMPLES.format(rank="*")):
        path.unlink()


def summarize(samples: Iterable[Sample], subject_keys: list[str]) -> dict:
    """Per-subject and overall accuracy (micro and macro) with 95% intervals."""
    by_subject = {k: [0, 0] for k in subject_keys}
    for s in samples:
        by_subject[s.subject][0] += s.correct
        by_subject[s.subject][1] += 1
    subjects = {}
    for key, (k, n) in by_subject.items():
        lo, hi = wilson_interval(k, n)
        subjects[key] = {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi]}
    correct = sum(k for k, _ in by_subject.values())
    n = sum(n for _, n in by_subject.values())
    parts = list(by_subject.values())
    macro = sum(k / n_ for k, n_ in parts if n_) / max(1, sum(1 for _, n_ in parts if n_))
    overall = {
        "n": n,
        "correct": correct,
        "micro": correct / n if n else 0.0,
        "micro_ci95": list(wilson_interval(correct, n)),
        "macro": macro,
        "macro_ci95": list(macro_interval(parts)),
    }
    return {"subjects": subjects, "overall": overall}


@dataclass
class Run:
    """A finished run read back from its directory."""

    path: Path
    results: dict
    samples: list[Sample]

    @property
    def protocol(self) -> str:
        return self.results["protocol"]["name"]

    @property
    def shots(self) -> int:
        return self.results["protocol"]["shots"]

    @property
    def model_name(self) -> str:
        return self.results["model"]["name"]


def load_run(path: str | Path) -> Run:
    """Read a finished run; a directory that is not one, or a corrupt one, is a RunError."""
    path = Path(path)
    results_file = path / RESULTS
    if not path.is_dir():
        raise RunError(f"no such run directory: {path}")
    if not results_file.is_file():
        hint = " (unfinished: re-run the same command to resume it)" if (path / SAMPLES).is_file() else ""
        raise RunError(f"{path} is not a finished run: no {RESULTS}{hint}")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{results_file} is corrupt: {e}") from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        raise RunError(f"{results_file} is not a run record of this harness (schema {SCHEMA})")
    _check_shape(results, results_file)
    samples = list(SampleLog(path / SAMPLES).load().values())
    _check_counts(results, samples, path)
    return Run(path, results, samples)


def _check_shape(results: dict, results_file: Path) -> None:
    """The parts of a run record its readers rely on, with the types they rely on."""
    for key in ("model", "protocol", "task", "subjects", "overall"):
        if not isinstance(results.get(key), dict):
            raise RunError(f"{results_file}: '{key}' is missing or not an object")
    p, m = results["protocol"], results["model"]
    if not (isinstance(p.get("name"), str) and isinstance(p.get("version"), str) and type(p.get("shots")) is int):
        raise RunError(f"{results_file}: protocol needs a name, a version (text) and shots (a whole number)")
    if not isinstance(m.get("name"), str):
        raise RunError(f"{results_file}: model needs a name")
    for where, part in [*((f"subjects.{k}", v) for k, v in results["subjects"].items()), ("overall", results["overall"])]:
        if not isinstance(part, dict) or type(part.get("n")) is not int or type(part.get("correct")) is not int:
            raise RunError(f"{results_file}: {where} needs whole numbers n and correct")


def _check_counts(results: dict, samples: list[Sample], path: Path) -> None:
    """results.json must say what its samples say: readers use one or the other."""
    subjects = list(results["subjects"])
    stray = sorted({s.subject for s in samples} - set(subjects))
    if stray:
        raise RunError(f"{path}: {SAMPLES} has questions of {', '.join(stray)}, which {RESULTS} does not list")
    counted = summarize(samples, subjects)
    for where, ours, theirs in [
        *((f"subjects.{k}", counted["subjects"][k], results["subjects"][k]) for k in subjects),
        ("overall", counted["overall"], results["overall"]),
    ]:
        for field in ("n", "correct"):
            if ours[field] != theirs[field]:
                raise RunError(
                    f"{path}: {RESULTS} {where}.{field} is {theirs[field]} but {SAMPLES} gives {ours[field]}"
                )
        score = "micro" if where == "overall" else "accuracy"
        if not isinstance(theirs.get(score), int | float) or abs(theirs[score] - ours[score]) > 1e-9:
            raise RunError(f"{path}: {RESULTS} {where}.{score} is {theirs.get(score)!r} but {SAMPLES} gives {ours[score]:.6f}")


# --- comparability: may two runs be compared question by question? ------------------------------

# Settings that must agree, in the order they are checked (dotted paths into results.json).
# The data (content digests of every split) and the question set are checked after these.
COMPARED_SETTINGS = (
    "schema",
    "protocol.name",
    "protocol.version",
    "protocol.shots",
    "protocol.chat",
    "task.normalize",
    "task.subjects",
    "task.limit",
)


class IncompatibleRuns(RunError):
    """Two runs that cannot be compared question by question (other protocol, shots, data...)."""


def setting(results: dict, dotted: str) -> Any:
    """A value of results.json by dotted path (`protocol.shots`); None where absent."""
    value: Any = results
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def setting_difference(a: dict, b: dict, fields: Sequence[str] = COMPARED_SETTINGS) -> tuple[str, Any, Any] | None:
    """The first of `fields` whose value differs between two results dicts, with both values."""
    for field in fields:
        va, vb = setting(a, field), setting(b, field)
        if va != vb:
            return field, va, vb
    return None


def show_setting(value: Any) -> str:
    """A setting's value as a message shows it (None as 'none', lists comma-joined)."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def data_difference(a: dict, b: dict) -> tuple[str, str | None, str | None] | None:
    """The first subject/split whose parsed cells differ (content digests: a Hub copy and a local
    copy of the same questions agree), with both digests."""
    da, db = setting(a, "task.data") or {}, setting(b, "task.data") or {}
    for subject in dict.fromkeys([*da, *db]):
        sa, sb = da.get(subject) or {}, db.get(subject) or {}
        for split in dict.fromkeys([*sa, *sb]):
            ha, hb = (sa.get(split) or {}).get("content_sha256"), (sb.get(split) or {}).get("content_sha256")
            if ha != hb:
                return f"{subject}/{split}", ha, hb
    return None


def check_comparable(a: Run, b: Run, labels: tuple[str, str] = ("the baseline", "the candidate")) -> None:
    """Raise IncompatibleRuns naming the first setting, data split or question that differs."""
    la, lb = labels
    where = f"cannot compare {b.path} with {a.path}"
    diff = setting_difference(a.results, b.results)
    if diff:
        field, va, vb = diff
        raise IncompatibleRuns(f"{where}: {field} differs ({show_setting(va)} in {la}, {show_setting(vb)} in {lb})")
    data = data_difference(a.results, b.results)
    if data:
        split, ha, hb = data
        raise IncompatibleRuns(
            f"{where}: they were scored on different data: the content of {split} is "
            f"{show_setting(ha)[:12]} in {la}, {show_setting(hb)[:12]} in {lb}"
        )
    ka, kb = {s.key: s for s in a.samples}, {s.key: s for s in b.samples}
    only_a, only_b = sorted(ka.keys() - kb.keys()), sorted(kb.keys() - ka.keys())
    if only_a or only_b:
        example = (only_a or only_b)[0]
        raise IncompatibleRuns(
            f"{where}: the question sets differ ({len(only_a)} only in {la}, {len(only_b)} only in {lb}, "
            f"e.g. {example[0]} #{example[1]})"
        )
    for key, s in ka.items():
        if kb[key].gold != s.gold:
            raise IncompatibleRuns(
                f"{where}: the gold answer of {key[0]} #{key[1]} differs ({s.gold} in {la}, {kb[key].gold} in {lb})"
            )
