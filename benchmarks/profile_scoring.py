"""Where the harness's scoring time goes: a torch.profiler breakdown of one whole run's scoring.

Gemma 3 270M (the README's main job), the lm-eval protocol, all 574 questions (or --limit per
subject), scored exactly as `harness eval` scores them (same preparation, batch plan and scorer),
with the profiler on. The CPU time of torch's operators is split into

- matmuls (aten::mm / bmm / addmm: the linear layers, the attention products, the head),
- attention's other work (softmax, masking, concatenating scores),
- norms and element-wise work (RMSNorm, activations, residual adds, rotary embeddings, casts, copies),
- the rest of torch's operators (indexing, views, allocation),

and what is left of the wall time is Python and framework overhead (module calls, argument
handling, the plan's bookkeeping). Printed as a table and written as JSON; `--batch-sizes` sweeps
the rows per forward (no profiler: wall time of scoring only) to choose defaults.

    python benchmarks/profile_scoring.py --data-dir ../shared/data                   # bf16, 0- and 5-shot
    python benchmarks/profile_scoring.py --data-dir ../shared/data --dtype float32
    python benchmarks/profile_scoring.py --data-dir ../shared/data --sweep 4,8,16,32  # batch-size sweep

Time it only on an idle machine (benchmarks/machine.py flags a busy one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import LoadWatch, cpu_facts, describe, describe_cpu, refuse_busy_overwrite, wait_until_idle

MATMUL = ("mkldnn::_linear_pointwise", "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::_weight_int8pack_mm")
ATTENTION = ("aten::_softmax", "aten::softmax", "aten::masked_fill_", "aten::masked_fill", "aten::cat",
             "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math")
ELEMENTWISE = ("aten::mul", "aten::add", "aten::add_", "aten::mul_", "aten::pow", "aten::mean", "aten::rsqrt",
               "aten::tanh", "aten::gelu", "aten::silu", "aten::neg", "aten::copy_", "aten::to", "aten::_to_copy",
               "aten::div", "aten::sub", "aten::cos", "aten::sin", "aten::clone", "aten::contiguous", "aten::sum",
               "aten::exp", "aten::sigmoid", "aten::rms_norm", "aten::_fused_rms_norm", "aten::layer_norm",
               "aten::native_layer_norm", "aten::embedding", "aten::index_select", "aten::gelu_", "aten::fill_",
               "harness::act_mul", "harness::rotary", "harness::gemma3_norm")  # harness/act_mul.c's (harness.kernels)


def category(name: str) -> str:
    if name in MATMUL:
        return "matmuls"
    if name in ATTENTION:
        return "attention (softmax, masks, concatenation)"
    if name in ELEMENTWISE:
        return "norms and element-wise"
    return "other operators"


def setup(data_dir: str, dtype: str, shots: int, limit: int | None, batch_size: int, max_batch_tokens: int,
          model: str = "gemma-3-270m"):
    """The model, the prepared questions and the batch plan, as `harness eval` makes them."""
    from harness.commands.args import cache_dir
    from harness.evaluate import EvalSettings, letter_scorer, prepare
    from harness.models import NAMED_MODELS, ModelSpec, load_model
    from harness.prompts import PromptFormat
    from harness.scoring import plan_batches
    from tasks import devops_subjects, get_protocol, load_local

    model_dir = NAMED_MODELS[model](cache_dir()) if model in NAMED_MODELS else model
    loaded = load_model(ModelSpec(str(model_dir), dtype=dtype, device="cpu"), cache_dir())
    data = load_local(data_dir, devops_subjects())
    settings = EvalSettings(fmt=PromptFormat(get_protocol("lm-eval"), shots, None), limit=limit,
                            batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    prepared = prepare(loaded, data, settings)
    plan = plan_batches(prepared.encoded, batch_size=batch_size, max_batch_tokens=max_batch_tokens, prefix_cache=True)
    return loaded, prepared, plan, letter_scorer(loaded)


def score_all(scorer, prepared, plan) -> float:
    start = time.perf_counter()
    for batch in plan:
        scorer.score(batch, prepared.encoded[batch.group])
    return time.perf_counter() - start


def profile(scorer, prepared, plan) -> dict:
    """One pass over the plan under torch.profiler: CPU seconds per category, and the wall."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    score_all(scorer, prepared, plan[:3])  # warm the allocator and the first prefix
    scorer._prefix_key = None  # the first prefix is computed again inside the profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = score_all(scorer, prepared, plan)
    by_cat: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        by_cat[category(e.key)] += e.self_cpu_time_total / 1e6
        by_op[e.key] += e.self_cpu_time_total / 1e6
    # Operators run on the calling thread (intra-op threads inside them), so their self times add up
    # to the wall time spent in torch; the remainder is Python and framework work between them.
    in_ops = sum(by_cat.values())
    by_cat["Python and framework overhead"] = max(wall - in_ops, 0.0)
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    return {"profiled_wall_s": round(wall, 2), "categories": {k: round(v, 2) for k, v in by_cat.items()},
            "top_operators": {k: round(v, 2) for k, v in top}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default="gemma-3-270m", help="a named model or a model directory (default gemma-3-270m)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--shots", default="0,5")
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batch-tokens", type=int, default=16384)
    p.add_argument("--sweep", help="comma-separated batch sizes: scoring wall time of each (no profiler)")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS")
    p.add_argument("--json", help="where the figures go (default: benchmarks/results/profile_scoring_<dtype>[_sweep].json)")
    p.add_argument("--allow-busy", action="store_true", help="write figures measured on a busy machine into benchmarks/results/ too")
    args = p.parse_args()
    wait_until_idle(args.wait_idle)
    watch = LoadWatch()
    import torch

    report: dict = {"model": args.model, "dtype": args.dtype, "machine": cpu_facts(), "threads": torch.get_num_threads(),
                    "limit": args.limit, "runs": []}
    for shots in [int(s) for s in args.shots.split(",")]:
        sizes = [int(b) for b in args.sweep.split(",")] if args.sweep else [args.batch_size]
        for bs in sizes:
            loaded, prepared, plan, scorer = setup(args.data_dir, args.dtype, shots, args.limit, bs, args.max_batch_tokens, args.model)
            row = {"shots": shots, "batch_size": bs, "passes": len(plan), "questions": prepared.n,
                   "computed_tokens": sum(len(prepared.encoded[b.group][i].input_ids) - b.prefix_len
                                          for b in plan for i in b.items),
                   "padded_tokens": sum(len(b.items) * (len(prepared.encoded[b.group][b.items[0]].input_ids) - b.prefix_len)
                                        for b in plan)}
            if args.sweep:
                score_all(scorer, prepared, plan[:3])
                scorer._prefix_key = None
                row["score_s"] = round(score_all(scorer, prepared, plan), 2)
            else:
                row.update(profile(scorer, prepared, plan))
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    report["load"] = watch.finish()
    report["busy"] = report["load"]["busy"]
    print(describe_cpu(report["machine"]))
    print(describe(report["load"]))
    for row in report["runs"]:
        if "categories" in row:
            print(f"\n{args.dtype}, {row['shots']}-shot, batch size {row['batch_size']}: {row['profiled_wall_s']} s profiled")
            print("| where | seconds | share |\n|---|---|---|")
            for k, v in sorted(row["categories"].items(), key=lambda kv: -kv[1]):
                print(f"| {k} | {v:.2f} | {v / row['profiled_wall_s']:.0%} |")
    target = Path(args.json or ROOT / "benchmarks" / "results" / f"profile_scoring_{args.dtype}{'_sweep' if args.sweep else ''}.json")
    refusal = refuse_busy_overwrite(target, report["load"], args.allow_busy)
    if refusal:
        print(refusal, file=sys.stderr)
        return 3
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from harness.errors import HarnessError

    try:
        raise SystemExit(main())
    except HarnessError as e:  # a bad --model or --data-dir: the harness's own one line
        print(f"profile_scoring: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
