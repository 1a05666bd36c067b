"""The numbers behind `harness contamination`'s n-gram length and threshold, on the staged benchmark data.

    python benchmarks/contamination_calibration.py --data-dir ../shared/data [--ngram 8 10 13 16 20]

Recall: every one of the 574 questions, disguised in turn (verbatim; respaced with other
punctuation; Kangxi look-alikes mapped; options reordered; the stem alone; one character of the
stem replaced), as a training record of its own: the share found. False positives, on real text
that is not the question: each question against the other 573 (the benchmark's own repeated and
similar questions), the few-shot dev rows formatted as exam questions, and the repository's DevOps
example data. Prints Markdown tables; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.contamination import DEFAULT_NGRAM, DEFAULT_THRESHOLD, TextRecord, scan
from tasks.data import normalize_text


def exam(q, order=(0, 1, 2, 3)) -> str:
    return q.question + "\n" + "\n".join(f"{x}. {q.options[i]}" for x, i in zip("ABCD", order))


def respaced(text: str) -> str:
    text = text.translate(str.maketrans({"，": ",", "。": ".", "：": ":", "（": "(", "）": ")", "？": "?"}))
    return re.sub(r"(?<=[\u4e00-\u9fff])(?=[\u4e00-\u9fff])", " ", text).replace("\n", "\n\t ")


def edited(q) -> str:
    """One ideograph in the middle of the stem replaced by another."""
    s = q.question
    at = [i for i, c in enumerate(s) if "\u4e00" <= c <= "\u9fff"]
    if at:
        i = at[len(at) // 2]
        s = s[:i] + ("甲" if s[i] != "甲" else "乙") + s[i + 1 :]
    return exam(replace(q, question=s))


DISGUISES = {
    "verbatim": exam,
    "respaced": lambda q: respaced(exam(q)),
    "Kangxi mapped": lambda q: normalize_text(exam(q), "kangxi"),
    "options reordered": lambda q: exam(q, (3, 2, 1, 0)),
    "stem alone": lambda q: q.question,
    "stem edited": edited,
}


def recall(questions, disguise, n, threshold) -> float:
    records = [TextRecord("c", i, 1, (("text", disguise(q)),)) for i, q in enumerate(questions)]
    f = scan(questions, records, n, threshold)
    hits = sum(any(m.record == i for m in f.found.get((q.subject, q.id), [])) for i, q in enumerate(questions))
    return hits / len(questions)


def false_positives(questions, dev, examples, n, threshold) -> tuple[int, int, int, int]:
    own = scan(questions, [TextRecord(q.subject, q.id, 1, (("text", exam(q)),)) for q in questions], n, threshold)
    pairs = {frozenset({k, (m.file, m.record)}) for k, ms in own.found.items() for m in ms if (m.file, m.record) != k}
    found_dev = scan(questions, [TextRecord(q.subject, q.id, 1, (("text", exam(q)),)) for q in dev], n, threshold)
    found_examples = scan(questions, [TextRecord("examples", i, 1, (("text", t),)) for i, t in enumerate(examples)], n, threshold)
    return len(own.unmatchable), len(pairs), len(found_dev.found), len(found_examples.found)


def example_texts() -> list[str]:
    data = ROOT / "training" / "data"
    texts = [json.loads(line)["text"] for line in (data / "devops_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in json.loads((data / "devops_qa.json").read_text(encoding="utf-8")):
        texts.append("\n".join([row["instruction"], row["input"], row["output"]]))
    return texts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--ngram", type=int, nargs="+", default=[8, 10, 13, 16, 20])
    p.add_argument("--threshold", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 1.0])
    args = p.parse_args()
    from tasks import load_benchmark

    data, _ = load_benchmark(args.data_dir, None, "none")
    questions = [q for d in data for q in d.questions]
    dev = [q for d in data for q in d.shots]
    examples = example_texts()

    def table(title, rows):
        print(f"\n{title}\n")
        print("| " + " | ".join(["setting", *DISGUISES, "no n-gram", "benchmark pairs found", "dev rows found", "example texts found"]) + " |")
        print("|" + "---|" * (len(DISGUISES) + 5))
        for label, n, t in rows:
            r = [f"{100 * recall(questions, d, n, t):.1f}%" for d in DISGUISES.values()]
            print(f"| {label} | " + " | ".join(r + [str(x) for x in false_positives(questions, dev, examples, n, t)]) + " |")

    table(f"n-gram length (threshold {DEFAULT_THRESHOLD:g}):", [(f"n = {n}", n, DEFAULT_THRESHOLD) for n in args.ngram])
    table(f"threshold (n = {DEFAULT_NGRAM}):", [(f"T = {t:g}", DEFAULT_NGRAM, t) for t in args.threshold])
    return 0


if __name__ == "__main__":
    sys.exit(main())
