"""The `harness` command: the composition root. Each subcommand lives in `harness/commands/`."""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import signal
import sys
import threading

from harness import __version__
from harness.commands.args import OneLineParser
from harness.errors import USER_ERRORS, Terminated, one_line

# Each command and the module that registers it: `register(subparsers)` adds its parser and sets
# `func(args) -> exit code`. Only the module of the command being run is imported and registered:
# building every parser would import what the others need (`quantize`'s methods, `train`'s flags).
COMMANDS = {
    "eval": "harness.commands.evaluate",
    "prompt": "harness.commands.prompt",
    "tasks": "harness.commands.tasks",
    "leaderboard": "harness.commands.leaderboard",
    "report": "harness.commands.report",
    "compare": "harness.commands.report",
    "gate": "harness.commands.gate",
    "train": "harness.commands.train",
    "quantize": "harness.commands.quantize",
    "chat": "harness.commands.chat",
    "contamination": "harness.commands.contamination",
}
# Commands that pick up where an interrupted run stopped (finished questions, the last checkpoint).
RESUMABLE = ("eval", "train")
# Commands whose process ends without tearing the interpreter down (`console`): their files are
# closed by then, and freeing a loaded model and every module costs ~0.6 s on two cores.
QUICK_EXIT = ("eval",)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: with `command` one of COMMANDS, only that command's; otherwise every one (for --help)."""
    parser = OneLineParser(
        prog="harness",
        description="Evaluate causal LMs on the 574-question DevOps subset of CMMLU and C-Eval.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and progress from transformers")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The subcommand `argv` names: its first word that is not an option (the top-level options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


class _LowercaseLevel(logging.Formatter):
    def format(self, record):
        record.levelname = record.levelname.lower()
        return super().format(record)


class _Reroute(logging.Filter):
    """Hands a logger's records at `level` or above to our stderr handler, and none to its own.

    DeepSpeed's logger has its own handler on *stdout* (propagation off) and, when it is first
    imported (accelerate imports it in every `save_pretrained`), warns that it found no GPU. Stdout
    carries chat answers and the tables `harness leaderboard` prints, so its records come through here instead. A filter
    set on the logger before the library creates it survives the library's own set-up.
    """

    def __init__(self, handler: logging.Handler, level: int):
        super().__init__()
        self.handler, self.level = handler, level

    def filter(self, record):
        if record.levelno >= self.level:
            self.handler.handle(record)
        return False


def _quiet_libraries(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowercaseLevel("%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("harness").setLevel(logging.INFO if verbose else logging.WARNING)
    deepspeed = logging.getLogger("DeepSpeed")
    for old in [f for f in deepspeed.filters if isinstance(f, _Reroute)]:  # main() called again in-process
        deepspeed.removeFilter(old)
    deepspeed.addFilter(_Reroute(handler, logging.INFO if verbose else logging.ERROR))
    if not verbose:
        # Libraries that warn on every start about things the user cannot act on (missing GPU
        # kernels of torchao, which GPT-QModel installs, and of bitsandbytes on AVX512-BF16 CPUs,
        # whose Hub kernel `kernels` (a dependency of transformers >= 5.25) says it cannot check
        # offline; torch's pytree deprecations).
        for name in ("huggingface_hub", "torchao", "bitsandbytes", "kernels", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Read when the libraries are imported: commands that never load a model never pay for them.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # its import resets the level set above
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # already imported (main() called in-process again)
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_of(argv)).parse_args(argv)
    _quiet_libraries(args.verbose)
    # SIGTERM (kill, a CI job cancelled, a scheduler's time limit) ends as Ctrl-C does.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"harness {args.command}: error: {one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt as e:
        resume = "; run the same command again to resume" if args.command in RESUMABLE else ""
        print(f"harness {args.command}: interrupted{resume}", file=sys.stderr)
        return e.exit_code if isinstance(e, Terminated) else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def console() -> None:
    """The `harness` console script and `python -m harness`: `main`, then the process ends.

    After `eval` the interpreter's teardown (every module, the model's tensors, the tokenizer) is
    skipped: the run's files are written and closed, the streams are flushed and the atexit handlers
    run (logging's, the kernels' temporary directory), then `os._exit`. Only where no other
    non-daemon thread is still alive; otherwise, and for every other command, the usual exit."""
    code = main()
    if command_of(sys.argv[1:]) in QUICK_EXIT and not _other_threads():
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`| head`) has nothing left to flush into
                pass
        os._exit(code)
    raise SystemExit(code)


def _other_threads() -> bool:
    main_thread = threading.main_thread()
    return any(t is not main_thread and t.is_alive() and not t.daemon for t in threading.enumerate())

