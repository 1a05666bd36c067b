"""Run lm-evaluation-harness itself on the exported DevOps tasks and write its per-question scores.

One process per measurement, so the benchmark times lm-eval the way a user runs it: imports,
model load, and evaluation. Used by `lm_eval_speed.py`; runnable on its own:

    python benchmarks/run_lm_eval.py --model DIR --tasks-dir T --shots 5 --dtype bfloat16 --batch-size 8 --out x.json
"""

from __future__ import annotations

import argparse
import json
import logging


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--tasks-dir", required=True)
    p.add_argument("--shots", type=int, required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--batch-size", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    lm = HFLM(pretrained=args.model, batch_size=batch_size, dtype=args.dtype, device="cpu")
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["devops"], num_fewshot=args.shots, limit=args.limit, log_samples=True,
        task_manager=TaskManager(include_path=args.tasks_dir),
    )
    samples = {}
    for task, rows in results["samples"].items():
        for s in rows:
            samples[f"{task.removeprefix('devops_')}:{s['doc_id']}"] = [r[0][0] for r in s["resps"]]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"acc": results["results"]["devops"]["acc,none"], "loglik": samples}, f)


if __name__ == "__main__":
    main()
