"""`harness gate`: exit 1 when a candidate run is significantly worse than a baseline run.

Its flags are shared with `harness eval --gate-baseline` (`args.add_gate_arguments`); both write
the same outputs (Markdown on stdout and in $GITHUB_STEP_SUMMARY, --report, --junit, a JSON verdict).
"""

from __future__ import annotations

from pathlib import Path

from harness.commands.args import add_gate_arguments, add_selection_arguments, gate_plan, given, registry, subject_keys


def register(sub) -> None:
    p = sub.add_parser(
        "gate",
        help="exit 1 when a candidate run is significantly worse than a baseline run",
        description="Compare two runs question by question. Runs holding general subjects (the `general` group) are "
        "judged in two parts, DevOps and general, each with its thresholds. "
        "Exit 0: pass; 1: regression; 2: usage or runs that cannot be compared.",
    )
    p.add_argument("--baseline", required=True, action="append", type=given, metavar="RUN_DIR",
                   help="the accepted run (or a directory of shots-K runs); repeat with --candidate to gate a DevOps and a general run at once")
    p.add_argument("--candidate", required=True, action="append", type=given, metavar="RUN_DIR",
                   help="the run to judge (or a directory of shots-K runs), against the baseline given in the same position")
    add_gate_arguments(p)
    add_selection_arguments(p.add_argument_group("subjects"), default="all of the runs'")
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.gating import gate_runs

    return gate_runs(gate_plan(args), [Path(b) for b in args.baseline], [Path(c) for c in args.candidate],
                     subject_keys(args), registry(args))
