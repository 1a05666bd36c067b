"""`harness report` (one run) and `harness compare` (two runs): Markdown with plots beside it."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands.args import add_selection_arguments, given, registry, subject_keys


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="Markdown report of one run: settings, per-subject accuracy, letter bias, calibration, confident errors",
        description="Without --output the Markdown goes to stdout and no plot is drawn; with --output FILE "
        "the calibration plot is written beside it as <stem>-calibration.png.",
    )
    p.add_argument("run", type=given, metavar="RUN_DIR", help="a run directory (holding results.json)")
    p.add_argument("--output", type=given, metavar="FILE", help="write the Markdown here (and the plot beside it) instead of stdout")
    add_selection_arguments(p.add_argument_group("subjects"), default="all of the run's")
    p.set_defaults(func=run_report)

    c = sub.add_parser(
        "compare",
        help="compare two runs on the same questions: per-subject differences, flipped questions, exact McNemar p",
        description="Refuses runs whose protocol, protocol version, shots, chat format, question set or data "
        "differ. Without --output the Markdown goes to stdout; with --output FILE the per-subject chart is "
        "written beside it as <stem>-subjects.png.",
    )
    c.add_argument("run_a", type=given, metavar="RUN_A", help="the baseline run directory")
    c.add_argument("run_b", type=given, metavar="RUN_B", help="the run compared with it")
    c.add_argument("--output", type=given, metavar="FILE", help="write the Markdown here (and the chart beside it) instead of stdout")
    c.set_defaults(func=run_compare)


def run_report(args) -> int:
    from harness.records import load_run, restrict_run
    from reports.output import checked_target
    from reports.report import build_report, calibration_png, render_report

    output = checked_target(args.output) if args.output else None
    report = build_report(restrict_run(load_run(args.run), subject_keys(args), registry(args)))
    _emit(output, "calibration", lambda image: render_report(report, image), lambda: calibration_png(report))
    return 0


def run_compare(args) -> int:
    from harness.records import load_run
    from reports.compare import compare, plot_comparison, render_comparison
    from reports.output import checked_target

    output = checked_target(args.output) if args.output else None
    comparison = compare(load_run(args.run_a), load_run(args.run_b))
    _emit(output, "subjects", lambda image: render_comparison(comparison, image), lambda: plot_comparison(comparison))
    return 0


def _emit(output: Path | None, kind: str, markdown, png) -> None:
    """Markdown to stdout; or, with a file, the image and the Markdown: both or neither."""
    from harness.files import write_all_or_none
    from reports.output import image_path

    if output is None:
        sys.stdout.write(markdown(None))
        return
    image = image_path(output, kind)
    text, data = markdown(image.name), png()  # render both before writing either
    write_all_or_none({image: data, output: text})
    print(f"wrote {output} and {image}")
