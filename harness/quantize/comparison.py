"""An original model's run beside its quantized checkpoint's run on the same questions.

Accuracy changes are paired (`reports.paired`, as the gate pairs runs: exact McNemar on the
questions one got right and the other wrong; per subject Holm-adjusted); agreement is how often both chose the same letter,
right or wrong. Load time and questions/s come from the two run records, sizes from the disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from harness.models import WEIGHT_FILES
from harness.records import Run
from reports.paired import Comparison, pair_runs

SCHEMA = "devops-eval/quantization-cost/1"


@dataclass(frozen=True)
class ModelCost:
    """One side: which model and run, and what it costs to keep and to run."""

    name: str
    run: str
    weights_bytes: int | None  # None where the weights are not in a local directory
    load_seconds: float | None
    questions_per_second: float | None  # None when the run resumed with nothing left to score


@dataclass(frozen=True)
class QuantizationCost:
    """Original vs quantized at one setting: paired accuracy change, agreement, size and speed."""

    quantization: str  # "gptq 4-bit, group size 128"
    protocol: str  # name/vVERSION
    shots: int
    original: ModelCost
    quantized: ModelCost
    overall: Comparison  # baseline = original, candidate = quantized
    subjects: tuple[Comparison, ...]  # p_adjusted: Holm over the subjects
    same_prediction: int
    same_prediction_by_subject: dict[str, int]

    @property
    def agreement(self) -> float:
        return self.same_prediction / self.overall.n if self.overall.n else 0.0

    def record(self) -> dict:
        return {"schema": SCHEMA, **asdict(self), "agreement": self.agreement}


def weights_bytes(directory: str | Path) -> int | None:
    """Bytes of the weight files directly in a checkpoint directory; None if it is not a local directory."""
    path = Path(directory)
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.name.endswith(WEIGHT_FILES))


def model_cost(run: Run, weights: int | None) -> ModelCost:
    timings = run.record.timings
    return ModelCost(
        name=run.model_name,
        run=str(run.path),
        weights_bytes=weights,
        load_seconds=timings.get("load_seconds"),
        questions_per_second=timings.get("questions_per_second"),
    )


def quantization_cost(original: Run, quantized: Run, quantization: str, sizes: tuple[int | None, int | None]) -> QuantizationCost:
    """Compare the runs question by question; IncompatibleRuns if their settings or questions differ."""
    paired = pair_runs(original, quantized)
    s = original.settings
    return QuantizationCost(
        quantization=quantization,
        protocol=f"{s.protocol}/v{s.version}",
        shots=s.shots,
        original=model_cost(original, sizes[0]),
        quantized=model_cost(quantized, sizes[1]),
        overall=paired.overall,
        subjects=paired.subjects,
        same_prediction=paired.same_prediction(),
        same_prediction_by_subject={c.name: paired.same_prediction(c.name) for c in paired.subjects},
    )


# --- Markdown ----------------------------------------------------------------------------------


def render_markdown(costs: list[QuantizationCost]) -> str:
    return "\n".join(_render_one(c) for c in costs)


def _render_one(c: QuantizationCost) -> str:
    o, q, d = c.original, c.quantized, c.overall
    change = d.candidate_score - d.baseline_score
    lines = [
        f"## {o.name} → {c.quantization}: {c.protocol}, {c.shots}-shot, {d.n} questions",
        "",
        f"Original run `{o.run}`; quantized run `{q.run}`.",
        "",
        f"| | original | {_cell(c.quantization)} | change |",
        "|:--|--:|--:|:--|",
        f"| accuracy, micro (95% CI) | {_score(d.baseline_score, d.baseline_ci95)} | {_score(d.candidate_score, d.candidate_ci95)} "
        f"| {change:+.2f} points, exact McNemar p = {_p(d.p_value)} ({d.right_to_wrong} right→wrong, {d.wrong_to_right} wrong→right) |",
        f"| same prediction | | | {c.same_prediction} of {d.n} ({100 * c.agreement:.2f}%) |",
        f"| weights on disk | {format_bytes(o.weights_bytes)} | {format_bytes(q.weights_bytes)} | {_ratio(q.weights_bytes, o.weights_bytes)} |",
        f"| load time | {_seconds(o.load_seconds)} | {_seconds(q.load_seconds)} | {_ratio(q.load_seconds, o.load_seconds)} |",
        f"| questions/s | {_rate(o.questions_per_second)} | {_rate(q.questions_per_second)} | {_ratio(q.questions_per_second, o.questions_per_second)} |",
        "",
        "| subject | n | original | quantized | change (points) | right→wrong | wrong→right | p (Holm) | same prediction |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in c.subjects:
        same = c.same_prediction_by_subject[s.name]
        lines.append(
            f"| {s.name} | {s.n} | {s.baseline_score:.2f} | {s.candidate_score:.2f} | {s.candidate_score - s.baseline_score:+.2f} "
            f"| {s.right_to_wrong} | {s.wrong_to_right} | {_p(s.p_adjusted)} | {same} ({100 * same / s.n:.1f}%) |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _score(points: float, ci: tuple[float, float]) -> str:
    return f"{points:.2f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _p(p: float) -> str:
    return f"{p:.3g}"


def format_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _seconds(s: float | None) -> str:
    return "—" if s is None else f"{s:.2f} s"


def _rate(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}"


def _ratio(new: float | None, old: float | None) -> str:
    return "—" if not new or not old else f"×{new / old:.2f}"
