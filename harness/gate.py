"""The CI regression gate: is a candidate run genuinely worse than a baseline on the same questions?

Pure: two finished runs and thresholds in, a `Verdict` out, and its renderings (Markdown, JUnit
XML, a JSON record). `harness.gating` reads runs, writes files and gives the exit code.

The rule, on the paired comparison of `reports.paired`: a regression is a drop larger than
`max_drop` points that the exact McNemar test finds significant at `alpha`. Subjects get the same
rule with `subject_max_drop`, their p-values Holm-adjusted over the subjects. Floors (`--min-score`, a published reference
row) compare the candidate's score with a number; they have no paired data to test.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from harness.records import Run
from reports.markdown import md_code, md_escape
from reports.paired import Comparison, pair_runs
from tasks import GENERAL

SCHEMA = "devops-eval/gate/1"
PASS, REGRESSION = 0, 1

@dataclass(frozen=True)
class Thresholds:
    """What counts as a regression; points are percentage points of micro accuracy."""

    max_drop: float = 1.0
    # One point overall is ~6 of 574 questions; five points is ~10 of computer_science's 204 and
    # one question of the 19-21-question subjects, where the Holm-adjusted test is what guards.
    subject_max_drop: float = 5.0
    alpha: float = 0.05


@dataclass(frozen=True)
class Floor:
    """A score the candidate must reach, in points: `--min-score` or a published reference row."""

    name: str  # the test case: "min-score", "min-reference Qwen-7B-Base"
    label: str  # what the number is, in a sentence: "--min-score", "Qwen-7B-Base's reported 5-shot score"
    points: float


@dataclass(frozen=True)
class Check:
    """One rule applied to one thing (a JUnit test case): whether it failed, and why, with the numbers."""

    name: str  # "overall", a subject key, "min-score", "min-reference"
    rule: str  # "max-drop", "subject-max-drop", "floor"
    failed: bool
    reason: str


@dataclass(frozen=True)
class RunInfo:
    """Which run a side of the comparison is."""

    path: str
    model: str
    contamination: str | None = None  # `Run.contamination`: shown, never decides


@dataclass(frozen=True)
class Verdict:
    """The gate's decision for one baseline/candidate pair, with everything it was decided on."""

    baseline: RunInfo
    candidate: RunInfo
    protocol: str  # name/vVERSION
    shots: int
    chat: str | None
    thresholds: Thresholds
    overall: Comparison
    subjects: tuple[Comparison, ...]
    floors: tuple[Floor, ...]
    checks: tuple[Check, ...]
    passed: bool
    decided_by: tuple[str, ...]
    # Which part of the runs' subjects this verdict judges: "devops" or "general" when the runs
    # hold general subjects (each part has its own thresholds), None otherwise.
    part: str | None = None

    @property
    def setting(self) -> str:
        part = f" · {self.part} ({len(self.subjects)} subjects)" if self.part else ""
        return f"{self.protocol}, {self.shots}-shot" + (f", chat ({self.chat})" if self.chat else "") + part

    def worst_subjects(self, k: int = 3) -> list[Comparison]:
        """The subjects that dropped most, worst first (gains and ties left out)."""
        return sorted((s for s in self.subjects if s.drop > 0), key=lambda s: (-s.drop, s.p_adjusted))[:k]


# --- the decision ----------------------------------------------------------------------------


def fmt_p(p: float) -> str:
    return f"{p:.3g}"


def _change(drop: float) -> str:
    if drop > 0:
        return f"drop {drop:.2f} points"
    return f"gain {-drop:.2f} points" if drop < 0 else "no change"


def _drop_check(c: Comparison, rule: str, max_drop: float, alpha: float, p: float, p_label: str) -> Check:
    """The drop rule: fail on a drop beyond `max_drop` points that is significant at `alpha`."""
    counts = f"{c.right_to_wrong} right→wrong, {c.wrong_to_right} wrong→right"
    test = f"{p_label} = {fmt_p(p)}"
    if c.drop <= max_drop:
        return Check(c.name, rule, False, f"{c.name} {_change(c.drop)}, within {rule} {max_drop:.2f} ({counts}; {test})")
    beyond = f"{c.name} drop {c.drop:.2f} points > {rule} {max_drop:.2f}"
    if p < alpha:
        return Check(c.name, rule, True, f"{beyond} and significant: {test} < {alpha:g} ({counts})")
    return Check(c.name, rule, False, f"{beyond} but not significant: {test} ≥ {alpha:g} ({counts})")


