"""One process against two (torchrun, gloo on CPU) on the same model and questions.

Each run is a whole `harness eval` process tree; the table gives wall seconds, questions/s, the
speed-up of two processes over one, and the per-question agreement of their predictions.

    python benchmarks/data_parallel.py --data-dir ../shared/data                 # Gemma 3 270M, 5-shot, all 574
    python benchmarks/data_parallel.py --model DIR --shots 0 --limit 20         # any model, a subset

On a machine with C cores, one process uses C threads and each of N processes C/N (torchrun
sets OMP_NUM_THREADS=1 unless told otherwise): the speed-up measures how well work splits, not
extra hardware. On GPUs each process takes its own device (cuda:LOCAL_RANK). The CPU and the
machine's load are recorded (benchmarks/machine.py); figures measured on a busy machine are
flagged and not written over benchmarks/results/ unless --allow-busy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import CpuMeter, LoadWatch, count_busy_rows, cpu_facts, describe, describe_cpu, refuse_busy_overwrite, row_is_busy


def run(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def predictions(run_dir: Path) -> dict:
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    return {(s["subject"], s["id"]): s["pred"] for s in map(json.loads, lines)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--shots", default="5")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--limit", type=int)
    p.add_argument("--processes", default="1,2")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "data_parallel.json"))
    p.add_argument("--allow-busy", action="store_true", help="write figures measured on a busy machine into benchmarks/results/ too")
    args = p.parse_args()

    watch = LoadWatch()  # before anything of ours runs: the load average is the machine's
    work = Path(tempfile.mkdtemp(prefix="data-parallel-"))
    common = ["eval", "--model", args.model, "--shots", args.shots, "--dtype", args.dtype, "--data-dir", args.data_dir,
              "--no-progress", *(["--limit", str(args.limit)] if args.limit else [])]
    env = dict(os.environ)
    threads = os.cpu_count() or 1
    # Convert a named model once, outside the timings.
    subprocess.run([sys.executable, "-m", "harness", *common, "--limit", "1", "--output", str(work / "warm")],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = []
    for n in [int(x) for x in args.processes.split(",")]:
        out = work / f"np{n}"
        if n == 1:
            cmd = [sys.executable, "-m", "harness", *common, "--output", str(out)]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "harness", *common, "--output", str(out)]
        env["OMP_NUM_THREADS"] = str(max(1, threads // n))
        meter = CpuMeter()
        wall = run(cmd, env)
        others = meter.other_cores()
        results = json.loads((out / "results.json").read_text())
        rows.append({"processes": n, "threads_each": max(1, threads // n), "wall_s": round(wall, 1),
                     "questions": results["overall"]["n"], "questions_per_s": round(results["overall"]["n"] / wall, 2),
                     "accuracy": results["overall"]["micro"], "other_cores": others,
                     "busy": row_is_busy(others)})
    load = count_busy_rows(watch.finish(), rows)
    base = predictions(work / "np1")
    for row in rows:
        preds = predictions(work / f"np{row['processes']}")
        row["speedup"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
        row["agreement"] = sum(preds[k] == v for k, v in base.items()) / len(base)
    machine = cpu_facts()
    report = {"model": args.model, "shots": args.shots, "dtype": args.dtype, "machine": machine, "load": load,
              "busy": load["busy"], "rows": rows}
    print(f"{args.model}, {args.shots}-shot, {args.dtype}, {rows[0]['questions']} questions, {describe_cpu(machine)}")
    print(describe(load) + "\n")
    print("| processes | threads each | wall s | q/s | speed-up | agreement with 1 process |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} | {r['threads_each']} | {r['wall_s']} | {r['questions_per_s']} | {r['speedup']}x | "
              f"{100 * r['agreement']:.2f}%{' BUSY' if r['busy'] else ''} |")
    refusal = refuse_busy_overwrite(Path(args.json), load, args.allow_busy)
    if refusal:
        kept = work / Path(args.json).name
        kept.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{refusal}; the figures are in {kept}", file=sys.stderr)
        return 3
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
