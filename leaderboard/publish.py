"""`harness leaderboard` once its flags are read: collect the runs, build the board, render it
where asked (a README block, a file, or stdout), and write the files all or none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.files import write_changed
from leaderboard.board import build_board
from leaderboard.collect import collect_runs
from leaderboard.readme import read_document, with_block
from leaderboard.render import render_chart, render_csv, render_json, render_markdown
from reports.output import checked_target, image_path


@dataclass(frozen=True)
class LeaderboardRequest:
    runs: tuple[str, ...]  # run directories, directories holding runs, or globs
    readme: str | None = None  # rewrite this README's block (always Markdown)
    output: str | None = None  # write here instead of stdout
    format: str = "md"  # md, csv or json: for `output` or stdout
    highlight: tuple[str, ...] = ()


@dataclass(frozen=True)
class Published:
    """What was made: the text for stdout (None when it went to files), and what was written."""

    stdout: str | None
    written: tuple[Path, ...]
    runs: int
    sections: int


def publish(request: LeaderboardRequest) -> Published:
    readme = checked_target(request.readme, "--readme") if request.readme else None
    output = checked_target(request.output) if request.output else None
    if readme and not output and request.format != "md":
        raise HarnessError(f"--format {request.format} is for --output or stdout; the --readme block is always Markdown")
    if readme and output and readme.resolve() == output.resolve():
        raise HarnessError("--readme and --output name the same file; give one of them")
    document = read_document(readme) if readme else None  # a README we cannot rewrite fails first

    runs = collect_runs(list(request.runs))
    board = build_board(runs, list(request.highlight))

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
        if request.format == "csv":
            text = render_csv(board, base)
        elif request.format == "json":
            text = render_json(board, base)
        else:
            text = render_markdown(board, base, chart_beside(output) if output else None)
        if output:
            writes.append((output, text.encode("utf-8")))

    changed = write_changed(dict(writes))  # all or none; unchanged files are not touched
    return Published(None if output or readme else text, tuple(changed), len(runs), len(board.sections))
