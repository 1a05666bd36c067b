"""`harness gate`: exit 1 when a candidate run is significantly worse than a baseline run.

Also the gate half of `harness eval --gate-baseline`: both take the same flags and write the same
outputs (Markdown on stdout and in $GITHUB_STEP_SUMMARY, --report, --junit, a JSON verdict).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError, RunError
from harness.files import write_all_or_none

if TYPE_CHECKING:
    from harness.gate import Floor, Thresholds
    from harness.records import Run
    from leaderboard.references import Reference

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
GATE_FLAGS = ("max_drop", "subject_max_drop", "alpha", "min_score", "min_reference", "report", "junit", "json")
SUB_RUN = re.compile(r"shots-(\d+)")


def register(sub) -> None:
    p = sub.add_parser(
        "gate",
        help="exit 1 when a candidate run is significantly worse than a baseline run",
        description="Compare two runs question by question. Exit 0: pass; 1: regression; 2: usage or runs that cannot be compared.",
    )
    p.add_argument("--baseline", required=True, metavar="RUN_DIR", help="the accepted run (or a directory of shots-K runs)")
    p.add_argument("--candidate", required=True, metavar="RUN_DIR", help="the run to judge (or a directory of shots-K runs)")
    add_gate_arguments(p)
    p.set_defaults(func=run)


def add_gate_arguments(p) -> None:
    """The thresholds and outputs; shared with `harness eval --gate-baseline`. Unset flags are None."""
    from harness.gate import Thresholds

    d = Thresholds()
    g = p.add_argument_group("gate")
    g.add_argument("--max-drop", type=float, metavar="POINTS",
                   help=f"overall drop in accuracy points that fails when significant (default {d.max_drop:g})")
    g.add_argument("--subject-max-drop", type=float, metavar="POINTS",
                   help=f"the same per subject, p Holm-adjusted over subjects (default {d.subject_max_drop:g})")
    g.add_argument("--alpha", type=float, metavar="A", help=f"level of the exact McNemar test (default {d.alpha:g})")
    g.add_argument("--min-score", type=float, metavar="POINTS", help="fail a candidate whose micro accuracy (%%) is below this")
    g.add_argument("--min-reference", metavar="NAME",
                   help="fail a candidate below this model card row at the same shots, e.g. Qwen-7B-Base")
    g.add_argument("--report", metavar="FILE", help="write the Markdown summary to FILE too")
    g.add_argument("--junit", metavar="FILE", help="write JUnit XML: a test case per subject, overall and each floor")
    g.add_argument("--json", metavar="FILE",
                   help="write the JSON verdict here (default: beside --junit, else --report, as NAME.json)")


def run(args) -> int:
    gate_plan = plan(args)
    candidates = load_runs(Path(args.candidate))
    baselines = match_baselines(load_runs(Path(args.baseline)), list(candidates), Path(args.baseline))
    return gate_pairs(gate_plan, [(baselines[k], candidates[k]) for k in candidates])


# --- what the flags resolve to -----------------------------------------------------------------


@dataclass(frozen=True)
class Outputs:
    """Files the verdict goes to besides stdout; None where not asked for."""

    report: Path | None
    junit: Path | None
    json: Path | None


@dataclass(frozen=True)
class GatePlan:
    """The gate flags, checked before any run is read or any model scored."""

    thresholds: Thresholds
    min_score: float | None
    reference: Reference | None
    outputs: Outputs


def plan(args) -> GatePlan:
    from harness.gate import Thresholds

    d = Thresholds()
    t = Thresholds(
        max_drop=d.max_drop if args.max_drop is None else args.max_drop,
        subject_max_drop=d.subject_max_drop if args.subject_max_drop is None else args.subject_max_drop,
        alpha=d.alpha if args.alpha is None else args.alpha,
    )
    if not 0 < t.alpha < 1:
        raise HarnessError(f"--alpha {t.alpha:g} is outside (0, 1)")
    if not (t.max_drop >= 0 and t.subject_max_drop >= 0):
        raise HarnessError("--max-drop and --subject-max-drop are accuracy points, 0 or more")
    if args.min_score is not None and not 0 <= args.min_score <= 100:
        raise HarnessError(f"--min-score {args.min_score:g} is outside 0..100 (it is a percentage)")
    return GatePlan(t, args.min_score, lookup_reference(args.min_reference) if args.min_reference else None, outputs(args))


def lookup_reference(name: str) -> Reference:
    from leaderboard.references import find_reference

    try:
        return find_reference(name)
    except KeyError as e:
        raise HarnessError(f"--min-reference: {e.args[0]}") from None


def outputs(args) -> Outputs:
    report = Path(args.report) if args.report else None
    junit = Path(args.junit) if args.junit else None
    beside = junit or report
    json_path = Path(args.json) if args.json else beside.with_suffix(".json") if beside else None
    paths = [p for p in (report, junit, json_path) if p]
    if len({p.resolve() for p in paths}) < len(paths):
        raise HarnessError(
            f"--report, --junit and the JSON verdict ({json_path}) must be three different files; name the JSON with --json FILE"
        )
    return Outputs(report, junit, json_path)


def floors(gate_plan: GatePlan, candidate: Run) -> list[Floor]:
    from harness.gate import Floor

    out = []
    if gate_plan.min_score is not None:
        out.append(Floor("min-score", "--min-score", gate_plan.min_score))
    if gate_plan.reference is not None:
        out.append(reference_floor(gate_plan.reference, candidate))
    return out


def reference_floor(ref: Reference, run: Run) -> Floor:
    """The reference row's score at the run's shots; refused where the card's number does not apply."""
    from harness.gate import Floor
    from leaderboard.references import card_mismatch

    why = card_mismatch(run.settings, len(run.samples), str(run.path), ref, row=True)
    if why:
        raise HarnessError(f"--min-reference {ref.name}: {why}")
    shots = run.settings.shots
    return Floor(f"min-reference {ref.name}", f"{ref.name}'s reported {shots}-shot score", ref.score(shots))


