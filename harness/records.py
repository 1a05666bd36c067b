"""Run records, typed: what a run is, and the one rule for which runs may resume into or be
compared with which.

A run is a directory holding

- `settings.json`: what the run was started with (`RunSettings` and the model's identity); a
  resumed run must match it,
- `samples.jsonl`: one `Sample` per scored question, appended as questions finish,
- `results.json`: the `RunRecord`, written atomically once every question is scored.

`RunRecord.to_json` is the only writer of `results.json` and `RunRecord.from_json` its only reader
(it refuses what this harness never writes); `load_run` reads a whole run through them, and every
reader above (reports, leaderboard, gate, quantize comparison) takes the `Run` it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import RunError
from harness.files import write_atomic, write_json
from harness.stats import macro_interval, wilson_interval
from tasks import GROUP, LETTERS, all_subjects

SCHEMA = "devops-eval/run/1"
INTEGRITY = "integrity"  # the block of results.json that `seal` writes and `load_run` checks
INTEGRITY_METHOD = "sha256/1"
RESULTS = "results.json"
SAMPLES = "samples.jsonl"
SETTINGS = "settings.json"
# Each data-parallel worker appends to its own file; the finished run merges them into SAMPLES.
RANK_SAMPLES = "samples.rank{rank}.jsonl"

__all__ = ["LETTERS", "ModelInfo", "Part", "Run", "RunRecord", "RunSettings", "Sample", "Score", "load_run"]


# --- one scored question ---------------------------------------------------------------------


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

    def probabilities(self) -> np.ndarray:
        """Softmax of the four stored letter logits (float64)."""
        x = np.asarray(self.logits, dtype=np.float64)
        e = np.exp(x - x.max())
        return e / e.sum()

    def probability(self, letter: str) -> float:
        return float(self.probabilities()[LETTERS.index(letter)])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Sample:
        """A sample line read back, refusing what the harness never writes (a reader trusts `correct`)."""
        subject, id_, gold, pred, correct = d["subject"], d["id"], d["gold"], d["pred"], d["correct"]
        logits = tuple(float(x) for x in d["logits"])
        if not isinstance(subject, str) or type(id_) is not int:
            raise _BadSample("subject must be a name and id a row number")
        if gold not in LETTERS or pred not in LETTERS or len(logits) != len(LETTERS):
            raise _BadSample("gold and pred must be letters A-D, logits four numbers")
        if type(correct) is not bool or correct != (pred == gold):
            raise _BadSample(f"correct is {correct!r} but pred {pred} and gold {gold}")
        chosen = cls.scored(subject, id_, gold, logits).pred
        if pred != chosen:
            raise _BadSample(f"pred is {pred} but its logits choose {chosen} (the highest logit; ties to the earlier letter)")
        return cls(subject, id_, gold, pred, logits, correct)


class _BadSample(ValueError):
    pass


def _line(sample: Sample) -> str:
    return json.dumps(sample.to_json(), ensure_ascii=False) + "\n"


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
        samples, lines = {}, {}
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                s = Sample.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                why = f" ({e})" if isinstance(e, _BadSample) else ""
                raise RunError(f"{self.path} line {number}: not a sample record{why}") from None
            if s.key in samples:
                raise RunError(f"{self.path} line {number}: {s.subject} #{s.id} was scored already on line {lines[s.key]}; "
                               "a question is scored once")
            samples[s.key], lines[s.key] = s, number
        return samples

    def append(self, samples: Iterable[Sample]) -> None:
        text = "".join(_line(s) for s in samples)
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk: what was appended before is kept, a torn line is cut on resume
            raise RunError(f"cannot append to {self.path}: {e.strerror or e}; the questions scored so far are kept: "
                           "make room and run the same command again to resume") from None


def rank_sample_log(run_dir: Path, rank: int, world_size: int) -> SampleLog:
    """The file this worker appends to: SAMPLES for a single process, its own file otherwise."""
    name = SAMPLES if world_size == 1 else RANK_SAMPLES.format(rank=rank)
    return SampleLog(Path(run_dir) / name)


def read_all_samples(run_dir: Path) -> dict[tuple[str, int], Sample]:
    """Every scored question in a run directory, whichever worker (of any earlier run) wrote it."""
    run_dir = Path(run_dir)
    done: dict[tuple[str, int], Sample] = {}
    where: dict[tuple[str, int], Path] = {}
    for path in [run_dir / SAMPLES, *sorted(run_dir.glob(RANK_SAMPLES.format(rank="*")))]:
        for key, sample in SampleLog(path).load().items():
            if key in done and done[key] != sample:  # the same answer twice: a merge interrupted before it tidied up
                raise RunError(f"{path}: {key[0]} #{key[1]} was scored already, otherwise, in {where[key].name}; "
                               "a question is scored once")
            done.setdefault(key, sample)
            where.setdefault(key, path)
    return done


def write_samples(run_dir: Path, samples: list[Sample]) -> str:
    """Replace the run's sample files by one SAMPLES in the given (canonical) order, atomically;
    the sha256 of what was written."""
    run_dir = Path(run_dir)
    data = "".join(_line(s) for s in samples).encode("utf-8")
    write_atomic(run_dir / SAMPLES, data)
    for path in run_dir.glob(RANK_SAMPLES.format(rank="*")):
        path.unlink()
    return hashlib.sha256(data).hexdigest()


# --- scores ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """An accuracy over `n` questions with its 95% interval (fractions, not percent); `correct`
    and `n` are None for the macro average, which is no count."""

    correct: int | None
    n: int | None
    accuracy: float
    low: float
    high: float


@dataclass(frozen=True)
class Part:
    """A category or group of a run's subjects (`kind`: "category" or "group"): the subjects of
    the run in it, of `of` subjects the registry puts in it."""

    name: str
    title: str
    kind: str
    subjects: tuple[str, ...]
    of: int

    @property
    def complete(self) -> bool:
        return len(self.subjects) == self.of


PART_BLOCKS = {"category": "categories", "group": "groups"}  # results.json's block for each kind


@dataclass(frozen=True)
class Scores:
    """Per-subject accuracy, the micro and macro averages over the subjects, and the same two
    averages for each category and group of the run (`parts`: name -> (micro, macro))."""

    subjects: dict[str, Score]
    micro: Score
    macro: Score
    parts: dict[str, tuple[Score, Score]] = field(default_factory=dict)

    def parts_json(self, parts: Iterable[Part]) -> dict:
        """The `categories` and `groups` blocks (none for a run without parts)."""
        out: dict[str, dict] = {}
        for p in parts:
            micro, macro = self.parts[p.name]
            out.setdefault(PART_BLOCKS[p.kind], {})[p.name] = {
                "title": p.title, "subjects": list(p.subjects), "of": p.of,
                "n": micro.n, "correct": micro.correct, "micro": micro.accuracy, "micro_ci95": [micro.low, micro.high],
                "macro": macro.accuracy, "macro_ci95": [macro.low, macro.high],
            }
        return out

    def to_json(self) -> dict:
        return {
            "subjects": {k: {"n": s.n, "correct": s.correct, "accuracy": s.accuracy, "ci95": [s.low, s.high]}
                         for k, s in self.subjects.items()},
            "overall": {
                "n": self.micro.n,
                "correct": self.micro.correct,
                "micro": self.micro.accuracy,
                "micro_ci95": [self.micro.low, self.micro.high],
                "macro": self.macro.accuracy,
                "macro_ci95": [self.macro.low, self.macro.high],
            },
        }


def summarize(samples: Iterable[Sample], subject_keys: list[str], parts: Iterable[Part] = ()) -> Scores:
    """Per-subject and overall accuracy (micro and macro) with 95% intervals, and the same for
    each category and group in `parts`."""
    by_subject = {k: [0, 0] for k in subject_keys}
    for s in samples:
        by_subject[s.subject][0] += s.correct
        by_subject[s.subject][1] += 1
    subjects = {key: Score(k, n, k / n if n else 0.0, *wilson_interval(k, n)) for key, (k, n) in by_subject.items()}
    micro, macro = _averages([tuple(v) for v in by_subject.values()])
    return Scores(subjects, micro, macro, {p.name: _averages([tuple(by_subject[k]) for k in p.subjects]) for p in parts})


def _averages(counts: list[tuple[int, int]]) -> tuple[Score, Score]:
    """Micro (every question weighs the same) and macro (every subject does) accuracy of (correct, n) counts."""
    correct = sum(k for k, _ in counts)
    n = sum(n for _, n in counts)
    macro = sum(k / n_ for k, n_ in counts if n_) / max(1, sum(1 for _, n_ in counts if n_))
    micro = Score(correct, n, correct / n if n else 0.0, *wilson_interval(correct, n))
    return micro, Score(None, None, macro, *macro_interval(counts))


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelId:
    """Which weights were scored: two runs of the same ModelId differ only in their settings."""

    name: str
    revision: str | None
    adapter: str | None
    gguf_file: str | None
    dtype: str | None
    quantization: str | None  # the record's quantization block as canonical JSON


@dataclass(frozen=True)
class ModelInfo:
    """The record's `model` block. Three things kept apart: `name` is what the user passed to
    `--model` (what rows and headings show), `path` and `adapter` are what was loaded (a Hub id,
    or an absolute local directory: lineage reads them, so no output depends on the directory a
    command runs in), and `identity` is what runs are compared by."""

    name: str
    path: str | None = None
    revision: str | None = None
    gguf_file: str | None = None
    adapter: str | None = None
    tokenizer: str | None = None
    requested_dtype: str | None = None
    dtype: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    quantization: dict | None = None
    weights: str | None = None  # fingerprint of a local model's files (names, sizes, times)
    trust_remote_code: bool = False
    device: str | None = None
    # Anything else a writer adds (backend, training, training_step), kept as written.
    extra: dict = field(default_factory=dict)

    # What a resumed run must agree on (settings.json's `model`): `weights` changes when the files do.
    RESUME_FIELDS = ("name", "revision", "adapter", "gguf_file", "dtype", "weights")

    @property
    def identity(self) -> ModelId:
        q = json.dumps(self.quantization, sort_keys=True) if self.quantization else None
        return ModelId(self.name, self.revision, self.adapter, self.gguf_file, self.dtype, q)

    def resume_identity(self) -> dict:
        return {k: getattr(self, k) for k in self.RESUME_FIELDS}

    @property
    def backend(self) -> str:
        return self.extra.get("backend", "transformers")

    @property
    def bits(self) -> int | None:
        bits = (self.quantization or {}).get("bits")
        return bits if isinstance(bits, int) else None

    def short_name(self) -> str:
        """A Hub id as it is; a local path by its last component (the full name stays in the record)."""
        name = _last_component(self.name) if _looks_like_path(self.name) else self.name
        if self.adapter and _last_component(self.adapter) not in (_last_component(self.name), ""):
            name += f" + {_last_component(self.adapter)}"
        return name

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in _MODEL_FIELDS}
        return {**d, **{k: v for k, v in self.extra.items() if k not in d}}

    @classmethod
    def from_json(cls, d: dict) -> ModelInfo:
        if not isinstance(d.get("name"), str):
            raise ValueError("model needs a name")
        known = {k: d.get(k) for k in _MODEL_FIELDS if k in d}
        for key in ("path", "revision", "gguf_file", "adapter", "tokenizer", "requested_dtype", "dtype", "architecture",
                    "weights", "device"):
            if known.get(key) is not None and not isinstance(known[key], str):
                raise ValueError(f"model.{key} must be text")
        if known.get("quantization") is not None and not isinstance(known["quantization"], dict):
            raise ValueError("model.quantization must be an object")
        if not isinstance(known.get("parameters"), int) or isinstance(known.get("parameters"), bool):
            known["parameters"] = None
        known["trust_remote_code"] = bool(known.get("trust_remote_code"))
        return cls(**known, extra={k: v for k, v in d.items() if k not in _MODEL_FIELDS})


_MODEL_FIELDS = (
    "name", "path", "revision", "gguf_file", "adapter", "tokenizer", "requested_dtype", "dtype", "architecture",
    "parameters", "quantization", "weights", "trust_remote_code", "device",
)


def _looks_like_path(name: str) -> bool:
    # Not a filesystem check: a label must not depend on where the leaderboard is rendered.
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _last_component(path: str | None) -> str:
    return Path(str(path).rstrip("/\\")).name if path else ""


# --- the settings, and the one comparability rule --------------------------------------------


@dataclass(frozen=True)
class Difference:
    """The first thing two runs' settings disagree on: a field (dotted, as in the record) or a data split."""

    field: str
    ours: Any
    theirs: Any
    count: int = 1  # how many fields differ in all (resume's check counts them; the first is named)

    @property
    def is_data(self) -> bool:
        return self.field.startswith("task.data.")

    @property
    def split(self) -> str:
        return self.field.removeprefix("task.data.")


