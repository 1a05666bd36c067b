"""Two runs on the same questions, paired: the one comparison the gate, `harness compare` and the
quantization cost are all made of.

Every question is a pair (right in the baseline?, right in the candidate?). Only the discordant
pairs carry evidence: b = right→wrong, c = wrong→right, and the drop is (b − c)/n. The exact
McNemar test is the two-sided binomial test of b among b + c at 1/2; per subject, its p-values are
Holm-adjusted over the subjects, so that six small tests do not trip on noise more often than one
would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from harness.records import Run, Sample, check_comparable
from harness.stats import holm_adjust, mcnemar_exact, wilson_interval


@dataclass(frozen=True)
class Comparison:
    """Baseline and candidate on the same questions (all of them, or one subject's); scores in points."""

    name: str
    n: int
    baseline_correct: int
    candidate_correct: int
    right_to_wrong: int
    wrong_to_right: int
    p_value: float  # exact two-sided McNemar on the discordant pairs
    p_adjusted: float  # Holm over the subjects; equal to p_value for the overall comparison
    baseline_score: float
    candidate_score: float
    baseline_ci95: tuple[float, float]  # Wilson
    candidate_ci95: tuple[float, float]
    drop: float  # baseline − candidate; negative is a gain


def compare(name: str, pairs: Sequence[tuple[bool, bool]]) -> Comparison:
    """Paired outcomes (baseline right?, candidate right?) → scores, discordant counts, McNemar p."""
    n = len(pairs)
    base = sum(a for a, _ in pairs)
    cand = sum(b for _, b in pairs)
    right_to_wrong = sum(1 for a, b in pairs if a and not b)
    wrong_to_right = sum(1 for a, b in pairs if b and not a)
    p = mcnemar_exact(right_to_wrong, wrong_to_right)

    def points(k: int) -> float:
        return 100 * k / n if n else 0.0

    def interval(k: int) -> tuple[float, float]:
        lo, hi = wilson_interval(k, n)
        return (100 * lo, 100 * hi)

    return Comparison(
        name=name,
        n=n,
        baseline_correct=base,
        candidate_correct=cand,
        right_to_wrong=right_to_wrong,
        wrong_to_right=wrong_to_right,
        p_value=p,
        p_adjusted=p,
        baseline_score=points(base),
        candidate_score=points(cand),
        baseline_ci95=interval(base),
        candidate_ci95=interval(cand),
        drop=100 * (right_to_wrong - wrong_to_right) / n if n else 0.0,
    )


@dataclass(frozen=True)
class PairedRuns:
    """Two comparable runs question by question: overall, per subject (Holm-adjusted), and the
    sample pairs themselves in the baseline's canonical order."""

    overall: Comparison
    subjects: tuple[Comparison, ...]
    pairs: tuple[tuple[Sample, Sample], ...]

    def same_prediction(self, subject: str | None = None) -> int:
        """How many questions (of one subject, or all) both runs answered with the same letter."""
        return sum(a.pred == b.pred for a, b in self.pairs if subject is None or a.subject == subject)


def pair_runs(baseline: Run, candidate: Run, labels: tuple[str, str] = ("the baseline", "the candidate")) -> PairedRuns:
    """Pair two runs' samples; IncompatibleRuns if they cannot be compared (other settings, data or questions)."""
    check_comparable(baseline, candidate, labels)
    theirs = {s.key: s for s in candidate.samples}
    pairs = tuple((s, theirs[s.key]) for s in baseline.samples)
    by_subject: dict[str, list[tuple[bool, bool]]] = {key: [] for key in baseline.settings.subjects}
    for a, b in pairs:
        by_subject[a.subject].append((a.correct, b.correct))
    overall = compare("overall", [(a.correct, b.correct) for a, b in pairs])
    raw = [compare(key, outcomes) for key, outcomes in by_subject.items() if outcomes]
    subjects = tuple(replace(c, p_adjusted=p) for c, p in zip(raw, holm_adjust([c.p_value for c in raw])))
    return PairedRuns(overall, subjects, pairs)