# --- runs ------------------------------------------------------------------------------------


def load_runs(path: Path) -> dict[int, Run]:
    """A finished run, or a directory of shots-K sub-runs (as `harness eval` writes for several --shots), by shots."""
    from harness.records import RESULTS, load_run

    subs = {}
    if path.is_dir() and not (path / RESULTS).is_file():
        subs = {
            int(m.group(1)): child for child in path.iterdir() if child.is_dir() and (m := SUB_RUN.fullmatch(child.name))
        }
    if not subs:
        single = load_run(path)
        return {single.shots: single}
    runs = {k: load_run(subs[k]) for k in sorted(subs)}
    for k, r in runs.items():
        if r.shots != k:
            raise RunError(f"{r.path} is named shots-{k} but holds a {r.shots}-shot run")
    return runs


def match_baselines(baselines: dict[int, Run], shots: Sequence[int], source: Path) -> dict[int, Run]:
    """The baseline for each shots setting: the one run when both sides are single runs, else by shots-K."""
    if len(baselines) == 1 and len(shots) == 1:
        return {shots[0]: next(iter(baselines.values()))}
    for k in shots:
        if k not in baselines:
            held = ", ".join(f"{s}-shot" for s in baselines)
            raise RunError(f"{source} has no {k}-shot baseline (it holds {held}); give a directory with a shots-{k} sub-run")
    return {k: baselines[k] for k in shots}


# --- deciding and publishing -----------------------------------------------------------------


def gate_pairs(gate_plan: GatePlan, pairs: list[tuple[Run, Run]]) -> int:
    """Decide every (baseline, candidate) pair, publish the verdicts, and return the exit code."""
    from harness.gate import decide, exit_code

    verdicts = [decide(b, c, gate_plan.thresholds, floors(gate_plan, c)) for b, c in pairs]
    publish(verdicts, gate_plan.outputs)
    return exit_code(verdicts)


def publish(verdicts, out: Outputs) -> None:
    """Files first (all or none), then stdout, then the CI step summary."""
    from harness.gate import render_junit, render_markdown, verdict_record

    markdown = render_markdown(verdicts)
    files = {}
    if out.report:
        files[out.report] = markdown
    if out.junit:
        files[out.junit] = render_junit(verdicts)
    if out.json:
        files[out.json] = json.dumps(verdict_record(verdicts), ensure_ascii=False, indent=2) + "\n"
    write_all_or_none(files)
    sys.stdout.write(markdown)
    sys.stdout.flush()
    append_step_summary(markdown)


def append_step_summary(markdown: str) -> None:
    """Append to the file GitHub Actions shows on the run's page, when running there."""
    target = os.environ.get(STEP_SUMMARY_ENV)
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")
    except OSError as e:
        print(f"harness gate: warning: cannot append to ${STEP_SUMMARY_ENV} ({target}): {e.strerror or e}", file=sys.stderr)


# --- `harness eval --gate-baseline` ----------------------------------------------------------


@dataclass(frozen=True)
class EvalGate:
    """The gate of an evaluation: its flags and baselines, read before any question is scored."""

    plan: GatePlan
    baselines: dict[int, Run]

    def judge(self, runs: dict[int, Path]) -> int:
        """Gate each new run (by shots) against its baseline; the exit code."""
        from harness.records import load_run

        return gate_pairs(self.plan, [(self.baselines[k], load_run(path)) for k, path in runs.items()])


def eval_gate(args, shots_list: list[int]) -> EvalGate | None:
    """For `harness eval`: None without --gate-baseline (whose flags then are a usage error); else the
    plan and the baselines, refused now if they cannot gate this evaluation (before hours of scoring)."""
    from harness.commands.args import chat_mode
    from harness.records import IncompatibleRuns, RunSettings, show_setting
    from tasks import get_protocol, select_subjects

    if not args.gate_baseline:
        given = [name for name in GATE_FLAGS if getattr(args, name) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise HarnessError(f"{flag} is a gate flag: add --gate-baseline RUN_DIR (or run harness gate)")
        return None
    gate_plan = plan(args)
    source = Path(args.gate_baseline)
    baselines = match_baselines(load_runs(source), shots_list, source)
    version = get_protocol(args.protocol).version
    subjects = [x.key for x in select_subjects(args.subjects.split(",") if args.subjects else None)]
    for shots, baseline in baselines.items():
        # The data is not read yet: what the flags fix is checked now, the data once both runs exist.
        planned = RunSettings.of(args.protocol, version, shots, chat_mode(args), subjects, args.limit, args.normalize)
        diff = baseline.settings.comparison_difference(planned)
        if diff:
            raise IncompatibleRuns(
                f"--gate-baseline {baseline.path} cannot gate this evaluation: "
                f"{diff.field} is {show_setting(diff.ours)} there, {show_setting(diff.theirs)} here"
            )
        if gate_plan.reference is not None:
            reference_floor(gate_plan.reference, baseline)  # the candidate will match the baseline's settings
    return EvalGate(gate_plan, baselines)