def _floor_check(floor: Floor, overall: Comparison) -> Check:
    # Exact counts beside the score: a rounded score can print equal to the floor it misses.
    score = overall.candidate_score
    shown = f"candidate {score:.3f} ({overall.candidate_correct}/{overall.n})"
    if score < floor.points:
        return Check(floor.name, "floor", True, f"{shown} is below {floor.label} {floor.points:.2f}")
    return Check(floor.name, "floor", False, f"{shown} reaches {floor.label} {floor.points:.2f}")


def decide(baseline: Run, candidate: Run, thresholds: Thresholds = Thresholds(), floors: Sequence[Floor] = (),
           part: str | None = None) -> Verdict:
    """Compare two runs question by question and apply the rules; IncompatibleRuns if they can't be.
    `part` names the part of the subjects judged (its rules are then `--<part>-max-drop`... for
    the general part)."""
    paired = pair_runs(baseline, candidate)
    overall, subjects = paired.overall, paired.subjects

    t = thresholds
    prefix = "general-" if part == GENERAL else ""
    holm = f"Holm p ({len(subjects)} subjects)"
    checks = (
        _drop_check(overall, f"{prefix}max-drop", t.max_drop, t.alpha, overall.p_value, "exact McNemar p"),
        *(_drop_check(s, f"{prefix}subject-max-drop", t.subject_max_drop, t.alpha, s.p_adjusted, holm) for s in subjects),
        *(_floor_check(f, overall) for f in floors),
    )
    failed = [c for c in checks if c.failed]
    if failed:
        decided_by = tuple(c.reason for c in failed)
    else:
        worst = max(subjects, key=lambda s: (s.drop, -s.p_adjusted), default=None)
        subject_line = f"no subject dropped significantly by more than {t.subject_max_drop:.2f} points"
        if worst is not None and worst.drop > 0:
            subject_line += f" (largest drop: {worst.name} {worst.drop:.2f} points, {holm} = {fmt_p(worst.p_adjusted)})"
        decided_by = (checks[0].reason, subject_line, *(c.reason for c in checks if c.rule == "floor"))
    s = candidate.settings
    return Verdict(
        baseline=RunInfo(str(baseline.path), baseline.model_name, baseline.contamination),
        candidate=RunInfo(str(candidate.path), candidate.model_name, candidate.contamination),
        protocol=f"{s.protocol}/v{s.version}",
        shots=s.shots,
        chat=s.chat,
        thresholds=thresholds,
        overall=overall,
        subjects=subjects,
        floors=tuple(floors),
        checks=checks,
        passed=not failed,
        decided_by=decided_by,
        part=part,
    )


def exit_code(verdicts: Sequence[Verdict]) -> int:
    return PASS if all(v.passed for v in verdicts) else REGRESSION


# --- renderings ------------------------------------------------------------------------------


def _xml(text: object) -> str:
    """`text` with the characters XML 1.0 cannot hold (control characters, NUL) replaced."""
    return _NOT_XML.sub("\ufffd", str(text))


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _score(points: float, ci: tuple[float, float]) -> str:
    return f"{points:.2f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _row(c: Comparison, label: str, failed: bool, holm: bool) -> str:
    p_holm = fmt_p(c.p_adjusted) if holm else "—"
    cells = [
        label, str(c.n), _score(c.baseline_score, c.baseline_ci95), _score(c.candidate_score, c.candidate_ci95),
        f"{c.drop:.2f}", str(c.right_to_wrong), str(c.wrong_to_right), fmt_p(c.p_value), p_holm, "❌" if failed else "✅",
    ]
    return "| " + " | ".join(cells) + " |"


