"""`harness quantize`: make an int4/int8 checkpoint; with --eval, measure what it costs on the questions."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands.args import (
    add_data_arguments,
    add_model_arguments,
    add_prompt_arguments,
    cache_dir,
    chat_mode,
    given,
    model_spec,
    subject_keys,
)
from harness.errors import HarnessError


def register(sub) -> None:
    from harness.quantize.calibration import DEVOPS_DEV
    from harness.quantize.methods import METHODS

    p = sub.add_parser(
        "quantize",
        help="make an int4/int8 checkpoint that harness eval loads; --eval measures what it costs",
        description="Quantize a floating-point checkpoint, save it, prove the save by reloading it, and mark it "
        "(harness_quantization.json). With --eval, score the original and the quantized model on the same "
        "questions and print the comparison. Methods: "
        + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()) + ".",
    )
    add_model_arguments(p)
    q = p.add_argument_group("quantization")
    q.add_argument("--method", required=True, metavar="METHOD", help=f"one of {', '.join(METHODS)}")
    q.add_argument("--output", required=True, type=given, metavar="DIR", help="the quantized checkpoint (a new or empty directory)")
    q.add_argument("--bits", type=int, help="weight bits (gptq: 4 or 8, default 4; the others have one each)")
    q.add_argument("--group-size", type=int, help="gptq: weights per quantization group (default 128; -1: one per row)")
    q.add_argument(
        "--calibration",
        metavar=f"{DEVOPS_DEV}|FILE",
        help=f"gptq's calibration text: {DEVOPS_DEV} (default: the subjects' few-shot dev rows, none of them scored) "
        "or a corpus (.jsonl with a \"text\" field per line, or text with blank-line-separated passages); "
        "text holding an evaluated question is refused",
    )
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval", action="store_true", help="then score the original and the quantized model and compare them")
    e.add_argument("--eval-output", type=given, metavar="DIR",
                   help="where the two runs and comparison.md/.json go (default runs/quantize-<output name>)")
    e.add_argument("--limit", type=int, help="score only the first N questions of each subject (a smoke test)")
    e.add_argument("--batch-size", type=int, default=8, help="questions per forward pass (default 8)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_prompt_arguments(p, "few-shot examples for --eval, 0..5; repeat for several settings (default 5)")
    add_data_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.quantize.job import QuantizeJob, checked_request, quantize

    job = QuantizeJob(
        spec=model_spec(args), method=args.method, bits=args.bits, group_size=args.group_size, output=Path(args.output),
        calibration=args.calibration, data_dir=args.data_dir, normalize=args.normalize,
        evaluation=eval_request(args) if args.eval else None,
    )
    request = checked_request(job)
    check_eval_flags(args)
    # With --eval, stdout carries the comparison: the checkpoint's line goes to stderr, at once.
    done = quantize(job, request, cache_dir(), made=lambda line: print(line, file=sys.stderr if args.eval else sys.stdout))
    if done.compared is None:
        return 0
    sys.stdout.write(done.compared.markdown)
    print(f"harness quantize: comparison written to {done.compared.root / 'comparison.md'} and comparison.json", file=sys.stderr)
    return 0


def eval_request(args):
    """--eval's flags as the request `harness.quantize.evaluation.evaluate_both` takes."""
    from harness.quantize.evaluation import EvalRequest

    subjects = subject_keys(args)
    return EvalRequest(
        protocol=args.protocol,
        shots=tuple(dict.fromkeys(args.shots or [5])),
        chat=chat_mode(args),
        limit=args.limit,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        output_root=Path(args.eval_output) if args.eval_output else None,
        data_dir=args.data_dir,
        subjects=tuple(subjects) if subjects else None,
        normalize=args.normalize,
        tasks_file=args.tasks_file,
    )


def check_eval_flags(args) -> None:
    from tasks import check_shots

    if not args.eval:
        given = {
            "--shots": args.shots is not None, "--limit": args.limit is not None, "--subjects": args.subjects is not None,
            "--group": args.group is not None, "--tasks-file": args.tasks_file is not None,
            "--eval-output": args.eval_output is not None, "--protocol": args.protocol != "devops",
            "--chat": args.chat, "--chat-template": args.chat_template is not None,
        }
        flag = next((name for name, present in given.items() if present), None)
        if flag:
            raise HarnessError(f"{flag} applies to the evaluation: add --eval")
        return
    for k in args.shots or [5]:
        check_shots(k)
    if args.limit is not None and args.limit < 1:
        raise HarnessError("--limit must be at least 1")
    if args.batch_size < 1:
        raise HarnessError("--batch-size must be at least 1")
