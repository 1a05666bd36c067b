"""`harness train`: continued pre-training (`pt`) or instruction tuning (`sft`), full or LoRA, with
LLaMA-Efficient-Tuning's arguments (see `harness train --help`); `harness train merge` folds a LoRA
adapter into its base. Runs under `torchrun` as `python -m harness train ...`.
"""

from __future__ import annotations

import argparse
import logging
import os

from harness.commands.args import DATA_DIR_ENV, OneLineParser, cache_dir, given


def register(sub) -> None:
    # Every argument goes to transformers.HfArgumentParser as it is: this parser must see none of
    # them as its own options, hence a prefix character no argument starts with.
    p = sub.add_parser(
        "train",
        help="train a model (stage pt or sft, full or LoRA); `harness train merge` merges a LoRA adapter",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.argv[:1] == ["merge"]:
        return merge(args.argv[1:])
    from training.args import parse_train_args
    from training.workflow import train

    targs = parse_train_args(args.argv)
    targs.model.model_name_or_path, targs.converted_from = named_model_path(
        targs.model.model_name_or_path, targs.model.model_revision, targs.model.cache_dir
    )
    is_main = targs.training.process_index == 0
    logging.getLogger("harness.training").setLevel(logging.INFO if is_main else logging.WARNING)
    if not args.verbose:
        import datasets

        datasets.disable_progress_bars()
    from harness.contamination import check_before_training, log_check

    contamination = check_before_training(training_data_check(targs))
    output = train(targs, devops_eval_plan(targs), contamination)
    if is_main:
        log_check(contamination)
        print(f"saved {output}")
    return 0


def training_data_check(targs):
    """What the contamination check before training needs of the training arguments."""
    from harness.contamination import TrainingDataCheck

    return TrainingDataCheck(
        dataset=targs.data.dataset,
        dataset_dir=targs.data.dataset_dir,
        stage=targs.finetuning.stage,
        data_dir=targs.devops_eval.eval_devops_data_dir or os.environ.get(DATA_DIR_ENV),
        refuse=targs.data.refuse_contaminated,
        is_main=targs.training.process_index == 0,
    )


def named_model_path(name: str, revision: str | None = None, hub_cache: str | None = None) -> tuple[str, dict | None]:
    """A model `harness eval` knows by name (gemma-3-270m), or a checkpoint in one of the card's
    original formats (Qwen-1, InternLM, Baichuan2), local or a Hub id, trains from its converted
    local copy: (the directory to train from, what the training record says that copy was made
    from — None when `name` itself is trained from). A Hub id's format is read from its config.json
    alone (at `revision`, into `hub_cache`: training's --cache_dir); only a card format fetches the
    rest, pinned to that config's commit."""
    from pathlib import Path

    from harness import families
    from harness.models import NAMED_MODELS, ModelSpec, is_hub_id, loadable_path, resolve_source

    spec = ModelSpec(model=name, revision=revision, hub_cache=hub_cache)
    fmt = families.source_format(Path(name).expanduser())
    src = None
    if not fmt and is_hub_id(name) and not Path(name).expanduser().exists():
        src = resolve_source(spec, cache_dir())  # its config.json from the Hub: one line where it cannot be had
        fmt = src.source_format
    if name in NAMED_MODELS or fmt:
        origin = {"model_name_or_path": name, **(families.record(fmt) if fmt else {})}
        if src is not None and src.hub:
            origin["revision"] = src.revision  # the commit its config.json came from
        return loadable_path(spec, cache_dir()), origin
    return name, None


def devops_eval_plan(targs):
    """What `--eval_devops_shots` asks to score at each save; the data dir defaults to $HARNESS_DATA_DIR."""
    from training.devops_eval import devops_eval_plan as plan

    e = targs.devops_eval
    return plan(
        shots=e.shots,
        protocol=e.eval_devops_protocol,
        chat=e.eval_devops_chat,
        limit=e.eval_devops_limit,
        batch_size=e.eval_devops_batch_size,
        data_dir=e.eval_devops_data_dir or os.environ.get(DATA_DIR_ENV),
    )


def merge(argv: list[str]) -> int:
    from pathlib import Path

    from harness.models import DTYPES, ModelSpec, load_model
    from training.lora import check_merge_output
    from training.lora import merge as merge_adapter

    p = OneLineParser(
        prog="harness train merge",
        description="Fold a LoRA adapter into its base model and write one plain checkpoint.",
    )
    p.add_argument("--adapter", required=True, help="the LoRA output directory (adapter_config.json)")
    p.add_argument("--model", help="the base model (default: the adapter's base_model_name_or_path)")
    p.add_argument("--output", required=True, type=given, help="directory for the merged checkpoint (must not exist or be empty)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="weights dtype; auto keeps the base's (default)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model repo's own Python code")
    a = p.parse_args(argv)
    check_merge_output(Path(a.output))  # before minutes of loading
    spec = ModelSpec(
        model=a.model or a.adapter,
        adapter=a.adapter if a.model else None,
        dtype=a.dtype,
        device="cpu",
        trust_remote_code=a.trust_remote_code,
    )
    output = merge_adapter(load_model(spec, cache_dir()), Path(a.output))
    print(f"merged {a.adapter} into {output}")
    return 0
