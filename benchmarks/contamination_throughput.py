"""Throughput of `harness contamination` on a generated corpus: MB/s over the bytes of the files.

    python benchmarks/contamination_throughput.py --mb 300 --data-dir ../shared/data [--format jsonl]

Writes a corpus of about --mb megabytes into a temporary directory (removed afterwards; nothing is
kept in the repository): DevOps-like Chinese and English text recombined from this repository's own
example training data, with random ideographs, commands and numbers, one record per line, and
--plant questions of the benchmark hidden in it. Then runs the same reading and matching as the
command and prints the throughput, and checks that exactly the planted questions were found.
The CPU and the machine's load during the scan are printed too (benchmarks/machine.py): a
throughput measured beside other busy processes is flagged BUSY.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import LoadWatch, cpu_facts, describe, describe_cpu
from harness.contamination import all_records, corpus_files, load_questions
from tasks.contamination import scan

WORDS = ["kubectl", "docker", "nginx", "pipeline", "Prometheus", "Grafana", "deploy", "rollback", "HTTP/2",
         "TLS", "etcd", "Helm", "Terraform", "Ansible", "CPU", "P99", "SLO", "Jenkins", "GitLab", "systemd"]


def sentences() -> list[str]:
    """Sentences of the repository's example training data (original text, Apache-2.0)."""
    data = ROOT / "training" / "data"
    texts = [json.loads(line)["text"] for line in (data / "devops_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in json.loads((data / "devops_qa.json").read_text(encoding="utf-8")):
        texts += [row["instruction"], row["output"]]
    out = []
    for t in texts:
        out += [s + "。" for s in t.replace("！", "。").replace("？", "。").split("。") if s.strip()]
    return out


def paragraph(rng: random.Random, pool: list[str]) -> str:
    parts = []
    for _ in range(rng.randint(2, 12)):
        r = rng.random()
        if r < 0.7:
            parts.append(rng.choice(pool))
        elif r < 0.85:
            parts.append("".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(5, 40))) + "，")
        else:
            parts.append(f" {rng.choice(WORDS)} --{rng.choice(WORDS).lower()}={rng.randint(0, 65535)} ")
    return "".join(parts)


def write_corpus(path: Path, megabytes: float, fmt: str, planted: list[str], seed: int = 0) -> int:
    rng = random.Random(seed)
    pool = sentences()
    lines = [paragraph(rng, pool) for _ in range(20000)]
    target, size, records = megabytes * 1e6, 0, 0
    at = sorted(rng.uniform(0, target) for _ in planted)
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            f.write("text,source\n")
        while size < target:
            text = rng.choice(lines)
            if at and size >= at[0]:
                at.pop(0)
                text = text + planted[len(planted) - len(at) - 1] + text[:20]
            if fmt == "jsonl":
                line = json.dumps({"text": text, "meta": {"id": records}}, ensure_ascii=False) + "\n"
            elif fmt == "csv":
                line = '"' + text.replace('"', '""') + f'",gen-{records}\n'
            else:
                line = text.replace("\n", " ") + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
            records += 1
    return records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=300, help="corpus size in MB (default 300)")
    p.add_argument("--format", choices=("jsonl", "txt", "csv"), default="jsonl")
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--plant", type=int, default=5, help="questions hidden in the corpus (default 5)")
    args = p.parse_args()
    watch = LoadWatch()  # before anything of ours runs: the load average is the machine's

    questions, _ = load_questions(args.data_dir, None)
    rng = random.Random(1)
    chosen = rng.sample(questions, args.plant)
    planted = ["\n".join([q.question, *(f"{x}. {o}" for x, o in zip("ABCD", q.options))]) for q in chosen]
    tmp = Path(tempfile.mkdtemp(prefix="contamination-bench-"))
    try:
        corpus = tmp / f"corpus.{args.format}"
        started = time.perf_counter()
        records = write_corpus(corpus, args.mb, args.format, planted)
        size = corpus.stat().st_size
        print(f"generated {size / 1e6:.1f} MB, {records} records ({args.format}) in {time.perf_counter() - started:.1f} s")
        started, cpu = time.perf_counter(), time.process_time()
        findings = scan(questions, all_records(corpus_files([str(corpus)])))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        load = watch.finish()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = set(findings.found)
    expected = {(q.subject, q.id) for q in chosen}
    print(f"scanned {size / 1e6:.1f} MB ({findings.records} records, {findings.chars / 1e6:.1f} M characters) "
          f"in {seconds:.1f} s: {size / 1e6 / seconds:.1f} MB/s ({size / 1e6 / cpu:.1f} MB per CPU second; one process)")
    print(f"planted {len(expected)} questions; found {len(found & expected)} of them and {len(found - expected)} others")
    print(f"{describe_cpu(cpu_facts())}; {describe(load)}")
    return 0 if found >= expected else 1


if __name__ == "__main__":
    sys.exit(main())