@dataclass(frozen=True)
class RunSettings:
    """What a run measured: the prompts (protocol, version, shots, chat format) on which questions
    (subjects, limit, normalization) of which data. Equal settings (content digests included) are
    what makes two accuracies comparable; `sources` (where the files were read) only matters for
    resuming into a run directory."""

    protocol: str
    version: str
    shots: int
    chat: str | None  # None: plain prompt; "chatml" / "tokenizer": one user turn
    subjects: tuple[str, ...]
    limit: int | None
    normalize: str
    # subject -> split -> content digest of its parsed cells; None while the data is not loaded yet
    # (`harness eval --gate-baseline` checks its baseline before reading the questions).
    content: tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...] | None = None
    group: str | None = field(default=GROUP, compare=False)  # the --group/--subjects names, as given
    sources: Mapping | None = field(default=None, compare=False, repr=False)  # subject -> split -> source
    # The categories and groups the run reports (none for a run inside the devops group).
    parts: tuple[Part, ...] = field(default=(), compare=False)
    tasks_file: Mapping | None = field(default=None, compare=False)  # a user's tasks file: path, sha256, group
    # Subjects of a selected group left out because the data directory has none of their files.
    missing: tuple[str, ...] = field(default=(), compare=False)

    # Checked in this order; a run's shots and chat format are what a leaderboard section spreads
    # over its columns and tables, the rest is what the section shares.
    COMPARED = ("protocol.name", "protocol.version", "protocol.shots", "protocol.chat",
                "task.normalize", "task.subjects", "task.limit")

    @classmethod
    def of(cls, protocol: str, version: str, shots: int, chat: str | None, subjects, limit: int | None,
           normalize: str, sources: Mapping | None = None) -> RunSettings:
        content = None
        if sources is not None:
            content = tuple(sorted((s, tuple(sorted((split, (src or {}).get("content_sha256")) for split, src in splits.items())))
                                   for s, splits in sources.items()))
        return cls(protocol, version, shots, chat, tuple(subjects), limit, normalize, content, sources=sources)

    def value(self, dotted: str) -> Any:
        return {
            "protocol.name": self.protocol, "protocol.version": self.version, "protocol.shots": self.shots,
            "protocol.chat": self.chat, "task.normalize": self.normalize, "task.subjects": list(self.subjects),
            "task.limit": self.limit,
        }[dotted]

    def comparison_difference(self, other: RunSettings) -> Difference | None:
        """Why two runs cannot be compared question by question or ranked together: the first
        setting that differs, then the first split whose content differs (a Hub copy and a local
        copy of the same questions agree). None: they can. Unknown data is not a difference."""
        for dotted in self.COMPARED:
            if self.value(dotted) != other.value(dotted):
                return Difference(dotted, self.value(dotted), other.value(dotted))
        if self.content is None or other.content is None:
            return None
        ours, theirs = _digests(self.content), _digests(other.content)
        for split in dict.fromkeys([*ours, *theirs]):
            if ours.get(split) != theirs.get(split):
                return Difference(f"task.data.{split}", ours.get(split), theirs.get(split))
        return None

    def resume_difference(self, recorded: Any, model: ModelInfo | None = None) -> Difference | None:
        """Why a run directory's `settings.json` (`recorded`) is not that of this run of `model`:
        the first field that differs, data sources included. Without `model` (before it loads),
        everything else is compared. A relative adapter path (recorded by an older harness) is the
        directory it named from here, as that harness took it."""
        if isinstance(recorded, dict) and isinstance(recorded.get("model"), dict):
            adapter = recorded["model"].get("adapter")
            if isinstance(adapter, str) and adapter and not Path(adapter).expanduser().is_absolute():
                recorded = {**recorded, "model": {**recorded["model"], "adapter": str(Path(adapter).expanduser().absolute())}}
        return _first_difference(recorded, self.settings_json(model.resume_identity() if model else None))

    @property
    def section(self) -> tuple:
        """What a leaderboard section's numbers share: everything but shots and the chat format."""
        return (self.protocol, self.version, self.subjects, self.limit, self.normalize, self.data_fingerprint)

    @property
    def data_fingerprint(self) -> str | None:
        """12 hex digits naming the questions' content (each split's parsed cells), wherever they were read."""
        if self.content is None:
            return None
        hashes = {subject: dict(splits) for subject, splits in self.content}
        return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def published_data(self) -> bool:
        """Every split's content is the published one (the model card's numbers were made on it)."""
        published = {s.key: s.content_sha256 for s in all_subjects()}
        return self.content is not None and all(
            published.get(subject, {}).get(split) == digest for subject, splits in self.content for split, digest in splits
        )

    @property
    def data_origin(self) -> str:
        """Where the questions were read: 'local' or 'hub'."""
        sources = [src for splits in (self.sources or {}).values() for src in splits.values()]
        return "hub" if any(isinstance(src, dict) and "hub" in src for src in sources) else "local"

    def describe(self) -> str:
        chat = f", chat ({self.chat})" if self.chat else ""
        return f"{self.protocol}/v{self.version}, {self.shots}-shot{chat}"

    def settings_json(self, model: dict | None = None) -> dict:
        """settings.json: what identifies a run. Without `model`, what a run directory can be
        checked against before the model is loaded."""
        return {
            "schema": SCHEMA,
            **({"model": model} if model is not None else {}),
            "protocol": {"name": self.protocol, "version": self.version, "shots": self.shots, "chat": self.chat},
            "task": self.task_json(),
        }

    def task_json(self) -> dict:
        extra = {}
        if self.tasks_file is not None:
            extra["tasks_file"] = dict(self.tasks_file)
        if self.missing:
            extra["missing"] = list(self.missing)
        return {"group": self.group, "subjects": list(self.subjects), "limit": self.limit, "normalize": self.normalize,
                **extra, "data": self.sources}


