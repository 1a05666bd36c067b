"""`harness prompt`: print the exact prompt of one question, and nothing else."""

from __future__ import annotations

import sys

from harness.commands.args import (
    add_data_dir_argument,
    add_model_arguments,
    add_prompt_arguments,
    cache_dir,
    chat_mode,
    given,
    model_spec,
    registry,
)
from harness.errors import HarnessError
from tasks import NORMALIZATIONS


def register(sub) -> None:
    p = sub.add_parser("prompt", help="print the exact prompt of one question")
    p.add_argument("--subject", required=True, help="subject key, e.g. computer_network")
    p.add_argument("--row", type=int, default=0, help="row of the evaluation split (0-based)")
    add_prompt_arguments(p, "few-shot examples, 0..5 (default 5)")
    g = p.add_argument_group("data")
    add_data_dir_argument(g)
    g.add_argument("--normalize", default="none", choices=NORMALIZATIONS)
    g.add_argument("--tasks-file", type=given, metavar="YAML", help="your own subjects (schema of tasks/subjects.yaml)")
    add_model_arguments(p, required=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from harness.prompts import PromptFormat, subject_prompts
    from tasks import check_shots, get_protocol, load_benchmark

    reg = registry(args)
    if reg.subject(args.subject) is None:
        keys = [s.key for s in reg.select(None)]
        raise HarnessError(f"--subject {args.subject!r}: give one subject key (e.g. {', '.join(keys)}; `harness tasks list` has all)")
    shots = check_shots(args.shots[-1] if args.shots else 5)
    fmt = PromptFormat(get_protocol(args.protocol), shots, chat_mode(args))
    data, _ = load_benchmark(args.data_dir, [args.subject], args.normalize, reg)
    tokenizer = None
    if fmt.chat == "tokenizer":
        if not args.model:
            raise HarnessError("--chat-template tokenizer needs --model (whose tokenizer has the template)")
        from harness.models import load_tokenizer

        tokenizer = load_tokenizer(model_spec(args), cache_dir())
    questions = data[0].questions
    if not 0 <= args.row < len(questions):
        raise HarnessError(f"--row {args.row} is outside 0..{len(questions) - 1} for {args.subject}")
    prompts = subject_prompts(data[0], fmt, tokenizer)
    sys.stdout.write(prompts[args.row][1])
    sys.stdout.flush()
    return 0


