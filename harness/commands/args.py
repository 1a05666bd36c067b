"""Argument groups several commands share (model, data, prompt), the parser they use, and what they resolve to."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.errors import HarnessError, one_line

DATA_DIR_ENV = "HARNESS_DATA_DIR"
CACHE_ENV = "HARNESS_CACHE"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def given(text: str) -> str:
    """argparse `type` of a path or name flag: an empty value is a mistake, never the default nor the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def subject_list(text: str) -> str:
    """argparse `type` of --subjects and --group: it must name at least one (left out: the devops group)."""
    if not any(key.strip() for key in text.split(",")):
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give comma-separated names, or leave the flag out for the devops group")
    return text


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "devops-eval").expanduser()


def add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    from harness.models import DTYPES

    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, type=given, help="Hub id, local checkpoint, .gguf file, LoRA output dir, or gemma-3-270m")
    g.add_argument("--revision", type=given, help="Hub revision (branch, tag or commit) of --model")
    g.add_argument("--adapter", type=given, help="a PEFT (LoRA) adapter directory to put on top of --model")
    g.add_argument("--gguf-file", type=given, help="GGUF file name inside --model (a directory or Hub repo)")
    g.add_argument("--tokenizer", type=given, help="tokenizer to use instead of the model's own")
    g.add_argument("--dtype", default="auto", choices=DTYPES, help="weights dtype; auto keeps the checkpoint's (default)")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    g.add_argument("--device-map", help="'auto' splits one large model over the GPUs (accelerate's big-model inference)")
    g.add_argument("--trust-remote-code", action="store_true", help="run the model repo's own Python code (Qwen-1 needs it)")


def model_spec(args):
    """The model flags as a `harness.models.ModelSpec`; an unusable --device is refused here, before anything loads."""
    from harness.models import ModelSpec, check_device, check_device_map

    check_device(args.device)
    check_device_map(getattr(args, "device_map", None))
    return ModelSpec(
        model=args.model,
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        adapter=args.adapter,
        gguf_file=args.gguf_file,
        trust_remote_code=args.trust_remote_code,
        tokenizer=args.tokenizer,
        device_map=getattr(args, "device_map", None),
    )


def add_data_dir_argument(g, help: str | None = None) -> None:
    """`--data-dir`, defaulting to $HARNESS_DATA_DIR: the one place the variable is read."""
    g.add_argument(
        "--data-dir",
        type=given,
        default=os.environ.get(DATA_DIR_ENV) or None,  # set but empty: as unset (the Hub)
        help=help or f"local copy in the benchmarks' own layouts (cmmlu/..., ceval/...); default ${DATA_DIR_ENV}, else the Hub",
    )


def add_data_arguments(p: argparse.ArgumentParser, normalize: bool = True) -> None:
    from tasks import NORMALIZATIONS

    g = p.add_argument_group("data")
    add_data_dir_argument(g)
    add_selection_arguments(g)
    if normalize:
        g.add_argument("--normalize", default="none", choices=NORMALIZATIONS, help="text normalization (default none: as published)")


def add_selection_arguments(g, tasks_file: bool = True, default: str = "the 'devops' group, the model card's 574 questions") -> None:
    """--subjects, --group (and --tasks-file): which subjects; together they add up."""
    g.add_argument("--subjects", type=subject_list, help=f"comma-separated subject keys or group names (default: {default})")
    g.add_argument("--group", type=subject_list, metavar="NAME",
                   help="comma-separated group names: devops, general, cmmlu, ceval, a category such as cmmlu-stem, "
                        "ceval-hard, or a tasks file's group (`harness tasks list --groups`)")
    if tasks_file:
        g.add_argument("--tasks-file", type=given, metavar="YAML",
                       help="your own subjects, declared in the schema of tasks/subjects.yaml (then: its group by default)")


