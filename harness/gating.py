"""The gate on run directories: what `harness gate` and `harness eval --gate-baseline` do once
their flags are read.

`harness.gate` decides one pair of runs and renders the verdict; this module finds the runs (a
run, or a directory of `shots-K` sub-runs), pairs baselines with candidates by shots, turns the
floors into numbers (a model card row only where the card's number applies), and publishes the
verdicts: files all or none, then stdout, then the CI step summary.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, RunError
from harness.files import write_all_or_none
from harness.gate import Floor, Thresholds, decide, exit_code, render_junit, render_markdown, verdict_record
from harness.records import RESULTS, IncompatibleRuns, Run, RunSettings, load_run, restrict_run, show_setting
from leaderboard.references import Reference, card_mismatch, find_reference
from tasks import GENERAL, GROUP, builtin_registry

SUB_RUN = re.compile(r"shots-(\d+)")


@dataclass(frozen=True)
class Outputs:
    """Where the verdict goes besides stdout; None where not asked for."""

    report: Path | None = None
    junit: Path | None = None
    json: Path | None = None
    step_summary: Path | None = None  # GitHub Actions' $GITHUB_STEP_SUMMARY, appended to


@dataclass(frozen=True)
class GatePlan:
    """The gate's request, checked before any run is read or any model scored."""

    thresholds: Thresholds
    min_score: float | None
    reference: Reference | None
    outputs: Outputs
    # The general part's thresholds (`--general-max-drop`...); None: the general part, where the
    # runs have one, is held to `thresholds`.
    general: Thresholds | None = None

    def thresholds_for(self, part: str | None) -> Thresholds:
        return self.general if part == GENERAL and self.general is not None else self.thresholds


def make_plan(thresholds: Thresholds, min_score: float | None, min_reference: str | None, outputs: Outputs,
              general: Thresholds | None = None) -> GatePlan:
    """The plan, or a HarnessError naming the flag whose value cannot be used."""
    t = thresholds
    if not 0 < t.alpha < 1:
        raise HarnessError(f"--alpha {t.alpha:g} is outside (0, 1)")
    if not (t.max_drop >= 0 and t.subject_max_drop >= 0):
        raise HarnessError("--max-drop and --subject-max-drop are accuracy points, 0 or more")
    if general is not None and not (general.max_drop >= 0 and general.subject_max_drop >= 0):
        raise HarnessError("--general-max-drop and --general-subject-max-drop are accuracy points, 0 or more")
    if min_score is not None and not 0 <= min_score <= 100:
        raise HarnessError(f"--min-score {min_score:g} is outside 0..100 (it is a percentage)")
    paths = [p for p in (outputs.report, outputs.junit, outputs.json) if p]
    if len({p.resolve() for p in paths}) < len(paths):
        raise HarnessError(
            f"--report, --junit and the JSON verdict ({outputs.json}) must be three different files; name the JSON with --json FILE"
        )
    return GatePlan(t, min_score, _reference(min_reference) if min_reference else None, outputs, general)


def _reference(name: str) -> Reference:
    try:
        return find_reference(name)
    except KeyError as e:
        raise HarnessError(f"--min-reference: {e.args[0]}") from None


def gate_runs(plan: GatePlan, baseline: Path | Sequence[Path], candidate: Path | Sequence[Path],
              only: list[str] | None = None, registry=None) -> int:
    """`harness gate`: judge the candidate run(s) against the baseline run(s), the i-th candidate
    against the i-th baseline (e.g. a DevOps run and a general run), on the subjects `only` picks
    (subject keys or group names of `registry`; None: all); the exit code."""
    baselines_given = [baseline] if isinstance(baseline, Path) else list(baseline)
    candidates_given = [candidate] if isinstance(candidate, Path) else list(candidate)
    if len(baselines_given) != len(candidates_given):
        raise HarnessError(f"{len(baselines_given)} --baseline but {len(candidates_given)} --candidate: "
                           "give one baseline for each candidate, in the same order")
    pairs = []
    for b, c in zip(baselines_given, candidates_given):
        candidates = load_runs(c)
        baselines = match_baselines(load_runs(b), list(candidates), b)
        pairs += [(restrict_run(baselines[k], only, registry or builtin_registry()),
                   restrict_run(candidates[k], only, registry or builtin_registry())) for k in candidates]
    return judge(plan, pairs)


