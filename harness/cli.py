"""The `harness` command: the composition root. Each subcommand lives in `harness/commands/`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from harness import __version__
from harness.errors import USER_ERRORS

# Each module has `register(subparsers)`, which adds its parser and sets `func(args) -> exit code`.
COMMANDS = (
    "harness.commands.evaluate",
    "harness.commands.prompt",
    "harness.commands.tasks",
    "harness.commands.leaderboard",
    "harness.commands.report",
    "harness.commands.gate",
    "harness.commands.train",
    "harness.commands.quantize",
    "harness.commands.chat",
    "harness.commands.contamination",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="harness",
        description="Evaluate causal LMs on the 574-question DevOps subset of CMMLU and C-Eval.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and progress from transformers")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name in COMMANDS:
        if importlib.util.find_spec(name) is None:  # an area still being built
            continue
        importlib.import_module(name).register(sub)
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
        # Libraries that warn on every start about things the user cannot act on (missing GPU
        # kernels of torchao, which GPT-QModel installs; torch's pytree deprecations).
        for name in ("huggingface_hub", "torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Read when the libraries are imported: commands that never load a model never pay for them.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # already imported (main() called in-process again)
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()


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