def subject_keys(args) -> list[str] | None:
    """--group and --subjects as one list of names (groups first); None (neither given) selects the
    devops group, or a tasks file's own group. A --group name that is no group is refused."""
    groups = [n.strip() for n in (getattr(args, "group", None) or "").split(",") if n.strip()]
    if groups:
        known = registry(args).groups
        for name in groups:
            if name not in known:
                raise HarnessError(f"--group {name!r} is no group; groups: {', '.join(known)}")
    subjects = [n.strip() for n in (args.subjects or "").split(",") if n.strip()]
    return [*groups, *subjects] or None


def registry(args):
    """The subjects the command knows: the package's, plus --tasks-file's."""
    from tasks import load_registry

    return load_registry(getattr(args, "tasks_file", None))


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




# --- the gate's flags: `harness gate` and `harness eval --gate-baseline` ----------------------

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
GATE_FLAGS = ("max_drop", "subject_max_drop", "general_max_drop", "general_subject_max_drop", "alpha", "min_score",
              "min_reference", "report", "junit", "json")


def add_gate_arguments(p) -> None:
    """The thresholds and outputs; unset flags are None (so `eval` can tell they were given)."""
    from harness.gate import Thresholds

    d = Thresholds()
    g = p.add_argument_group("gate")
    g.add_argument("--max-drop", type=float, metavar="POINTS",
                   help=f"overall drop in accuracy points that fails when significant (default {d.max_drop:g})")
    g.add_argument("--subject-max-drop", type=float, metavar="POINTS",
                   help=f"the same per subject, p Holm-adjusted over subjects (default {d.subject_max_drop:g})")
    g.add_argument("--general-max-drop", type=float, metavar="POINTS",
                   help="the overall drop allowed on the runs' general subjects (the `general` group), judged apart "
                        f"from the DevOps ones (default {d.max_drop:g})")
    g.add_argument("--general-subject-max-drop", type=float, metavar="POINTS",
                   help=f"the same per general subject, Holm over the general subjects (default {d.subject_max_drop:g})")
    g.add_argument("--alpha", type=float, metavar="A", help=f"level of the exact McNemar test (default {d.alpha:g})")
    g.add_argument("--min-score", type=float, metavar="POINTS", help="fail a candidate whose micro accuracy (%%) is below this")
    g.add_argument("--min-reference", metavar="NAME",
                   help="fail a candidate below this model card row at the same shots, e.g. Qwen-7B-Base")
    g.add_argument("--report", type=given, metavar="FILE", help="write the Markdown summary to FILE too")
    g.add_argument("--junit", type=given, metavar="FILE", help="write JUnit XML: a test case per subject, overall and each floor")
    g.add_argument("--json", type=given, metavar="FILE",
                   help="write the JSON verdict here (default: beside --junit, else --report, as NAME.json)")


def gate_plan(args):
    """The gate flags as a checked `harness.gating.GatePlan`."""
    from harness.gate import Thresholds
    from harness.gating import Outputs, make_plan

    d = Thresholds()
    thresholds = Thresholds(
        max_drop=d.max_drop if args.max_drop is None else args.max_drop,
        subject_max_drop=d.subject_max_drop if args.subject_max_drop is None else args.subject_max_drop,
        alpha=d.alpha if args.alpha is None else args.alpha,
    )
    general = None
    if args.general_max_drop is not None or args.general_subject_max_drop is not None:
        general = Thresholds(
            max_drop=d.max_drop if args.general_max_drop is None else args.general_max_drop,
            subject_max_drop=d.subject_max_drop if args.general_subject_max_drop is None else args.general_subject_max_drop,
            alpha=thresholds.alpha,
        )
    report = Path(args.report) if args.report else None
    junit = Path(args.junit) if args.junit else None
    beside = junit or report
    json_path = Path(args.json) if args.json else beside.with_suffix(".json") if beside else None
    summary = os.environ.get(STEP_SUMMARY_ENV)
    outputs = Outputs(report, junit, json_path, Path(summary) if summary else None)
    return make_plan(thresholds, args.min_score, args.min_reference, outputs, general)


def gate_flag_given(args) -> str | None:
    """The first gate flag given, as typed (`--max-drop`), or None."""
    given = [name for name in GATE_FLAGS if getattr(args, name) is not None]
    return "--" + given[0].replace("_", "-") if given else None
