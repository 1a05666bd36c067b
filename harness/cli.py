"""The `harness` command: the one place that reads flags and environment and wires the parts."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness import __version__
from harness.errors import USER_ERRORS, HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
CACHE_ENV = "HARNESS_CACHE"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "devops-eval").expanduser()


# --- shared argument groups ---------------------------------------------------------------------


def add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    from harness.models import DTYPES

    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, help="Hub id, local checkpoint, .gguf file, LoRA output dir, or gemma-3-270m")
    g.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    g.add_argument("--adapter", help="a PEFT (LoRA) adapter directory to put on top of --model")
    g.add_argument("--gguf-file", help="GGUF file name inside --model (a directory or Hub repo)")
    g.add_argument("--tokenizer", help="tokenizer to use instead of the model's own")
    g.add_argument("--dtype", default="auto", choices=DTYPES, help="weights dtype; auto keeps the checkpoint's (default)")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    g.add_argument("--trust-remote-code", action="store_true", help="run the model repo's own Python code (Qwen-1 needs it)")


def model_spec(args):
    from harness.models import ModelSpec

    return ModelSpec(
        model=args.model,
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        adapter=args.adapter,
        gguf_file=args.gguf_file,
        trust_remote_code=args.trust_remote_code,
        tokenizer=args.tokenizer,
    )


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    from tasks import NORMALIZATIONS

    g = p.add_argument_group("data")
    g.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_DIR_ENV),
        help=f"local copy in the benchmarks' own layouts (cmmlu/..., ceval/...); default ${DATA_DIR_ENV}, else the Hub",
    )
    g.add_argument("--subjects", help="comma-separated subject keys (default: all six, the 'devops' group)")
    g.add_argument("--normalize", default="none", choices=NORMALIZATIONS, help="text normalization (default none: as published)")


def load_data(args):
    from tasks import load_hub, load_local, select_subjects

    subjects = select_subjects(args.subjects.split(",") if args.subjects else None)
    if args.data_dir:
        data = load_local(args.data_dir, subjects, args.normalize)
        info = {"source": "local", "dir": str(Path(args.data_dir).expanduser().resolve()), "normalize": args.normalize}
    else:
        data = load_hub(subjects, args.normalize)
        info = {"source": "hub", "normalize": args.normalize}
    return data, info


def add_prompt_arguments(p: argparse.ArgumentParser, shots_help: str) -> None:
    from harness.prompts import CHAT_TEMPLATES
    from tasks import protocols

    p.add_argument("--protocol", default="devops", choices=list(protocols()), help="prompt protocol (default devops)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in one user turn (ChatML, as the model card's Chat rows)")
    p.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATES,
        help="chatml (explicit, the default with --chat) or the tokenizer's own template; implies --chat",
    )
    p.add_argument("--shots", type=int, action="append", help=shots_help)


def chat_mode(args) -> str | None:
    if args.chat_template:
        return args.chat_template
    return "chatml" if args.chat else None


# --- commands -----------------------------------------------------------------------------------


def cmd_eval(args) -> int:
    from harness.evaluate import EvalSettings, evaluate
    from harness.models import load_model
    from harness.prompts import PromptFormat
    from tasks import check_shots, get_protocol

    shots_list = list(dict.fromkeys(args.shots or [5]))
    for k in shots_list:
        check_shots(k)
    protocol = get_protocol(args.protocol)
    chat = chat_mode(args)
    if args.limit is not None and args.limit < 1:
        raise HarnessError("--limit must be at least 1")
    if args.batch_size < 1 or args.max_batch_tokens < 1:
        raise HarnessError("--batch-size and --max-batch-tokens must be at least 1")
    data, data_info = load_data(args)
    loaded = load_model(model_spec(args), cache_dir())
    for shots in shots_list:
        out = output_dir(args, shots, multi=len(shots_list) > 1)
        settings = EvalSettings(
            fmt=PromptFormat(protocol, shots, chat),
            limit=args.limit,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            prefix_cache=not args.no_prefix_cache,
            seed=args.seed,
        )
        results = evaluate(loaded, data, settings, out, data_info=data_info, progress=not args.no_progress)
        print(format_summary(out, results))
    return 0


def output_dir(args, shots: int, multi: bool) -> Path:
    """--output DIR for one setting; DIR/shots-K for each of several; runs/<model>-<protocol>-Kshot by default."""
    if args.output:
        base = Path(args.output)
        return base / f"shots-{shots}" if multi else base
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(args.model.rstrip("/")).name)
    chat = "-chat" if chat_mode(args) else ""
    return Path("runs") / f"{slug}-{args.protocol}{chat}-{shots}shot"


def format_summary(out: Path, results: dict) -> str:
    p = results["protocol"]
    lines = [f"{out}  ({results['model']['name']}, {p['name']}/v{p['version']}, {p['shots']}-shot{', chat' if p['chat'] else ''})"]
    lines.append(f"  {'subject':<24}{'n':>5}{'correct':>9}{'accuracy':>10}   95% CI")
    for key, s in results["subjects"].items():
        lo, hi = s["ci95"]
        lines.append(f"  {key:<24}{s['n']:>5}{s['correct']:>9}{100 * s['accuracy']:>9.2f}%   [{100 * lo:.1f}, {100 * hi:.1f}]")
    o = results["overall"]
    lines.append(f"  {'overall (micro)':<24}{o['n']:>5}{o['correct']:>9}{100 * o['micro']:>9.2f}%   [{100 * o['micro_ci95'][0]:.1f}, {100 * o['micro_ci95'][1]:.1f}]")
    lines.append(f"  {'overall (macro)':<24}{'':>5}{'':>9}{100 * o['macro']:>9.2f}%   [{100 * o['macro_ci95'][0]:.1f}, {100 * o['macro_ci95'][1]:.1f}]")
    return "\n".join(lines)


def cmd_prompt(args) -> int:
    from harness.prompts import PromptFormat, subject_prompts
    from tasks import check_shots, get_protocol

    if args.subject is None:
        raise HarnessError("--subject is required")
    shots = check_shots(args.shots[-1] if args.shots else 5)
    fmt = PromptFormat(get_protocol(args.protocol), shots, chat_mode(args))
    args.subjects = args.subject
    data, _ = load_data(args)
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


def cmd_tasks_list(args) -> int:
    from tasks import all_subjects, protocols

    print(f"{'subject':<24}{'benchmark':<10}{'split':<6}{'n':>5}  name")
    for s in all_subjects():
        print(f"{s.key:<24}{s.benchmark.title:<10}{s.split:<6}{s.count:>5}  {s.name_zh}")
    print(f"{'devops (group)':<40}{sum(s.count for s in all_subjects()):>5}")
    print()
    for name, p in protocols().items():
        print(f"protocol {name} (v{p.version}): {p.title}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="harness", description="Evaluate causal LMs on the 574-question DevOps subset of CMMLU and C-Eval.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and progress from transformers")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("eval", help="score a model; writes a run directory")
    add_model_arguments(p)
    add_prompt_arguments(p, "few-shot examples, 0..5; repeat for several settings (default 5)")
    add_data_arguments(p)
    p.add_argument("--output", help="run directory (with several --shots: one sub-run DIR/shots-K each)")
    p.add_argument("--limit", type=int, help="score only the first N questions of each subject (a smoke test, not a score)")
    p.add_argument("--batch-size", type=int, default=8, help="questions per forward pass (default 8)")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="cap on batch rows × padded length (default 16384)")
    p.add_argument("--no-prefix-cache", action="store_true", help="recompute the shared few-shot prefix for every question")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("prompt", help="print the exact prompt of one question")
    p.add_argument("--subject", help="subject key, e.g. computer_network")
    p.add_argument("--row", type=int, default=0, help="row of the evaluation split (0-based)")
    add_prompt_arguments(p, "few-shot examples, 0..5 (default 5)")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV))
    g.add_argument("--normalize", default="none")
    add_model_arguments(p, required=False)
    p.set_defaults(func=cmd_prompt)

    p = sub.add_parser("tasks", help="the subjects and protocols")
    tsub = p.add_subparsers(dest="tasks_command", required=True, parser_class=OneLineParser)
    t = tsub.add_parser("list", help="list subjects and protocols")
    t.set_defaults(func=cmd_tasks_list)
    return parser


class _LowercaseLevel(logging.Formatter):
    def format(self, record):
        record.levelname = record.levelname.lower()
        return super().format(record)


def _quiet_libraries(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowercaseLevel("%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("harness").setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        import transformers

        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
