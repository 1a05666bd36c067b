"""What the leaderboard and the reports need to know about a run, read from its record once.

A `Run` (from `harness.records.load_run`) is a parsed `results.json` and its samples; `facts`
checks the fields these areas use and turns them into typed values, so a record that lacks one
is one clear error, not a KeyError somewhere in a template.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import RunError
from harness.records import Run, Sample, load_run


@dataclass(frozen=True)
class Setting:
    """Everything that must be equal for two accuracies to be compared or ranked together."""

    protocol: str
    version: str
    chat: str | None  # None: plain prompt; "chatml" / "tokenizer": one user turn
    shots: int
    subjects: tuple[str, ...]
    limit: int | None
    normalize: str
    data: str  # fingerprint of the questions' content digests (see `data_fingerprint`)

    @property
    def board(self) -> tuple:
        """The part a leaderboard section shares: the same questions, prompts and data."""
        return (self.protocol, self.version, self.subjects, self.limit, self.normalize, self.data)

    def describe(self) -> str:
        chat = f", chat ({self.chat})" if self.chat else ""
        return f"{self.protocol}/v{self.version}, {self.shots}-shot{chat}"


@dataclass(frozen=True)
class ModelId:
    """Which weights were scored: two runs of the same ModelId differ only in their setting."""

    name: str
    revision: str | None
    adapter: str | None
    gguf_file: str | None
    dtype: str | None
    quantization: str | None  # the record's quantization dict as canonical JSON

    @property
    def quant(self) -> dict:
        return json.loads(self.quantization) if self.quantization else {}

    @property
    def bits(self) -> int | None:
        bits = self.quant.get("bits")
        return bits if isinstance(bits, int) else None

    def short_name(self) -> str:
        """A Hub id as it is; a local path by its last component (the full name stays in the record)."""
        name = _last_component(self.name) if _looks_like_path(self.name) else self.name
        if self.adapter and _last_component(self.adapter) not in (_last_component(self.name), ""):
            name += f" + {_last_component(self.adapter)}"
        return name


@dataclass(frozen=True)
class Score:
    """An accuracy over `n` questions with its 95% interval (fractions, not percent)."""

    correct: int | None
    n: int | None
    accuracy: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class RunFacts:
    """A finished run as the leaderboard and reports see it."""

    run: Run
    model: ModelId
    setting: Setting
    parameters: int | None
    subjects: dict[str, Score]  # in the run's subject order
    micro: Score
    macro: Score
    published_data: bool  # every split's content is the published one
    contamination: str | None = None  # harness.lineage.contamination_flag of the model

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def chat(self) -> bool:
        return self.setting.chat is not None

    def samples(self) -> list[Sample]:
        """The samples in canonical order: subjects as in the record, then row id."""
        order = {key: i for i, key in enumerate(self.setting.subjects)}
        return sorted(self.run.samples, key=lambda s: (order.get(s.subject, len(order)), s.subject, s.id))


def read_facts(path: str | Path) -> RunFacts:
    """`load_run` plus the checks and typing of `facts`."""
    path = Path(path)
    if path.is_dir() and not (path / "results.json").exists():
        inner = sorted(p.name for p in path.iterdir() if (p / "results.json").is_file())
        if inner:  # `harness eval --shots 0 --shots 5 --output DIR` makes DIR/shots-0, DIR/shots-5
            raise RunError(f"{path} holds runs ({', '.join(inner)}), it is not one; pass one of them")
    return facts(load_run(path))


def facts(run: Run) -> RunFacts:
    r = run.results
    where = run.path / "results.json"
    try:
        m, p, t, o = r["model"], r["protocol"], r["task"], r["overall"]
        setting = Setting(
            protocol=str(p["name"]),
            version=str(p["version"]),
            chat=p.get("chat") or None,
            shots=int(p["shots"]),
            subjects=tuple(str(k) for k in t["subjects"]),
            limit=t.get("limit"),
            normalize=str(t.get("normalize") or "none"),
            data=data_fingerprint(t["data"]),
        )
        quant = m.get("quantization")
        model = ModelId(
            name=str(m["name"]),
            revision=m.get("revision"),
            adapter=m.get("adapter"),
            gguf_file=m.get("gguf_file"),
            dtype=m.get("dtype"),
            quantization=json.dumps(quant, sort_keys=True) if quant else None,
        )
        subjects = {k: _score(r["subjects"][k], "accuracy", "ci95") for k in setting.subjects}
        micro = _score(o, "micro", "micro_ci95")
        macro = Score(None, None, float(o["macro"]), *map(float, o["macro_ci95"]))
        published = is_published(t["data"])
        parameters = m.get("parameters")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"{where} lacks a field the reports need ({_describe(e)}); is it from an older harness?") from None
    _check_samples(run, setting)
    from harness.lineage import contamination_flag

    return RunFacts(run, model, setting, parameters if isinstance(parameters, int) else None,
                    subjects, micro, macro, published, contamination_flag(r))


def _score(d: dict, key: str, ci_key: str) -> Score:
    low, high = (float(x) for x in d[ci_key])
    return Score(int(d["correct"]), int(d["n"]), float(d[key]), low, high)


def _describe(e: Exception) -> str:
    return f"missing {e.args[0]!r}" if isinstance(e, KeyError) else str(e)


def _check_samples(run: Run, setting: Setting) -> None:
    # load_run has checked each sample's letters and logits; here, that it belongs to the run's subjects.
    for s in run.samples:
        if s.subject not in setting.subjects:
            raise RunError(f"{run.path / 'samples.jsonl'}: question {s.subject} {s.id} is not a sample of this run")


def data_fingerprint(data: dict) -> str:
    """12 hex digits naming the questions' content (each split's parsed cells), wherever they were read."""
    hashes = {subject: {split: src["content_sha256"] for split, src in splits.items()} for subject, splits in data.items()}
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:12]


def data_origin(run: Run) -> str:
    """Where the questions were read: 'local' or 'hub' (from the record's sources)."""
    sources = [src for splits in run.results["task"]["data"].values() for src in splits.values()]
    return "hub" if any("hub" in src for src in sources) else "local"


def is_published(data: dict) -> bool:
    from tasks import all_subjects

    published = {s.key: s.content_sha256 for s in all_subjects()}
    return all(
        published.get(subject, {}).get(split) == src["content_sha256"]
        for subject, splits in data.items()
        for split, src in splits.items()
    )


def subject_title(key: str) -> str:
    """A subject's English name from the task registry; the key itself if the registry lacks it."""
    from tasks import all_subjects

    return next((s.name_en for s in all_subjects() if s.key == key), key)


def probabilities(sample: Sample) -> np.ndarray:
    """Softmax of the four stored letter logits (float64)."""
    x = np.asarray(sample.logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def _looks_like_path(name: str) -> bool:
    # Not a filesystem check: a label must not depend on where the leaderboard is rendered.
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _last_component(path: str | None) -> str:
    return Path(str(path).rstrip("/\\")).name if path else ""