def with_selection(settings: RunSettings, selection: Mapping | None) -> RunSettings:
    """`settings` with how its subjects were chosen (`tasks.data.selection`): the group names, the
    tasks file, the subjects left out, and the categories and groups the record reports."""
    if not selection:
        return settings
    parts = tuple(Part(name, title, kind, tuple(subjects), of) for name, title, kind, subjects, of in selection["parts"])
    return replace(settings, group=selection["group"], parts=parts, tasks_file=selection.get("tasks_file"),
                   missing=tuple(selection.get("missing", ())))


def _digests(content) -> dict[str, str | None]:
    return {f"{subject}/{split}": digest for subject, splits in content for split, digest in splits}


def _first_difference(old, new) -> Difference | None:
    """The first leaf of `new` whose value `old` does not share (top level: the keys of `new` only;
    keys sorted, each split's data last, so a subject set that differs is named before its digests),
    with how many leaves differ in all."""
    diffs = list(_differences(old, new, ""))
    return replace(diffs[0], count=len(diffs)) if diffs else None


def _differences(old, new, path: str):
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(new) if not path else sorted(set(old) | set(new))
        for key in sorted(keys, key=lambda k: (path == "task" and k == "data", k)):
            yield from _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    elif old != new:
        yield Difference(path, old, new)


