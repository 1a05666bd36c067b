"""The harness against lm-evaluation-harness on the same model, data and machine, in one run.

Gemma 3 270M, all 574 questions, lm-eval protocol, zero- and five-shot, bf16 and fp32. Each
measurement is a whole process (imports, model load, scoring), timed with its peak RSS:

1. lm-eval itself (HF backend) on the tasks `harness tasks export-lm-eval` writes, at each batch
   size asked (its best bf16 time is the one compared),
2. `harness eval --protocol lm-eval`.

Printed: wall seconds, questions/s, prompt tokens/s, peak RSS, the harness/lm-eval speed ratio,
per-question agreement (with the top-two margins of any disagreement), and the achieved model
FLOP/s as a fraction of this machine's bf16 and fp32 matmul throughput, measured in the same run.
Everything also goes to a JSON file.

    python benchmarks/lm_eval_speed.py --data-dir ../shared/data                    # the full table (~40 min on 2 cores)
    python benchmarks/lm_eval_speed.py --data-dir ../shared/data --quick            # the harness alone (a few minutes)
    python benchmarks/lm_eval_speed.py --data-dir ../shared/data --quick --limit 20 # a shorter look

`--quick` times the harness alone, bf16 and fp32, zero- and five-shot: wall and scoring seconds
(the run record's `timings.score_seconds`), model FLOP/s of scoring as a fraction of the matmul
rate measured in the same run, and the five-/zero-shot ratio; written to
`benchmarks/results/lm_eval_speed_quick.json`. Both modes record the CPU (model, AMX, AVX-512
BF16) and the machine's load (benchmarks/machine.py): a run beside other busy processes is flagged
BUSY, and its figures are not written over benchmarks/results/ unless `--allow-busy`.

FLOPs are counted from token positions, not measured: per position 2 x (non-embedding linear
weights), plus attention 4 x heads x head_dim x (keys visible: the sliding window caps it on
sliding layers), plus 2 x hidden x vocab wherever a tool projects onto the vocabulary (lm-eval: every
position; the harness: each question's last position). The harness computes the shared few-shot
prefix once per subject; lm-eval computes every prompt whole, once per question.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import (
    CpuMeter,
    LoadWatch,
    count_busy_rows,
    cpu_facts,
    describe,
    describe_cpu,
    refuse_busy_overwrite,
    row_is_busy,
    wait_until_idle,
)

# --- measuring ----------------------------------------------------------------------------------


def matmul_gflops(dtype: str, n: int = 2048, seconds: float = 3.0) -> float:
    """This machine's dense matmul rate for `dtype` with torch's default threads."""
    import torch

    t = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=t), torch.randn(n, n, dtype=t)
    for _ in range(3):
        a @ b
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run a command to completion: (wall seconds, peak RSS in GB of that process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024**2


# --- token and FLOP accounting --------------------------------------------------------------------


def prompt_lengths(model_dir: Path, data, shots: int, limit: int | None) -> list[list[int]]:
    """Token ids of every prompt as both tools feed them (lm-eval protocol), per subject."""
    from transformers import AutoTokenizer

    from harness.prompts import PromptFormat, subject_prompts
    from harness.scoring import encode_prompts
    from tasks import get_protocol

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = PromptFormat(get_protocol("lm-eval"), shots)
    groups = []
    for d in data:
        prompts = [p for _, p in subject_prompts(d, fmt, limit=limit)]
        groups.append([e.input_ids for e in encode_prompts(tokenizer, prompts, fmt.protocol.continuations(), move_trailing_whitespace=True)])
    return groups


class FlopModel:
    """Matmul FLOPs of a decoder forward pass, position by position."""

    def __init__(self, model_dir: Path):
        config = json.loads((model_dir / "config.json").read_text())
        self.d = config["hidden_size"]
        self.vocab = config["vocab_size"]
        heads, kv, hd = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
        inter = config["intermediate_size"]
        self.layers = config.get("layer_types") or ["full_attention"] * config["num_hidden_layers"]
        self.window = config.get("sliding_window") or 10**9
        self.attn_width = heads * hd
        linear = self.d * heads * hd + 2 * self.d * kv * hd + heads * hd * self.d + 3 * self.d * inter
        self.per_position = 2 * linear * len(self.layers)

    def positions(self, start: int, end: int) -> float:
        """FLOPs of computing positions start..end-1 of one sequence (no vocabulary projection)."""
        t = np.arange(start, end, dtype=np.float64)
        attention = sum(
            4 * self.attn_width * (np.minimum(t + 1, self.window) if kind == "sliding_attention" else t + 1).sum()
            for kind in self.layers
        )
        return self.per_position * (end - start) + attention

    def head(self, positions: int) -> float:
        return 2.0 * self.d * self.vocab * positions


def harness_flops(fm: FlopModel, groups: list[list[tuple[int, ...]]]) -> float:
    from harness.scoring import common_prefix_len

    total = 0.0
    for ids in groups:
        prefix = common_prefix_len(ids)
        total += fm.positions(0, prefix) + sum(fm.positions(prefix, len(x)) for x in ids) + fm.head(len(ids))
    return total


def lm_eval_flops(fm: FlopModel, groups: list[list[tuple[int, ...]]]) -> float:
    return sum(fm.positions(0, len(x)) + fm.head(len(x)) for ids in groups for x in ids)


# --- agreement ------------------------------------------------------------------------------------


def harness_timings(run_dir: Path) -> dict:
    """What the run record says about where the time went (load, preparation, scoring)."""
    return json.loads((run_dir / "results.json").read_text())["runtime"]["timings"]


def harness_scores(run_dir: Path) -> dict[str, list[float]]:
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    return {f"{s['subject']}:{s['id']}": s["logits"] for s in map(json.loads, lines)}


def margin(scores: list[float]) -> float:
    top = np.sort(np.asarray(scores, dtype=np.float64))[-2:]
    return float(top[1] - top[0])


def bf16_step(x: float) -> float:
    """The spacing of bfloat16 numbers at |x| (8 significant bits)."""
    return float(2.0 ** (np.floor(np.log2(max(abs(x), 1e-30))) - 7))


def bf16_margin_error(bf16: dict, fp32: dict) -> float:
    """How far bf16 moves a question's top-two margin: the 99th percentile, over all questions, of
    |bf16 margin - fp32 margin| between the two letters fp32 ranks first (same tool, same prompts)."""
    errors = []
    for k, f in fp32.items():
        a, b = np.argsort(-np.asarray(f))[:2]
        errors.append(abs((bf16[k][a] - bf16[k][b]) - (f[a] - f[b])))
    return float(np.percentile(errors, 99))


def agreement(ours: dict, theirs: dict, fp32_ours: dict | None = None, noise: float | None = None) -> dict:
    """How many questions two score sets answer alike. With bf16 scores, each disagreement is
    checked for being a near-tie: lm-eval's own two best log-probabilities within one bf16 step of
    each other (it cannot tell them apart), or the question's fp32 margin within the margin error
    bf16 causes (`noise`, from `bf16_margin_error`)."""
    keys = sorted(set(ours) & set(theirs))
    differ = [k for k in keys if int(np.argmax(ours[k])) != int(np.argmax(theirs[k]))]
    detail = []
    for k in differ:
        top = np.sort(np.asarray(theirs[k], dtype=np.float64))[-2:]
        row = {"question": k, "harness_margin": margin(ours[k]), "lm_eval_margin": margin(theirs[k]),
               "lm_eval_bf16_step": bf16_step(top[1])}
        if fp32_ours and k in fp32_ours:
            row["fp32_margin"] = margin(fp32_ours[k])
        if noise is not None:
            row["near_tie"] = bool(row["lm_eval_margin"] <= row["lm_eval_bf16_step"] or row.get("fp32_margin", np.inf) <= noise)
        detail.append(row)
    out = {"questions": len(keys), "same": len(keys) - len(differ), "rate": (len(keys) - len(differ)) / max(1, len(keys)),
           "disagreements": detail}
    if noise is not None:
        out["bf16_margin_error_p99"] = noise
        out["near_ties"] = sum(d["near_tie"] for d in detail)
    return out


# --- the run ------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--quick", action="store_true", help="the harness alone: both dtypes, both shot counts, its efficiency (minutes)")
    p.add_argument("--shots", default="0,5")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--lm-eval-batch-sizes", default="1,8", help="bf16 batch sizes tried for lm-eval (its best is compared)")
    p.add_argument("--lm-eval-fp32-batch-size", default="1",
                   help="fp32 lm-eval is run for agreement; at bs 8 its full-vocabulary logits need ~20 GB five-shot")
    p.add_argument("--harness-batch-size", default="8")
    p.add_argument("--limit", type=int, help="questions per subject (a quick look; the bars are judged on all 574)")
    p.add_argument("--json", help="where the figures go (default benchmarks/results/lm_eval_speed[_quick].json)")
    p.add_argument("--allow-busy", action="store_true", help="write figures measured on a busy machine into benchmarks/results/ too")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="first wait up to this long for the load average to fall below 0.5 (it lingers after a previous run)")
    p.add_argument("--matmul-seconds", type=float, default=3.0, help="how long each dtype's matmul rate is measured (default 3)")
    p.add_argument("--work-dir", help="keep each measurement here and reuse finished ones on a rerun (default: a new temp dir)")
    args = p.parse_args()
    target = Path(args.json or ROOT / "benchmarks" / "results" / f"lm_eval_speed{'_quick' if args.quick else ''}.json")
    wait_until_idle(args.wait_idle)
    watch = LoadWatch()  # before anything of ours runs: the load average is the machine's, not our set-up's

    from harness.commands.args import cache_dir
    from harness.models import NAMED_MODELS
    from tasks import devops_subjects, load_local

    model_dir = NAMED_MODELS["gemma-3-270m"](cache_dir())  # converted once, before any timing
    data = load_local(args.data_dir, devops_subjects())
    shots_list = [int(x) for x in args.shots.split(",")]
    dtypes = args.dtypes.split(",")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="lm-eval-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    tasks_dir = work / "tasks"
    if not args.quick:
        subprocess.run([sys.executable, "-m", "harness", "tasks", "export-lm-eval", str(tasks_dir), "--data-dir", args.data_dir],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    fm = FlopModel(model_dir)
    measured_machine = work / "machine.json"  # reused with the measurements it belongs to
    if measured_machine.is_file():
        machine = json.loads(measured_machine.read_text())
    else:
        machine = {**cpu_facts(), **{f"{dt}_matmul_gflops": round(matmul_gflops(dt, seconds=args.matmul_seconds), 1)
                                     for dt in ("bfloat16", "float32")}}
        measured_machine.write_text(json.dumps(machine))
    print(f"machine: {machine}", flush=True)
    limit = ["--limit", str(args.limit)] if args.limit else []

    rows, scores = [], {}
    for shots in shots_list:
        groups = prompt_lengths(model_dir, data, shots, args.limit)
        n = sum(len(g) for g in groups)
        tokens = sum(len(x) for g in groups for x in g)
        flops = {"harness": harness_flops(fm, groups), "lm-eval": lm_eval_flops(fm, groups)}
        runs = [("harness", dt, args.harness_batch_size) for dt in dtypes]
        if not args.quick:
            runs += [("lm-eval", "bfloat16", bs) for bs in args.lm_eval_batch_sizes.split(",") if "bfloat16" in dtypes]
            runs += [("lm-eval", "float32", args.lm_eval_fp32_batch_size)] if "float32" in dtypes else []
        for tool, dtype, bs in runs:
            out = work / f"{tool}-{dtype}-bs{bs}-{shots}shot{'-limit' + str(args.limit) if args.limit else ''}"
            measured = Path(str(out) + ".row.json")  # a finished measurement, reused on a rerun
            row = json.loads(measured.read_text()) if measured.is_file() else None
            if row and (tool != "harness" or "score_s" in row):  # (rows of an older script lack the scoring split)
                rows.append(row)
                scores[(tool, dtype, bs, shots)] = (
                    harness_scores(out) if tool == "harness" else json.loads(Path(str(out) + ".json").read_text())["loglik"]
                )
                print(json.dumps(row), flush=True)
                continue
            shutil.rmtree(out, ignore_errors=True)  # a measurement killed half-way is not resumed but redone
            if tool == "harness":
                cmd = [sys.executable, "-m", "harness", "eval", "--model", str(model_dir), "--protocol", "lm-eval",
                       "--shots", str(shots), "--dtype", dtype, "--batch-size", bs, "--data-dir", args.data_dir,
                       "--output", str(out), "--no-progress", *limit]
            else:
                cmd = [sys.executable, str(ROOT / "benchmarks" / "run_lm_eval.py"), "--model", str(model_dir),
                       "--tasks-dir", str(tasks_dir), "--shots", str(shots), "--dtype", dtype, "--batch-size", bs,
                       "--out", str(out) + ".json", *limit]
            meter = CpuMeter()
            wall, rss = timed(cmd)
            others = meter.other_cores()
            scores[(tool, dtype, bs, shots)] = (
                harness_scores(out) if tool == "harness" else json.loads(Path(str(out) + ".json").read_text())["loglik"]
            )
            dt_peak = machine[f"{dtype}_matmul_gflops"]
            row = {"tool": tool, "dtype": dtype, "batch_size": bs, "shots": shots, "questions": n, "wall_s": round(wall, 1),
                   "questions_per_s": round(n / wall, 2), "tokens_per_s": round(tokens / wall, 1), "peak_rss_gb": round(rss, 2),
                   "gflop": round(flops[tool] / 1e9, 1), "gflops_per_s": round(flops[tool] / wall / 1e9, 1),
                   "fraction_of_matmul_peak": round(flops[tool] / wall / 1e9 / dt_peak, 3)}
            if tool == "harness":  # where the time went, from the run record
                t = harness_timings(out)
                score_s = t["score_seconds"]
                startup = t.get("startup_seconds")  # process start to the first question scored
                row.update({"score_s": round(score_s, 1), "outside_scoring_s": round(wall - score_s, 1),
                            "startup_s": None if startup is None else round(startup, 2),
                            "load_s": round(t["load_seconds"], 1), "prepare_s": round(t["prepare_seconds"], 1),
                            "scoring_gflops_per_s": round(flops[tool] / score_s / 1e9, 1),
                            "scoring_fraction_of_matmul_peak": round(flops[tool] / score_s / 1e9 / dt_peak, 3)})
            row["other_cores"] = others
            row["busy"] = row_is_busy(others)
            rows.append(row)
            measured.write_text(json.dumps(row))
            print(json.dumps(row), flush=True)

    load = count_busy_rows(watch.finish(), rows)
    summary = quick_summary(rows, scores, shots_list, dtypes) if args.quick else summarize(rows, scores, shots_list, dtypes)
    report = {"mode": "quick" if args.quick else "full", "machine": machine, "load": load, "busy": load["busy"],
              "model": "gemma-3-270m", "rows": rows, **summary}
    print(render_quick(report) if args.quick else render(report))
    refusal = refuse_busy_overwrite(target, load, args.allow_busy)
    if refusal:
        kept = work / target.name
        kept.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{refusal}; the figures are in {kept}", file=sys.stderr)
        return 3
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def summarize(rows, scores, shots_list, dtypes) -> dict:
    def row(tool, dtype, shots, bs=None):
        matches = [r for r in rows if r["tool"] == tool and r["dtype"] == dtype and r["shots"] == shots and (bs is None or r["batch_size"] == bs)]
        return min(matches, key=lambda r: r["wall_s"]) if matches else None

    out = {"speedup": {}, "agreement": {}, "five_vs_zero_shot": {}}
    for shots in shots_list:
        for dtype in dtypes:
            ours, best = row("harness", dtype, shots), row("lm-eval", dtype, shots)
            if ours and best:
                out["speedup"][f"{dtype}/{shots}-shot"] = {"harness_s": ours["wall_s"], "lm_eval_best_s": best["wall_s"],
                                                           "lm_eval_best_batch_size": best["batch_size"],
                                                           "ratio": round(best["wall_s"] / ours["wall_s"], 2),
                                                           "harness_rss_gb": ours["peak_rss_gb"]}
        fp32_row, bf16_row = row("harness", "float32", shots), row("harness", "bfloat16", shots)
        fp32 = scores[("harness", "float32", fp32_row["batch_size"], shots)] if fp32_row else None
        noise = (bf16_margin_error(scores[("harness", "bfloat16", bf16_row["batch_size"], shots)], fp32)
                 if fp32 and bf16_row else None)
        for dtype in dtypes:
            ours = row("harness", dtype, shots)
            for ref in [r for r in rows if r["tool"] == "lm-eval" and r["dtype"] == dtype and r["shots"] == shots]:
                key = f"{dtype}/{shots}-shot vs lm-eval bs {ref['batch_size']}"
                out["agreement"][key] = agreement(scores[("harness", dtype, ours["batch_size"], shots)],
                                                  scores[("lm-eval", dtype, ref["batch_size"], shots)],
                                                  fp32 if dtype != "float32" else None,
                                                  noise if dtype != "float32" else None)
        refs = [r for r in rows if r["tool"] == "lm-eval" and r["dtype"] == "bfloat16" and r["shots"] == shots]
        if len(refs) > 1:
            a, b = refs[0], refs[1]
            out["agreement"][f"lm-eval bf16 bs {a['batch_size']} vs bs {b['batch_size']} ({shots}-shot)"] = agreement(
                scores[("lm-eval", "bfloat16", a["batch_size"], shots)], scores[("lm-eval", "bfloat16", b["batch_size"], shots)])
    for dtype in dtypes:
        zero, five = row("harness", dtype, 0), row("harness", dtype, 5)
        if zero and five:
            out["five_vs_zero_shot"][dtype] = round(five["wall_s"] / zero["wall_s"], 2)
    return out


def quick_summary(rows, scores, shots_list, dtypes) -> dict:
    """The harness alone: five-/zero-shot ratios (whole process and scoring), and bf16 against fp32."""
    def row(dtype, shots):
        return next((r for r in rows if r["dtype"] == dtype and r["shots"] == shots), None)

    out = {"five_vs_zero_shot": {}, "five_vs_zero_shot_scoring": {}, "agreement": {}}
    for dtype in dtypes:
        zero, five = row(dtype, 0), row(dtype, 5)
        if zero and five:
            out["five_vs_zero_shot"][dtype] = round(five["wall_s"] / zero["wall_s"], 2)
            out["five_vs_zero_shot_scoring"][dtype] = round(five["score_s"] / zero["score_s"], 2)
    for shots in shots_list:
        bf16, fp32 = row("bfloat16", shots), row("float32", shots)
        if bf16 and fp32:
            b = scores[("harness", "bfloat16", bf16["batch_size"], shots)]
            f = scores[("harness", "float32", fp32["batch_size"], shots)]
            same = sum(int(np.argmax(b[k])) == int(np.argmax(f[k])) for k in f)
            out["agreement"][f"bfloat16 vs float32, {shots}-shot"] = {"questions": len(f), "same": same}
    return out


def machine_line(m: dict) -> str:
    return f"{describe_cpu(m)}; matmul {m['bfloat16_matmul_gflops']} GFLOP/s bf16, {m['float32_matmul_gflops']} GFLOP/s fp32"


def render_quick(report: dict) -> str:
    lines = [f"Gemma 3 270M, {report['rows'][0]['questions']} questions, lm-eval protocol, harness alone; {machine_line(report['machine'])}",
             describe(report["load"]), "",
             "| dtype | shots | wall s | start-up s | scoring s | outside scoring s | q/s | GFLOP | scoring GFLOP/s | of matmul rate | other processes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        others = f"{r['other_cores']:.2f} cores{' BUSY' if r['busy'] else ''}" if r.get("other_cores") is not None else "unknown"
        startup = "–" if r.get("startup_s") is None else r["startup_s"]
        lines.append(f"| {r['dtype']} | {r['shots']} | {r['wall_s']} | {startup} | {r['score_s']} | {r['outside_scoring_s']} | {r['questions_per_s']} | "
                     f"{r['gflop']} | {r['scoring_gflops_per_s']} | {100 * r['scoring_fraction_of_matmul_peak']:.1f}% | {others} |")
    ratios = [f"{k} {v}x whole process, {report['five_vs_zero_shot_scoring'][k]}x scoring" for k, v in report["five_vs_zero_shot"].items()]
    if ratios:
        lines += ["", "Five-shot / zero-shot: " + "; ".join(ratios)]
    for k, v in report["agreement"].items():
        lines.append(f"Predictions {k}: {v['same']}/{v['questions']} the same")
    if report["busy"]:
        lines += ["", "BUSY MACHINE: " + "; ".join(report["load"]["busy_reasons"])]
    return "\n".join(lines)


def render(report: dict) -> str:
    lines = [f"Gemma 3 270M, {report['rows'][0]['questions']} questions, lm-eval protocol; {machine_line(report['machine'])}",
             describe(report["load"]), "",
             "| tool | dtype | batch | shots | wall s | q/s | tokens/s | peak RSS GB | GFLOP/s | of matmul peak |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['tool']} | {r['dtype']} | {r['batch_size']} | {r['shots']} | {r['wall_s']} | {r['questions_per_s']} | "
                     f"{r['tokens_per_s']} | {r['peak_rss_gb']} | {r['gflops_per_s']} | {100 * r['fraction_of_matmul_peak']:.1f}%"
                     f"{' BUSY' if r.get('busy') else ''} |")
    lines += ["", "| setting | harness s | lm-eval best s (bs) | speed-up | harness RSS GB |", "|---|---|---|---|---|"]
    for k, v in report["speedup"].items():
        lines.append(f"| {k} | {v['harness_s']} | {v['lm_eval_best_s']} ({v['lm_eval_best_batch_size']}) | {v['ratio']}x | {v['harness_rss_gb']} |")
    lines += ["", "| agreement | same | rate | disagreements that are near-ties | bf16 margin error (p99) | largest fp32 margin among them |",
              "|---|---|---|---|---|---|"]
    for k, v in report["agreement"].items():
        d = v["disagreements"]
        fp32 = [x["fp32_margin"] for x in d if "fp32_margin" in x]
        ties = f"{v['near_ties']}/{len(d)}" if "near_ties" in v else "–"
        noise = f"{v['bf16_margin_error_p99']:.3g}" if "bf16_margin_error_p99" in v else "–"
        lines.append(f"| {k} | {v['same']}/{v['questions']} | {100 * v['rate']:.2f}% | {ties} | {noise} | "
                     f"{f'{max(fp32):.3g}' if fp32 else '–'} |")
    if report["five_vs_zero_shot"]:
        lines += ["", "Five-shot / zero-shot wall time (harness): " + ", ".join(f"{k} {v}x" for k, v in report["five_vs_zero_shot"].items())]
    if report["busy"]:
        lines += ["", "BUSY MACHINE: " + "; ".join(report["load"]["busy_reasons"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
