"""Questions per second on the `general` group (every CMMLU and C-Eval subject outside DevOps),
zero- and five-shot, and whether the prefix cache and batching hold at that size.

Each setting is one whole `harness eval` process (imports, model load, scoring) with its peak RSS;
printed and written to JSON: questions/s (whole process and scoring alone), the five-/zero-shot
ratio of the whole process (the bar: ≤ 1.3), prompt tokens against tokens computed, and the peak
RSS of a run on a few subjects against one on all of them (memory must not grow with subjects).

    python benchmarks/general_speed.py --data-dir ../shared/data                # Gemma 3 270M bf16, all 11,976 questions
    python benchmarks/general_speed.py --data-dir ../shared/data --limit 20     # 20 per subject: a few minutes
    python benchmarks/general_speed.py --data-dir ../shared/data --model DIR --limit 2   # any model, a quick look
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

from benchmarks.machine import LoadWatch, cpu_facts, describe, describe_cpu, refuse_busy_overwrite  # noqa: E402


def run_eval(model: str, dtype: str, group: str, shots: int, limit: int | None, data_dir: str, work: Path) -> dict:
    """One `harness eval` process: wall seconds, peak RSS of the child, and its record's timings."""
    out = work / f"{group}-{shots}shot".replace(",", "+")
    cmd = [sys.executable, "-m", "harness", "eval", "--model", model, "--dtype", dtype, "--protocol", "lm-eval",
           "--shots", str(shots), "--group", group, "--data-dir", data_dir, "--output", str(out), "--no-progress"]
    if limit:
        cmd += ["--limit", str(limit)]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: its peak RSS, not the largest so far
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if child.returncode != 0:
            err.seek(0)
            last = err.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            raise SystemExit(f"general_speed: {' '.join(cmd)} failed: {last}")
    rss = usage.ru_maxrss  # KiB on Linux
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    t = record["runtime"]["timings"]
    n = record["overall"]["n"]
    return {
        "group": group, "shots": shots, "subjects": len(record["task"]["subjects"]), "questions": n,
        "wall_seconds": round(wall, 2), "questions_per_second": round(n / wall, 2),
        "score_seconds": t["score_seconds"], "scoring_questions_per_second": t["questions_per_second"],
        "load_seconds": t["load_seconds"], "prepare_seconds": t["prepare_seconds"],
        "prompt_tokens": t["prompt_tokens"], "computed_tokens": t["computed_tokens"],
        "peak_rss_mib": round(rss / 1024, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"), required=not os.environ.get("HARNESS_DATA_DIR"))
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--group", default="general")
    p.add_argument("--few", default="ceval-humanities", help="a small group whose peak RSS is set against --group's")
    p.add_argument("--limit", type=int, help="questions per subject (default: all)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "general_speed.json")
    p.add_argument("--allow-busy", action="store_true", help="write figures measured on a busy machine")
    args = p.parse_args(argv)

    facts = cpu_facts()
    with tempfile.TemporaryDirectory(prefix="general-speed-") as tmp:
        work = Path(tmp)
        # The model is assembled or downloaded once, before anything is timed.
        run_eval(args.model, args.dtype, args.few, 0, 1, args.data_dir, work / "warm-up")
        watch = LoadWatch()
        few = run_eval(args.model, args.dtype, args.few, 0, args.limit, args.data_dir, work)
        zero = run_eval(args.model, args.dtype, args.group, 0, args.limit, args.data_dir, work)
        five = run_eval(args.model, args.dtype, args.group, 5, args.limit, args.data_dir, work)
        load = watch.finish()
    result = {
        "benchmark": "general_speed", "model": args.model, "dtype": args.dtype, "protocol": "lm-eval",
        "limit": args.limit, "machine": facts, "load": load, "busy": load["busy"],
        "runs": {"few_subjects": few, "zero_shot": zero, "five_shot": five},
        "five_to_zero_wall": round(five["wall_seconds"] / zero["wall_seconds"], 3),
        "five_to_zero_scoring": round(five["score_seconds"] / zero["score_seconds"], 3),
        "computed_tokens_five_to_zero": round(five["computed_tokens"] / zero["computed_tokens"], 3),
        "peak_rss_all_to_few": round(zero["peak_rss_mib"] / few["peak_rss_mib"], 3),
    }
    for name, r in (("zero-shot", zero), ("five-shot", five), (f"{args.few} (0-shot)", few)):
        print(f"{name:<28} {r['subjects']:>4} subjects {r['questions']:>6} questions  {r['wall_seconds']:>8.1f} s  "
              f"{r['questions_per_second']:>7.2f} q/s (scoring {r['scoring_questions_per_second']} q/s)  "
              f"tokens {r['prompt_tokens']:,} prompt / {r['computed_tokens']:,} computed  peak RSS {r['peak_rss_mib']} MiB")
    print(f"five-/zero-shot: whole process {result['five_to_zero_wall']}x, scoring {result['five_to_zero_scoring']}x, "
          f"tokens computed {result['computed_tokens_five_to_zero']}x; peak RSS, {zero['subjects']} subjects against "
          f"{few['subjects']}: {result['peak_rss_all_to_few']}x")
    print(f"machine: {describe_cpu(facts)}; {describe(load)}")
    refusal = refuse_busy_overwrite(args.json, load, args.allow_busy)
    if refusal:
        print(f"general_speed: {refusal}", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