def show_setting(value: Any) -> str:
    """A setting's value as a message shows it (None as 'none', lists comma-joined)."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# --- the record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """`results.json`: what was scored, how, on what, with which result, and what reproduces it."""

    model: ModelInfo
    settings: RunSettings
    scores: Scores
    protocol_title: str | None = None
    continuations: tuple[str, ...] = ()
    aggregate: str | None = None
    data_source: dict = field(default_factory=dict)
    harness: dict = field(default_factory=dict)  # version, git_commit, git_dirty
    runtime: dict = field(default_factory=dict)  # device, backend, threads, batch settings, timings
    integrity: dict | None = None  # `seal`: digests of the record, its samples and its settings.json

    @property
    def timings(self) -> dict:
        t = self.runtime.get("timings")
        return t if isinstance(t, dict) else {}

    def to_json(self) -> dict:
        s = self.settings
        return {
            "schema": SCHEMA,
            "harness": self.harness,
            "model": self.model.to_json(),
            "protocol": {
                "name": s.protocol,
                "version": s.version,
                "title": self.protocol_title,
                "shots": s.shots,
                "chat": s.chat,
                "continuations": list(self.continuations),
                "aggregate": self.aggregate,
            },
            "task": {**s.task_json(), "data_source": self.data_source},
            "runtime": self.runtime,
            **self.scores.to_json(),
            **self.scores.parts_json(s.parts),
            **({INTEGRITY: self.integrity} if self.integrity is not None else {}),
        }

    @classmethod
    def from_json(cls, r: Any, where: Path) -> RunRecord:
        """A record read back; what this harness never writes is a RunError naming `where`."""
        if not isinstance(r, dict) or r.get("schema") != SCHEMA:
            raise RunError(f"{where} is not a run record of this harness (schema {SCHEMA})")
        for key in ("model", "protocol", "task", "subjects", "overall"):
            if not isinstance(r.get(key), dict):
                raise RunError(f"{where}: '{key}' is missing or not an object")
        p, t = r["protocol"], r["task"]
        if not (isinstance(p.get("name"), str) and isinstance(p.get("version"), str) and type(p.get("shots")) is int):
            raise RunError(f"{where}: protocol needs a name, a version (text) and shots (a whole number)")
        for where_, part in [*((f"subjects.{k}", v) for k, v in r["subjects"].items()), ("overall", r["overall"])]:
            if not isinstance(part, dict) or type(part.get("n")) is not int or type(part.get("correct")) is not int:
                raise RunError(f"{where}: {where_} needs whole numbers n and correct")
        if not isinstance(r["model"].get("name"), str):
            raise RunError(f"{where}: model needs a name")
        try:
            model = ModelInfo.from_json(r["model"])
            data = t["data"]
            if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                raise ValueError("task.data must map subjects to their splits")
            for subject, splits in data.items():
                for split, src in splits.items():
                    if not isinstance(src, dict) or not isinstance(src.get("content_sha256"), str):
                        raise ValueError(f"task.data.{subject}.{split} needs its content_sha256")
            chat, limit = p.get("chat") or None, t.get("limit")
            if chat is not None and not isinstance(chat, str):
                raise ValueError("protocol.chat must be text or null")
            if limit is not None and type(limit) is not int:
                raise ValueError("task.limit must be a whole number or null")
            continuations = p.get("continuations") or []
            if not isinstance(continuations, list) or not all(isinstance(c, str) for c in continuations):
                raise ValueError("protocol.continuations must be a list of texts")
            source = t.get("data_source") if isinstance(t.get("data_source"), dict) else {}
            if source.get("dir") is not None and not isinstance(source["dir"], str):
                raise ValueError("task.data_source.dir must be text")
            if not isinstance(t["subjects"], list):
                raise ValueError("task.subjects must be a list")
            settings = RunSettings.of(
                p["name"], p["version"], p["shots"], chat, [str(k) for k in t["subjects"]],
                limit, str(t.get("normalize") or "none"), data,
            )
            group = t.get("group", GROUP)
            if group is not None and not isinstance(group, str):
                raise ValueError("task.group must be text or null")
            tasks_file = t.get("tasks_file")
            if tasks_file is not None and not isinstance(tasks_file, dict):
                raise ValueError("task.tasks_file must be an object")
            missing = t.get("missing") or []
            if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
                raise ValueError("task.missing must be a list of subject keys")
            parts, part_scores = _read_parts(r, settings.subjects)
            settings = replace(settings, group=group, parts=parts, tasks_file=tasks_file, missing=tuple(missing))
            scores = Scores(
                {k: _score(r["subjects"][k], "accuracy", "ci95") for k in settings.subjects},
                _score(r["overall"], "micro", "micro_ci95"),
                Score(None, None, float(r["overall"]["macro"]), *map(float, r["overall"]["macro_ci95"])),
                part_scores,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RunError(f"{where} lacks a field the reports need ({_describe(e)}); is it from an older harness?") from None
        return cls(
            model=model,
            settings=settings,
            scores=scores,
            protocol_title=p.get("title") if isinstance(p.get("title"), str) else None,
            continuations=tuple(continuations),
            aggregate=p.get("aggregate") if isinstance(p.get("aggregate"), str) else None,
            data_source=source,
            harness=r.get("harness") if isinstance(r.get("harness"), dict) else {},
            runtime=r.get("runtime") if isinstance(r.get("runtime"), dict) else {},
            integrity=r[INTEGRITY] if isinstance(r.get(INTEGRITY), dict) else None,
        )


def _read_parts(r: dict, subjects: tuple[str, ...]) -> tuple[tuple[Part, ...], dict[str, tuple[Score, Score]]]:
    """The `categories` and `groups` blocks: each part's subjects must be subjects of the run."""
    parts, scores = [], {}
    for kind, block in PART_BLOCKS.items():
        entries = r.get(block, {})
        if not isinstance(entries, dict):
            raise ValueError(f"{block} must be an object")
        for name, d in entries.items():
            if not isinstance(d, dict) or not isinstance(d.get("subjects"), list) or not d["subjects"]:
                raise ValueError(f"{block}.{name} needs its subjects")
            stray = [k for k in d["subjects"] if k not in subjects]
            if stray or type(d.get("of")) is not int or d["of"] < len(d["subjects"]) or name in scores:
                raise ValueError(f"{block}.{name} lists subjects the run does not have" if stray else f"{block}.{name}: bad 'of'")
            if type(d.get("n")) is not int or type(d.get("correct")) is not int:
                raise ValueError(f"{block}.{name} needs whole numbers n and correct")
            parts.append(Part(str(name), str(d.get("title") or name), kind, tuple(d["subjects"]), d["of"]))
            scores[name] = (_score(d, "micro", "micro_ci95"),
                            Score(None, None, float(d["macro"]), *map(float, d["macro_ci95"])))
    return tuple(parts), scores


