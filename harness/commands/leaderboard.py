"""`harness leaderboard`: the model card's tables from run records, into a README or a file."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import HarnessError


def register(sub) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="Base/Chat tables in the model card's shape: measured runs beside the published numbers",
        description="Collect runs (directories, directories holding runs, or globs) and render the "
        "model card's Base and Chat tables, a per-subject table and a bar chart. Runs of different "
        "protocols, question sets or data are put in separate sections, never ranked together.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run directory, a directory holding runs, or a glob")
    p.add_argument(
        "--readme",
        metavar="README",
        help="rewrite only the block between the lines <!-- leaderboard:start --> and <!-- leaderboard:end --> "
        "of this Markdown file (appended at its end if absent); the chart goes beside it as <stem>-leaderboard.png",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write the leaderboard to FILE instead of stdout (with --format md, the chart beside it as <stem>-leaderboard.png)",
    )
    p.add_argument("--format", choices=("md", "csv", "json"), default="md", help="for --output or stdout (default md); --readme is always Markdown")
    p.add_argument(
        "--highlight",
        action="append",
        metavar="PATTERN",
        help="bold the rows whose model name, as shown, matches this regular expression (case-insensitive), "
        "as the card bolds DevOps-Model; repeatable",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.files import write_changed
    from leaderboard.board import build_board
    from leaderboard.collect import collect_runs
    from leaderboard.readme import read_document, with_block
    from leaderboard.render import render_chart, render_csv, render_json, render_markdown
    from reports.output import checked_target, image_path

    readme = checked_target(args.readme, "--readme") if args.readme else None
    output = checked_target(args.output) if args.output else None
    if readme and not output and args.format != "md":
        raise HarnessError(f"--format {args.format} is for --output or stdout; the --readme block is always Markdown")
    if readme and output and readme.resolve() == output.resolve():
        raise HarnessError("--readme and --output name the same file; give one of them")
    document = read_document(readme) if readme else None  # a README we cannot rewrite fails first

    runs = collect_runs(args.runs)
    board = build_board(runs, args.highlight)

    # Render everything in memory; write only once all of it succeeded.
    writes: list[tuple[Path, bytes]] = []
    chart: list[bytes] = []

    def chart_beside(markdown: Path) -> str:
        if not chart:
            chart.append(render_chart(board))
        image = image_path(markdown, "leaderboard")
        writes.append((image, chart[0]))
        return image.name

    if readme:
        block = render_markdown(board, readme.parent, chart_beside(readme))
        writes.append((readme, document.encode(with_block(document.text, block, str(readme)))))
    text = None
    if output or not readme:
        base = output.parent if output else Path.cwd()
        if args.format == "csv":
            text = render_csv(board, base)
        elif args.format == "json":
            text = render_json(board, base)
        else:
            text = render_markdown(board, base, chart_beside(output) if output else None)
        if output:
            writes.append((output, text.encode("utf-8")))

    changed = write_changed(dict(writes))  # all or none; unchanged files are not touched
    if output or readme:
        what = ", ".join(str(p) for p in changed) if changed else "nothing (already up to date)"
        print(f"leaderboard: {len(runs)} run(s) in {len(board.sections)} section(s); wrote {what}")
    else:
        sys.stdout.write(text)
    return 0