def render_verdict_markdown(v: Verdict) -> str:
    """One verdict as Markdown: headline, the reasons that decided, the numbers they came from."""
    failed = {c.name for c in v.checks if c.failed}
    t = v.thresholds
    prefix = "general-" if v.part == GENERAL else ""
    lines = [
        f"## {'✅' if v.passed else '❌'} DevOps-Eval gate: {'pass' if v.passed else 'regression'} — {v.setting}",
        "",
        f"Candidate {md_code(v.candidate.path)} ({md_escape(v.candidate.model)}) against baseline "
        f"{md_code(v.baseline.path)} ({md_escape(v.baseline.model)}), {v.overall.n} questions compared one by one.",
        "",
        *(f"> ⚠️ **Contamination**: the {side} model was {md_escape(run.contamination)}\n" for side, run in
          (("candidate", v.candidate), ("baseline", v.baseline)) if run.contamination),
        "**Decided by**",
        "",
        *(f"- {'❌' if not v.passed else '✅'} {reason}" for reason in v.decided_by),
        "",
        "| | n | baseline % [95% CI] | candidate % [95% CI] | drop | right→wrong | wrong→right | p | Holm p | |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
        _row(v.overall, "**overall (micro)**", "overall" in failed, holm=False),
        *(_row(s, s.name, s.name in failed, holm=True) for s in sorted(v.subjects, key=lambda s: -s.drop)),
        "",
    ]
    worst = v.worst_subjects()
    lines.append(
        "Worst subjects: " + ", ".join(f"{s.name} (drop {s.drop:.2f}, Holm p {fmt_p(s.p_adjusted)})" for s in worst)
        if worst else "Worst subjects: none dropped."
    )
    lines += [
        "",
        f"Rules{f' ({v.part} part: --{prefix}max-drop, --{prefix}subject-max-drop)' if v.part else ''}: "
        f"overall regression = drop > {t.max_drop:.2f} points and exact two-sided McNemar p < {t.alpha:g}; "
        f"a subject fails on drop > {t.subject_max_drop:.2f} points and Holm-adjusted p < {t.alpha:g}"
        + "".join(f"; the candidate must reach {f.label} {f.points:.2f}" for f in v.floors)
        + ". Scores are micro accuracy in percent with 95% Wilson intervals.",
        "",
    ]
    return "\n".join(lines)


def render_markdown(verdicts: Sequence[Verdict]) -> str:
    return "\n".join(render_verdict_markdown(v) for v in verdicts)


def render_junit(verdicts: Sequence[Verdict]) -> str:
    """JUnit XML: one test suite per verdict, one test case per subject, overall and floor."""
    total = sum(len(v.checks) for v in verdicts)
    failures = sum(c.failed for v in verdicts for c in v.checks)
    root = ET.Element("testsuites", name="devops-eval gate", tests=str(total), failures=str(failures), errors="0")
    for v in verdicts:
        suite_failures = sum(c.failed for c in v.checks)
        suite = ET.SubElement(
            root, "testsuite", name=f"devops-eval gate ({v.setting})", tests=str(len(v.checks)),
            failures=str(suite_failures), errors="0", skipped="0", time="0",
        )
        props = ET.SubElement(suite, "properties")
        for key, value in (
            ("baseline", v.baseline.path), ("baseline_model", v.baseline.model),
            ("candidate", v.candidate.path), ("candidate_model", v.candidate.model),
            ("max_drop", f"{v.thresholds.max_drop:g}"), ("subject_max_drop", f"{v.thresholds.subject_max_drop:g}"),
            ("alpha", f"{v.thresholds.alpha:g}"),
        ):
            ET.SubElement(props, "property", name=key, value=_xml(value))
        classname = f"gate.{v.protocol.replace('/', '.')}.{v.shots}-shot" + (f".{v.part}" if v.part else "")
        for c in v.checks:
            case = ET.SubElement(suite, "testcase", classname=classname, name=c.name, time="0")
            if c.failed:
                ET.SubElement(case, "failure", message=_xml(c.reason), type="regression").text = _xml(c.reason)
            else:
                ET.SubElement(case, "system-out").text = _xml(c.reason)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def verdict_record(verdicts: Sequence[Verdict]) -> dict:
    """The JSON verdict: everything the Markdown and JUnit say, as data."""
    return {
        "schema": SCHEMA,
        "passed": all(v.passed for v in verdicts),
        "exit_code": exit_code(verdicts),
        "verdicts": [asdict(v) for v in verdicts],
    }
