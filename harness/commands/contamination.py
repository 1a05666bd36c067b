"""`harness contamination`: are evaluated questions inside training data? Exit 0: clean; 1: found; 2: bad input.

Scans registered datasets (`--dataset` in `--dataset_dir`/dataset_info.json: the columns training
reads) or plain files (`--files`: txt, json, jsonl, csv, or directories of them) for the 574
questions, as `tasks.contamination` matches them; prints a Markdown report (also `--report FILE`)
and writes JSON for tools (`--json FILE`). `check_before_training` is the same check for `harness train`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from harness.commands.args import DATA_DIR_ENV, add_data_dir_argument, subject_keys
from harness.corpus import KINDS, CorpusFile, corpus_files, read_records
from harness.errors import HarnessError
from harness.files import write_all_or_none
from tasks.contamination import (
    DEFAULT_NGRAM,
    DEFAULT_THRESHOLD,
    METHOD,
    WHOLE_SHARE,
    Findings,
    Match,
    alone_stem_tokens,
    check_settings,
    scan,
)

log = logging.getLogger("harness")
SCHEMA = "devops-eval/contamination/1"
CLOSEST_SHOWN = 10


class ContaminationFound(HarnessError):
    """`harness train --refuse_contaminated` on data that holds evaluated questions."""

    exit_code = 1


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
    what.add_argument("--dataset", metavar="NAME[,NAME]", help="dataset(s) named in DATASET_DIR/dataset_info.json, as harness train takes them")
    what.add_argument("--files", nargs="+", metavar="PATH", help="txt (a record per line), json, jsonl or csv files, or directories of them")
    p.add_argument("--dataset_dir", metavar="DIR", help="folder holding dataset_info.json (default: data, as harness train)")
    p.add_argument("--ngram", type=int, default=DEFAULT_NGRAM,
                   help=f"n-gram length in tokens: an ideograph, or a Latin word or number (default {DEFAULT_NGRAM})")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"share of a question's stem a record must hold, with half the question or a long stem (default {DEFAULT_THRESHOLD:g})")
    p.add_argument("--report", metavar="FILE", help="write the Markdown report to FILE too")
    p.add_argument("--json", metavar="FILE", help="write the findings as JSON to FILE")
    g = p.add_argument_group("benchmark data")
    add_data_dir_argument(g)
    g.add_argument("--subjects", help="comma-separated subject keys (default: all six)")
    p.set_defaults(func=run)


def run(args) -> int:
    check_settings(args.ngram, args.threshold)
    outputs = _outputs(args.report, args.json)
    if args.dataset:
        sources = dataset_files(args.dataset_dir or "data", _names(args.dataset))
    elif args.dataset_dir:
        raise HarnessError("--dataset_dir names where --dataset's registry is; with --files, leave it out")
    else:
        sources = corpus_files(args.files)
    questions, benchmark = load_questions(args.data_dir, subject_keys(args.subjects))
    started = time.perf_counter()
    findings = scan(questions, _progress(all_records(sources), sources), args.ngram, args.threshold)
    seconds = time.perf_counter() - started
    record = findings_record(findings, questions, sources, benchmark, seconds)
    markdown = render_markdown(record)
    write_all_or_none({path: text for path, text in (
        (outputs[0], markdown), (outputs[1], json.dumps(record, ensure_ascii=False, indent=2) + "\n")) if path})
    sys.stdout.write(markdown)
    s = record["scanned"]
    print(f"harness contamination: {s['records']} records, {s['bytes'] / 1e6:.1f} MB in {seconds:.1f} s "
          f"({s['bytes'] / 1e6 / max(seconds, 1e-9):.1f} MB/s); {len(findings.found)} questions found", file=sys.stderr)
    return record["exit_code"]


def _progress(records, sources: list[CorpusFile]):
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


# --- what is scanned, and for what ---------------------------------------------------------------


def dataset_files(dataset_dir: str, names: list[str]) -> list[CorpusFile]:
    """The files of registered datasets, each with the columns training reads from it."""
    from training import registry

    entries = registry.read_registry(dataset_dir)
    files = []
    for name in names:
        entry = entries.get(name)
        stage = entry.get("stage") if isinstance(entry, dict) else None
        spec, = registry.resolve(dataset_dir, [name], stage or "pt")  # also: exists, and matches its file_sha1
        files += training_files(spec, stage or "pt")
    return files


def training_files(spec, stage: str) -> list[CorpusFile]:
    """A resolved registry entry (`training.registry.DatasetSpec`) as files to scan, for training at `stage`.

    A column must be there only where training needs it (`training.registry.load`): the prompt, the
    response for sft, and any the registry maps itself; an unmapped default (`input`, `output`, ...)
    is read where the file has it."""
    columns = tuple(dict.fromkeys(c for c in spec.columns.values() if c))
    needed = {"prompt"} | ({"response"} if stage == "sft" else set()) | set(spec.explicit)
    required = {c for role, c in spec.columns.items() if c and role in needed}
    optional = tuple(c for c in columns if c not in required)
    return [CorpusFile(p, KINDS[p.suffix.lower()], columns, spec.name, optional) for p in spec.files]


def all_records(sources: list[CorpusFile]):
    for source in sources:
        yield from read_records(source)


def load_questions(data_dir: str | None, subjects: list[str] | None):
    """The evaluated questions (as published) and where they were read."""
    from tasks import load_benchmark

    data, info = load_benchmark(data_dir, subjects, "none")
    return [q for d in data for q in d.questions], info


# --- the findings as data, and as Markdown -------------------------------------------------------


def findings_record(f: Findings, questions, sources: list[CorpusFile], benchmark: dict, seconds: float) -> dict:
    """Everything the report says, as JSON-ready data (the --json file)."""
    stems = {(q.subject, q.id): q.question for q in questions}
    files = []
    for source in dict.fromkeys(sources):
        stats = f.sources.get(str(source.path))
        size = source.path.stat().st_size if source.path.is_file() else 0
        files.append({"file": str(source.path), "dataset": source.dataset, "kind": source.kind,
                      "records": stats.records if stats else 0, "chars": stats.chars if stats else 0, "bytes": size})
    total_bytes = sum(x["bytes"] for x in files)

    def question(key, matches: list[Match], count: int | None) -> dict:
        return {"subject": key[0], "id": key[1], "stem": stems.get(key, ""), "records": count,
                "matches": [asdict(m) for m in matches]}

    return {
        "schema": SCHEMA,
        "contaminated": f.contaminated,
        "exit_code": 1 if f.contaminated else 0,
        "settings": {"method": METHOD, "ngram": f.ngram, "threshold": f.threshold,
                     "whole_question_share": WHOLE_SHARE, "alone_stem_tokens": alone_stem_tokens(f.ngram)},
        "benchmark": {**benchmark, "questions": sum(f.questions.values())},
        "scanned": {"files": files, "records": f.records, "chars": f.chars, "bytes": total_bytes,
                    "seconds": round(seconds, 3)},
        "subjects": {s: {"questions": n, "found": [k[1] for k in f.found_in(s)]} for s, n in f.questions.items()},
        "found": [question(k, f.found[k], f.found_count[k]) for k in sorted(f.found)],
        "closest_misses": [question(k, [m], None) for k, m in _closest(f)],
        "unmatchable": [{"subject": s, "id": i} for s, i in f.unmatchable],
    }


def _closest(f: Findings) -> list[tuple[tuple[str, int], Match]]:
    misses = [(k, m) for k, m in f.closest_miss.items() if k not in f.found]
    return sorted(misses, key=lambda km: (-km[1].stem_coverage, -km[1].coverage, km[0]))[:CLOSEST_SHOWN]


def render_markdown(record: dict) -> str:
    from reports.markdown import md_escape

    total = record["benchmark"]["questions"]
    found = record["found"]
    s, cfg = record["scanned"], record["settings"]
    head = (f"❌ {len(found)} of {total} evaluated questions found in the training data" if found
            else f"✅ None of the {total} evaluated questions found in the training data")
    datasets = sorted({x["dataset"] for x in s["files"] if x["dataset"]})
    what = f"dataset{'s' if len(datasets) > 1 else ''} {', '.join(datasets)}: " if datasets else ""
    lines = [
        f"## {head}",
        "",
        (f"Scanned {what}{len(s['files'])} file(s), {s['records']} records, {s['bytes'] / 1e6:.1f} MB "
         f"in {s['seconds']:.1f} s. A record holds a question when it holds at least {cfg['threshold']:.0%} of its stem "
         f"and {cfg['whole_question_share']:.0%} of the question with its options (or a stem of at least "
         f"{cfg['alone_stem_tokens']} tokens), by {cfg['ngram']}-token n-grams (`{cfg['method']}`)."),
        "",
        "| subject | questions | found | rows |",
        "|---|--:|--:|---|",
        *(f"| {md_escape(name)} | {v['questions']} | {len(v['found'])} | {', '.join(map(str, v['found'])) or '–'} |"
          for name, v in record["subjects"].items()),
        f"| **all** | {total} | {len(found)} | |",
        "",
    ]
    if found:
        lines += ["### Found", ""]
        for q in found:
            lines += _question_lines(q, md_escape)
    misses = record["closest_misses"]
    if misses:
        lines += ["### Closest below the threshold", "",
                  "Not counted; the records that come nearest, for a human to judge.", ""]
        for q in misses:
            lines += _question_lines(q, md_escape)
    if record["unmatchable"]:
        keys = ", ".join(f"{u['subject']} {u['id']}" for u in record["unmatchable"])
        lines += [f"Not checkable at n = {cfg['ngram']} (shorter than n tokens in all): {md_escape(keys)}.", ""]
    files = "; ".join(f"{md_escape(x['file'])} ({x['records']} records)" for x in s["files"])
    lines += [f"Files: {files}.", ""]
    return "\n".join(lines)


def _question_lines(q: dict, esc) -> list[str]:
    stem = q["stem"].replace("\n", " ")
    stem = stem if len(stem) <= 60 else stem[:59] + "…"
    count = f" — in {q['records']} record{'s' if q['records'] != 1 else ''}" if q["records"] is not None else ""
    out = [f"**{esc(q['subject'])} row {q['id']}**{count}: {esc(stem)}", ""]
    for m in q["matches"]:
        fields = ", ".join(m["fields"])
        where = f"{m['file']} record {m['record']} (line {m['line']}" + (f", {fields}" if fields else "") + ")"
        out.append(f"- {esc(where)}, characters {m['start']}–{m['end']}: stem {m['stem_coverage']:.0%}, "
                   f"question {m['coverage']:.0%} — «{esc(m['excerpt'])}»")
    return out + [""]


# --- `harness train` -----------------------------------------------------------------------------


def check_before_training(targs) -> dict | None:
    """The check `harness train` runs on its datasets before training starts: warns, or refuses with
    `--refuse_contaminated` (ContaminationFound, exit 1). Returns what the training record keeps.

    The benchmark data comes from --eval_devops_data_dir or $HARNESS_DATA_DIR; without either the
    check is skipped, unless --refuse_contaminated asks for a verdict (then it reads the Hub). Silent
    unless it finds something: a later training error stays the one line it is; `log_check` tells
    the rest once training is done."""
    from training import registry

    d, refuse = targs.data, targs.data.refuse_contaminated
    is_main = targs.training.process_index == 0
    if not (is_main or refuse):
        return None  # only the main process writes the record; the others need the answer only to refuse
    specs = registry.resolve(d.dataset_dir, [n.strip() for n in d.dataset.split(",") if n.strip()], targs.finetuning.stage)
    data_dir = targs.devops_eval.eval_devops_data_dir or os.environ.get(DATA_DIR_ENV)
    if not data_dir and not refuse:
        return {"checked": False, "reason": f"no local benchmark data (--eval_devops_data_dir or ${DATA_DIR_ENV})"}
    questions, benchmark = load_questions(data_dir, None)
    files = [f for spec in specs for f in training_files(spec, targs.finetuning.stage)]
    summary = training_summary(scan(questions, all_records(files)), benchmark, files)
    if summary["contaminated"]:
        first = summary["found"][0]
        message = (
            f"--dataset {d.dataset} holds {summary['questions']} of the {len(questions)} evaluated questions "
            f"(e.g. {first['subject']} row {first['id']} in {first['file']} record {first['record']}); "
            f"`harness contamination --dataset {d.dataset} --dataset_dir {d.dataset_dir}` reports them all"
        )
        if refuse:
            raise ContaminationFound(f"refusing to train (--refuse_contaminated): {message}")
        if is_main:
            log.warning("contamination: %s; scores of this model on them will not mean much", message)
    return summary


def log_check(result: dict | None) -> None:
    """What the check before training found, in a line, for the end of `harness train`."""
    if result is None:
        return
    if not result["checked"]:
        log.warning("contamination check skipped: %s; run `harness contamination --dataset ...` on the training data", result["reason"])
    elif result["contaminated"]:
        log.warning("contamination: trained on %d evaluated question(s); see contamination in harness_train.json", result["questions"])
    else:
        logging.getLogger("harness.training").info("contamination check: none of the evaluated questions in the training data")


def training_summary(f: Findings, benchmark: dict, files: list[CorpusFile]) -> dict:
    """The training record's `contamination`: enough for the gate and the leaderboard to flag a model."""
    per_dataset: dict[str, set] = {x.dataset: set() for x in files}
    found = []
    for key in sorted(f.found):
        for m in f.found[key]:
            per_dataset.setdefault(m.dataset, set()).add(key)
        m = f.found[key][0]
        found.append({"subject": key[0], "id": key[1], "dataset": m.dataset, "file": m.file, "record": m.record,
                      "line": m.line, "stem_coverage": m.stem_coverage, "coverage": m.coverage})
    return {
        "checked": True,
        "contaminated": f.contaminated,
        "questions": len(f.found),
        "method": METHOD,
        "ngram": f.ngram,
        "threshold": f.threshold,
        "benchmark": benchmark,
        "datasets": {name: {"questions": len(keys)} for name, keys in per_dataset.items()},
        "found": found,
    }
