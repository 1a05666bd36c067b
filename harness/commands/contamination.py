"""`harness contamination`: are evaluated questions inside training data? Exit 0: clean; 1: found; 2: bad input.

Scans registered datasets (`--dataset` in `--dataset_dir`/dataset_info.json: the columns training
reads) or plain files (`--files`: txt, json, jsonl, csv, or directories of them) for the 574
questions, as `tasks.contamination` matches them; prints a Markdown report (also `--report FILE`)
and writes JSON for tools (`--json FILE`). The check itself is `harness.contamination`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.commands.args import add_data_dir_argument, add_selection_arguments, given, subject_keys
from harness.errors import HarnessError
from tasks.contamination import DEFAULT_NGRAM, DEFAULT_THRESHOLD


def register(sub) -> None:
    p = sub.add_parser(
        "contamination",
        help="look for the 574 evaluated questions in training data; exit 1 if any is found",
        description="Scan training data (registered datasets or plain txt/json/jsonl/csv files) for the "
        "evaluated questions, by token n-grams on text normalized for matching (NFKC with the Kangxi "
        "look-alikes mapped, case folded, without whitespace or punctuation). Exit 0: clean; 1: questions "
        "found; 2: bad input.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", type=given, metavar="NAME[,NAME]", help="dataset(s) named in DATASET_DIR/dataset_info.json, as harness train takes them")
    what.add_argument("--files", nargs="+", type=given, metavar="PATH", help="txt (a record per line), json, jsonl or csv files, or directories of them")
    p.add_argument("--dataset_dir", type=given, metavar="DIR", help="folder holding dataset_info.json (default: data, as harness train)")
    p.add_argument("--ngram", type=int, default=DEFAULT_NGRAM,
                   help=f"n-gram length in tokens: an ideograph, or a Latin word or number (default {DEFAULT_NGRAM})")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"share of a question's stem a record must hold, with half the question or a long stem (default {DEFAULT_THRESHOLD:g})")
    p.add_argument("--report", type=given, metavar="FILE", help="write the Markdown report to FILE too")
    p.add_argument("--json", type=given, metavar="FILE", help="write the findings as JSON to FILE")
    g = p.add_argument_group("benchmark data")
    add_data_dir_argument(g)
    add_selection_arguments(g)
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.contamination import ScanRequest, render_markdown, scan_training_data
    from harness.files import write_all_or_none
    from tasks.contamination import check_settings

    check_settings(args.ngram, args.threshold)
    outputs = _outputs(args.report, args.json)
    if args.dataset_dir and args.dataset is None:
        raise HarnessError("--dataset_dir names where --dataset's registry is; with --files, leave it out")
    subjects = subject_keys(args)
    request = ScanRequest(
        datasets=tuple(_names(args.dataset)) if args.dataset is not None else (),
        dataset_dir=args.dataset_dir or "data",
        files=tuple(args.files or ()),
        data_dir=args.data_dir,
        subjects=tuple(subjects) if subjects else None,
        tasks_file=args.tasks_file,
        ngram=args.ngram,
        threshold=args.threshold,
    )
    result = scan_training_data(request, _progress)
    record, seconds = result.record, result.seconds
    markdown = render_markdown(record)
    write_all_or_none({path: text for path, text in (
        (outputs[0], markdown), (outputs[1], json.dumps(record, ensure_ascii=False, indent=2) + "\n")) if path})
    sys.stdout.write(markdown)
    s = record["scanned"]
    print(f"harness contamination: {s['records']} records, {s['bytes'] / 1e6:.1f} MB in {seconds:.1f} s "
          f"({s['bytes'] / 1e6 / max(seconds, 1e-9):.1f} MB/s); {len(record['found'])} questions found", file=sys.stderr)
    return record["exit_code"]


def _progress(records, sources: list):
    """Records with a progress bar on stderr when it is a terminal (by characters read)."""
    from tqdm import tqdm

    with tqdm(total=None, unit=" chars", unit_scale=True, disable=None, file=sys.stderr, mininterval=1,
              desc=f"{len(sources)} file(s)") as bar:
        for r in records:
            bar.update(sum(len(t) for _, t in r.fields))
            yield r


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise HarnessError("--dataset: give dataset names, comma-separated")
    return names


def _outputs(report: str | None, json_path: str | None) -> tuple[Path | None, Path | None]:
    paths = [Path(p) if p else None for p in (report, json_path)]
    for flag, path in zip(("--report", "--json"), paths):
        if path is not None and path.is_dir():
            raise HarnessError(f"{flag} {path} is a directory; give a file name")
    if all(paths) and paths[0].resolve() == paths[1].resolve():
        raise HarnessError("--report and --json name the same file")
    return paths[0], paths[1]
