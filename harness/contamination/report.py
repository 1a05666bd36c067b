"""What a scan found, as JSON-ready data (the --json file) and as the Markdown report."""

from __future__ import annotations

from dataclasses import asdict

from harness.contamination.corpus import CorpusFile
from tasks.contamination import METHOD, WHOLE_SHARE, Findings, Match, alone_stem_tokens

SCHEMA = "devops-eval/contamination/1"
CLOSEST_SHOWN = 10


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