def gate_parts(run: Run) -> list[tuple[str | None, list[str]]]:
    """The parts a run is judged in: its general subjects (the `general` group) apart from the
    rest (DevOps, a tasks file's own), each with its own thresholds. A run without general
    subjects is one unnamed part, judged as it always was."""
    general = set(builtin_registry().groups[GENERAL].subjects)
    ours = [k for k in run.settings.subjects if k not in general]
    theirs = [k for k in run.settings.subjects if k in general]
    if not theirs:
        return [(None, ours)]
    return [*([(GROUP, ours)] if ours else []), (GENERAL, theirs)]


def judge(plan: GatePlan, pairs: list[tuple[Run, Run]]) -> int:
    """Decide every (baseline, candidate) pair, part by part, publish the verdicts, and return the exit code."""
    verdicts = []
    for b, c in pairs:
        for part, keys in gate_parts(c):
            base, cand = b.restricted(keys), c.restricted(keys)
            if part == GENERAL:
                # the floors are the DevOps score's (--min-score, a model card row): no floor for the general part
                verdicts.append(decide(base, cand, plan.thresholds_for(part), (), part))
            else:
                verdicts.append(decide(base, cand, plan.thresholds_for(part), floors(plan, cand), part))
    if plan.general is not None and not any(v.part == GENERAL for v in verdicts):
        raise HarnessError("--general-max-drop/--general-subject-max-drop: the runs have no general subjects "
                           "(score them with harness eval --group general)")
    publish(verdicts, plan.outputs)
    return exit_code(verdicts)


def floors(plan: GatePlan, candidate: Run) -> list[Floor]:
    out = []
    if plan.min_score is not None:
        out.append(Floor("min-score", "--min-score", plan.min_score))
    if plan.reference is not None:
        out.append(reference_floor(plan.reference, candidate))
    return out


def reference_floor(ref: Reference, run: Run) -> Floor:
    """The reference row's score at the run's shots; refused where the card's number does not apply."""
    why = card_mismatch(run.settings, len(run.samples), str(run.path), ref, row=True)
    if why:
        raise HarnessError(f"--min-reference {ref.name}: {why}")
    shots = run.settings.shots
    return Floor(f"min-reference {ref.name}", f"{ref.name}'s reported {shots}-shot score", ref.score(shots))


# --- runs ------------------------------------------------------------------------------------


def load_runs(path: Path) -> dict[int, Run]:
    """A finished run, or a directory of shots-K sub-runs (as `harness eval` writes for several --shots), by shots."""
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


# --- publishing ------------------------------------------------------------------------------


def publish(verdicts, out: Outputs) -> None:
    """Files first (all or none), then stdout, then the CI step summary."""
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
    if out.step_summary:
        _append_step_summary(out.step_summary, markdown)


def _append_step_summary(target: Path, markdown: str) -> None:
    """Append to the file GitHub Actions shows on the run's page; a failure there only warns."""
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")
    except OSError as e:
        print(f"harness gate: warning: cannot append to $GITHUB_STEP_SUMMARY ({target}): {e.strerror or e}", file=sys.stderr)


# --- `harness eval --gate-baseline` ----------------------------------------------------------


@dataclass(frozen=True)
class EvalGate:
    """The gate of an evaluation: its plan and baselines, read before any question is scored."""

    plan: GatePlan
    baselines: dict[int, Run]

    def judge(self, runs: dict[int, Path]) -> int:
        """Gate each new run (by shots) against its baseline; the exit code."""
        return judge(self.plan, [(self.baselines[k], load_run(path)) for k, path in runs.items()])


def eval_gate(plan: GatePlan, baseline: Path, planned: Sequence[RunSettings]) -> EvalGate:
    """The baselines for an evaluation of `planned` settings (one per shots), refused now if they
    cannot gate it (before hours of scoring). The data is not read yet: what the flags fix is
    checked now, the data once both runs exist."""
    baselines = match_baselines(load_runs(baseline), [s.shots for s in planned], baseline)
    for settings in planned:
        run = baselines[settings.shots]
        diff = run.settings.comparison_difference(settings)
        if diff:
            raise IncompatibleRuns(
                f"--gate-baseline {run.path} cannot gate this evaluation: "
                f"{diff.field} is {show_setting(diff.ours)} there, {show_setting(diff.theirs)} here"
            )
        if plan.reference is not None:
            reference_floor(plan.reference, run)  # the candidate will match the baseline's settings
    return EvalGate(plan, baselines)
