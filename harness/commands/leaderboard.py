"""`harness leaderboard`: the model card's tables from run records, into a README or a file."""

from __future__ import annotations

import sys

from harness.commands.args import given


def register(sub) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="Base/Chat tables in the model card's shape: measured runs beside the published numbers",
        description="Collect runs (directories, directories holding runs, or globs) and render the "
        "model card's Base and Chat tables, a per-subject table and a bar chart. Runs of different "
        "protocols, question sets or data are put in separate sections, never ranked together.",
    )
    p.add_argument("runs", nargs="+", type=given, metavar="RUN_DIR", help="a run directory, a directory holding runs, or a glob")
    p.add_argument(
        "--readme",
        type=given,
        metavar="README",
        help="rewrite only the block between the lines <!-- leaderboard:start --> and <!-- leaderboard:end --> "
        "of this Markdown file (appended at its end if absent); the chart goes beside it as <stem>-leaderboard.png",
    )
    p.add_argument(
        "--output",
        type=given,
        metavar="FILE",
        help="write the leaderboard to FILE instead of stdout (with --format md, the chart beside it as <stem>-leaderboard.png)",
    )
    p.add_argument("--format", choices=("md", "csv", "json"), default="md", help="for --output or stdout (default md); --readme is always Markdown")
    p.add_argument(
        "--highlight",
        type=given,
        action="append",
        metavar="PATTERN",
        help="bold the rows whose model name, as shown, matches this regular expression (case-insensitive), "
        "as the card bolds DevOps-Model; repeatable",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from leaderboard.publish import LeaderboardRequest, publish

    done = publish(LeaderboardRequest(tuple(args.runs), args.readme, args.output, args.format, tuple(args.highlight or ())))
    if done.stdout is not None:
        sys.stdout.write(done.stdout)
        return 0
    what = ", ".join(str(p) for p in done.written) if done.written else "nothing (already up to date)"
    print(f"leaderboard: {done.runs} run(s) in {done.sections} section(s); wrote {what}")
    return 0