def _score(d: dict, key: str, ci_key: str) -> Score:
    low, high = (float(x) for x in d[ci_key])
    return Score(int(d["correct"]), int(d["n"]), float(d[key]), low, high)


def _describe(e: Exception) -> str:
    return f"missing {e.args[0]!r}" if isinstance(e, KeyError) else str(e)


# --- integrity: was the record changed after it was written? ----------------------------------
# Integrity, not authentication: the digests tell a reader that results.json, samples.jsonl or
# settings.json changed after `harness eval` wrote them (an edited shots value, a hand-"fixed"
# sample, a summary that no longer matches); anyone who rewrites a record on purpose can seal it
# again (`seal_run`), so they do not prove who wrote it.


def _canonical(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(record: RunRecord, samples_sha256: str, settings: dict) -> RunRecord:
    """`record` with its integrity block: the sha256 of its own content (every field but this
    block), of the samples file's bytes and of settings.json's content."""
    body = replace(record, integrity=None).to_json()
    return replace(record, integrity={
        "method": INTEGRITY_METHOD,
        "record_sha256": _sha256(_canonical(body)),
        "samples_sha256": samples_sha256,
        "settings_sha256": _sha256(_canonical(settings)),
    })


def seal_run(run_dir: str | Path) -> None:
    """Seal a run directory's record as it now is: for tools that rewrite a record on purpose."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / RESULTS).read_text(encoding="utf-8"))
    record = RunRecord.from_json(results, run_dir / RESULTS)
    settings = json.loads((run_dir / SETTINGS).read_text(encoding="utf-8")) if (run_dir / SETTINGS).is_file() else {}
    sealed = seal(record, _sha256((run_dir / SAMPLES).read_bytes()), settings).integrity
    if not (run_dir / SETTINGS).is_file():
        sealed = {k: v for k, v in sealed.items() if k != "settings_sha256"}
    write_json(run_dir / RESULTS, {**{k: v for k, v in results.items() if k != INTEGRITY}, INTEGRITY: sealed})


def _check_integrity(results: dict, path: Path) -> None:
    """The digests `seal` wrote must be those of what is in the directory now. A record without
    them (written before they were) is read as it is."""
    sealed = results.get(INTEGRITY)
    if sealed is None:
        return
    again = "; a record edited by hand is no run record: score the model again into a new --output"
    if not isinstance(sealed, dict) or sealed.get("method") != INTEGRITY_METHOD:
        raise RunError(f"{path / RESULTS}: its {INTEGRITY} block is not one this harness writes ({INTEGRITY_METHOD})")
    body = {k: v for k, v in results.items() if k != INTEGRITY}
    if sealed.get("record_sha256") != _sha256(_canonical(body)):
        raise RunError(f"{path / RESULTS} was changed after the run wrote it (its content no longer has the sha256 it records){again}")
    try:
        samples = (path / SAMPLES).read_bytes()
    except OSError as e:
        raise RunError(f"cannot read {path / SAMPLES}: {e.strerror or e}") from None
    if sealed.get("samples_sha256") != _sha256(samples):
        raise RunError(f"{path / SAMPLES} was changed after the run wrote it (not the sha256 {RESULTS} records){again}")
    settings_file = path / SETTINGS
    if "settings_sha256" in sealed and settings_file.is_file():
        try:
            settings = json.loads(settings_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{settings_file} is corrupt: {e}") from None
        if sealed["settings_sha256"] != _sha256(_canonical(settings)):
            raise RunError(f"{settings_file} was changed after the run wrote it (not the sha256 {RESULTS} records){again}")


# --- a finished run read back ----------------------------------------------------------------


@dataclass
class Run:
    """A finished run read back from its directory: its record and its samples (canonical order:
    the record's subjects, then row id)."""

    path: Path
    record: RunRecord
    samples: list[Sample]

    @property
    def results(self) -> dict:
        """The record as `results.json` holds it."""
        return self.record.to_json()

    @property
    def settings(self) -> RunSettings:
        return self.record.settings

    @property
    def model(self) -> ModelInfo:
        return self.record.model

    @property
    def shots(self) -> int:
        return self.settings.shots

    @property
    def protocol(self) -> str:
        return self.settings.protocol

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def chat(self) -> bool:
        return self.settings.chat is not None

    @property
    def subjects(self) -> dict[str, Score]:
        return self.record.scores.subjects

    @property
    def micro(self) -> Score:
        return self.record.scores.micro

    @property
    def macro(self) -> Score:
        return self.record.scores.macro

    @property
    def parameters(self) -> int | None:
        return self.model.parameters

    @property
    def published_data(self) -> bool:
        return self.settings.published_data

    def restricted(self, keys) -> Run:
        """This run seen on some of its subjects only (a gate part, a report on one group): its
        settings, samples and scores as if only those had been scored. Not a record on disk: unsealed."""
        keys = [k for k in self.settings.subjects if k in set(keys)]
        if keys == list(self.settings.subjects):
            return self
        s = self.settings
        sources = {k: v for k, v in (s.sources or {}).items() if k in keys}
        settings = replace(
            RunSettings.of(s.protocol, s.version, s.shots, s.chat, keys, s.limit, s.normalize, sources if s.sources is not None else None),
            group=s.group, tasks_file=s.tasks_file,
            parts=tuple(replace(p, subjects=inside) for p in s.parts if (inside := tuple(k for k in p.subjects if k in keys))),
        )
        samples = [x for x in self.samples if x.subject in set(keys)]
        record = replace(self.record, settings=settings, scores=summarize(samples, keys, settings.parts), integrity=None)
        return Run(self.path, record, samples)

    @cached_property
    def contamination(self) -> str | None:
        """Why the run's model is flagged (trained on data holding evaluated questions), or None."""
        from harness.lineage import contamination_flag

        return contamination_flag(self.model)


def restrict_run(run: Run, names: list[str] | None, registry) -> Run:
    """`run` on the subjects `names` picks (subject keys of the run, or group names of `registry`);
    the run itself for None. A name that is neither, or a choice holding none of its subjects, is a RunError."""
    if not names:
        return run
    keys: set[str] = set()
    for name in names:
        if name in run.settings.subjects:
            keys.add(name)
        elif name in registry.groups:
            keys.update(registry.groups[name].subjects)
        else:
            raise RunError(f"{name!r} is neither a subject of {run.path} nor a group")
    inside = [k for k in run.settings.subjects if k in keys]
    if not inside:
        raise RunError(f"{run.path} has none of the subjects of {', '.join(names)}")
    return run.restricted(inside)


def load_run(path: str | Path) -> Run:
    """Read a finished run; a directory that is not one, or a corrupt one, is a RunError."""
    path = Path(path)
    results_file = path / RESULTS
    if not path.is_dir():
        raise RunError(f"no such run directory: {path}")
    if not results_file.is_file():
        inner = sorted(p.name for p in path.iterdir() if (p / RESULTS).is_file())
        if inner:  # `harness eval --shots 0 --shots 5 --output DIR` makes DIR/shots-0, DIR/shots-5
            raise RunError(f"{path} holds runs ({', '.join(inner)}), it is not one; pass one of them")
        hint = " (unfinished: re-run the same command to resume it)" if (path / SAMPLES).is_file() else ""
        raise RunError(f"{path} is not a finished run: no {RESULTS}{hint}")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{results_file} is corrupt: {e}") from None
    record = RunRecord.from_json(results, results_file)
    samples = list(SampleLog(path / SAMPLES).load().values())
    _check_counts(record, samples, path)
    _check_integrity(results, path)
    order = {key: i for i, key in enumerate(record.settings.subjects)}
    samples.sort(key=lambda s: (order[s.subject], s.id))
    return Run(path, record, samples)


def _check_counts(record: RunRecord, samples: list[Sample], path: Path) -> None:
    """results.json must say what its samples say: readers use one or the other. The intervals are
    checked on sealed records only: an older harness computed the macro one by another formula."""
    intervals = record.integrity is not None
    subjects = list(record.settings.subjects)
    stray = sorted({s.subject for s in samples} - set(subjects))
    if stray:
        raise RunError(f"{path}: {SAMPLES} has questions of {', '.join(stray)}, which {RESULTS} does not list")
    parts = record.settings.parts
    counted = summarize(samples, subjects, parts)
    theirs = record.scores
    for where, ours_, theirs_ in [
        *((f"subjects.{k}", counted.subjects[k], theirs.subjects[k]) for k in subjects),
        ("overall", counted.micro, theirs.micro),
        *((f"{PART_BLOCKS[p.kind]}.{p.name}", counted.parts[p.name][0], theirs.parts[p.name][0]) for p in parts),
    ]:
        for name in ("n", "correct"):
            if getattr(ours_, name) != getattr(theirs_, name):
                raise RunError(f"{path}: {RESULTS} {where}.{name} is {getattr(theirs_, name)} but {SAMPLES} gives {getattr(ours_, name)}")
        score = "accuracy" if where.startswith("subjects.") else "micro"
        if abs(theirs_.accuracy - ours_.accuracy) > 1e-9:
            raise RunError(f"{path}: {RESULTS} {where}.{score} is {theirs_.accuracy!r} but {SAMPLES} gives {ours_.accuracy:.6f}")
        interval = "ci95" if where.startswith("subjects.") else "micro_ci95"
        if intervals and max(abs(theirs_.low - ours_.low), abs(theirs_.high - ours_.high)) > 1e-9:
            raise RunError(f"{path}: {RESULTS} {where}.{interval} is [{theirs_.low!r}, {theirs_.high!r}] but {SAMPLES} gives "
                           f"[{ours_.low:.6f}, {ours_.high:.6f}]")
    for where, ours_, theirs_ in [
        ("overall", counted.macro, theirs.macro),
        *((f"{PART_BLOCKS[p.kind]}.{p.name}", counted.parts[p.name][1], theirs.parts[p.name][1]) for p in parts),
    ]:
        if abs(theirs_.accuracy - ours_.accuracy) > 1e-9:
            raise RunError(f"{path}: {RESULTS} {where}.macro is {theirs_.accuracy!r} but {SAMPLES} gives {ours_.accuracy:.6f}")
        if intervals and max(abs(theirs_.low - ours_.low), abs(theirs_.high - ours_.high)) > 1e-9:
            raise RunError(f"{path}: {RESULTS} {where}.macro_ci95 is [{theirs_.low!r}, {theirs_.high!r}] but {SAMPLES} gives "
                           f"[{ours_.low:.6f}, {ours_.high:.6f}]")


# --- comparing two runs question by question ---------------------------------------------------


class IncompatibleRuns(RunError):
    """Two runs that cannot be compared question by question (other protocol, shots, data...)."""


def check_comparable(a: Run, b: Run, labels: tuple[str, str] = ("the baseline", "the candidate")) -> None:
    """Raise IncompatibleRuns naming the first setting, data split or question that differs."""
    la, lb = labels
    where = f"cannot compare {b.path} with {a.path}"
    diff = a.settings.comparison_difference(b.settings)
    if diff and diff.is_data:
        raise IncompatibleRuns(
            f"{where}: they were scored on different data: the content of {diff.split} is "
            f"{show_setting(diff.ours)[:12]} in {la}, {show_setting(diff.theirs)[:12]} in {lb}"
        )
    if diff:
        raise IncompatibleRuns(f"{where}: {diff.field} differs ({show_setting(diff.ours)} in {la}, {show_setting(diff.theirs)} in {lb})")
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
