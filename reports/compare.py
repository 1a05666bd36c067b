"""Two runs on the same questions, question by question: what changed and is it more than noise.

Only runs made with the same prompts on the same questions and data are compared; anything else
is refused with the first difference named. Differences are paired: the exact McNemar test on
the questions one run got right and the other wrong (`reports.paired`, as the gate pairs them).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.records import Run, Score
from reports.markdown import Raw, environment, md_url
from reports.output import png_bytes, pyplot
from reports.paired import Comparison as PairedComparison
from reports.paired import pair_runs
from tasks.registry import subject_title


@dataclass(frozen=True)
class Flip:
    """A question answered correctly by one run and wrongly by the other."""

    subject: str
    id: int
    gold: str
    pred_a: str
    p_a: float  # probability of run A's chosen letter
    pred_b: str
    p_b: float


@dataclass(frozen=True)
class Difference:
    """One subject (or the whole set): both scores and the paired test."""

    subject: str
    n: int
    a: Score
    b: Score
    right_to_wrong: int  # right in A, wrong in B
    wrong_to_right: int
    p_value: float

    @property
    def delta(self) -> float:
        """B minus A, in accuracy (fraction)."""
        return self.b.accuracy - self.a.accuracy


@dataclass
class Comparison:
    a: Run
    b: Run
    overall: Difference
    subjects: list[Difference]
    same_prediction: int
    right_to_wrong: list[Flip]
    wrong_to_right: list[Flip]


def compare(a: Run, b: Run) -> Comparison:
    """Per-subject differences and flipped questions; IncompatibleRuns for runs that differ in
    protocol, shots, chat format, question set or data."""
    paired = pair_runs(a, b, labels=("RUN_A", "RUN_B"))
    flips_rw, flips_wr = [], []
    for sa, sb in paired.pairs:
        if sa.correct != sb.correct:
            flip = Flip(sa.subject, sa.id, sa.gold, sa.pred, sa.probability(sa.pred), sb.pred, sb.probability(sb.pred))
            (flips_rw if sa.correct else flips_wr).append(flip)
    by_name = {c.name: c for c in paired.subjects}
    subjects = [_difference(by_name[key], a.subjects[key], b.subjects[key]) for key in a.settings.subjects if key in by_name]
    overall = _difference(paired.overall, a.micro, b.micro)
    return Comparison(a, b, overall, subjects, paired.same_prediction(), flips_rw, flips_wr)


def _difference(c: PairedComparison, a: Score, b: Score) -> Difference:
    # The plain per-subject p-value: a report to read, not a decision over six tests (the gate's Holm).
    return Difference(c.name, c.n, a, b, c.right_to_wrong, c.wrong_to_right, c.p_value)


def labels(c: Comparison) -> tuple[str, str]:
    """Short names for A and B; the same model twice is told apart by its run directory."""
    la, lb = c.a.model.short_name(), c.b.model.short_name()
    if la == lb:
        la, lb = f"{la} ({c.a.path.name})", f"{lb} ({c.b.path.name})"
    return la, lb


def render_comparison(c: Comparison, image: str | None) -> str:
    """The Markdown comparison; `image` is the per-subject chart's relative path (None: no chart)."""
    la, lb = labels(c)
    return environment("reports").get_template("compare.md.j2").render(
        c=c,
        label_a=la,
        label_b=lb,
        image=md_url(image) if image else None,
        pct=lambda x: Raw(f"{100 * x:.2f}"),
        delta=lambda x: Raw(f"{100 * x:+.2f}"),
        interval=lambda s: Raw(f"[{100 * s.low:.1f}, {100 * s.high:.1f}]"),
        pvalue=lambda p: Raw(f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"),
        prob=lambda x: Raw(f"{x:.3f}"),
        subject_title=subject_title,
    )


def plot_comparison(c: Comparison) -> bytes:
    """Per-subject and overall accuracy of A and B side by side, with their 95% intervals."""
    plt = pyplot()
    la, lb = labels(c)
    rows = c.subjects + [c.overall]
    names = [subject_title(d.subject) if d.subject != "overall" else "overall (micro)" for d in rows]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    xs = range(len(rows))
    for offset, side, label, colour in ((-0.2, "a", la, "#9ecae1"), (0.2, "b", lb, "#08519c")):
        scores = [getattr(d, side) for d in rows]
        ax.bar([x + offset for x in xs], [100 * s.accuracy for s in scores], width=0.4, color=colour,
               edgecolor="black", linewidth=0.5, label=" ".join(f"{side.upper()}: {label}".split()).replace("$", r"\$"))
        ax.errorbar([x + offset for x in xs], [100 * s.accuracy for s in scores],
                    yerr=[[100 * (s.accuracy - s.low) for s in scores], [100 * (s.high - s.accuracy) for s in scores]],
                    fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    for x, d in zip(xs, rows):
        top = 100 * max(d.a.high, d.b.high)
        ax.annotate(f"{100 * d.delta:+.1f}\np={d.p_value:.2g}", (x, top), textcoords="offset points", xytext=(0, 3),
                    ha="center", fontsize=7)
    ax.axhline(25, color="#999999", linewidth=0.6, linestyle=":")  # chance with four options
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 115)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{c.a.settings.describe()}: B − A per subject (exact McNemar p)", fontsize=9)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return png_bytes(fig)
