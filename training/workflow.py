"""One training run, top to bottom: output directory → tokenizer → datasets → model (+ LoRA) →
Trainer (DeepSpeed when `--deepspeed CFG`) → the final checkpoint, its loss plot and DevOps scores.

The output directory ends as a checkpoint `harness eval --model OUT` takes as it is: the weights
and tokenizer of a full fine-tuning, or a LoRA adapter (with the tokenizer) whose
`adapter_config.json` names its base. Every process of a `torchrun` launch runs all of this; the
Trainer (and DeepSpeed) share the work and only the main process writes what is shared.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from harness import families
from harness.conversation import get_template
from harness.errors import first_line
from harness.lineage import TRAINING_RECORD
from training import registry
from training.args import TrainArgs
from training.devops_eval import RECORDS, DevOpsEval, DevOpsEvalCallback
from training.errors import TrainingError
from training.lora import add_lora
from training.plot import plot_loss
from training.preprocess import IGNORE_INDEX, check_tokenizer, pretrain_blocks, supervised_examples

log = logging.getLogger("harness.training")


def train(args: TrainArgs, devops_eval: DevOpsEval | None = None, contamination: dict | None = None) -> Path:
    """Run the training `args` describe; returns the output directory. `contamination`: the check's result, for the record."""
    from transformers import DataCollatorForSeq2Seq, Trainer, default_data_collator

    m, d, t, f = args.model, args.data, args.training, args.finetuning
    is_main = t.process_index == 0
    if not torch.cuda.is_available():
        t.dataloader_pin_memory = False  # pinned memory only speeds up copies to an accelerator
    specs = registry.resolve(d.dataset_dir, [n.strip() for n in d.dataset.split(",") if n.strip()], f.stage)
    output = Path(t.output_dir)
    existed = output.exists()
    resume = resume_point(output, t.resume_from_checkpoint, f.overwrite_output_dir, is_main)

    # Starting afresh, the directory is empty (or emptied): until training ends, a failure (Ctrl-C
    # included) takes what this run wrote there with it unless a checkpoint can be resumed, so the
    # same or a corrected command runs again without --overwrite_output_dir.
    with discard_on_failure(output, remove_dir=not existed, enabled=is_main and resume is None):
        tokenizer = load_tokenizer(args)
        template = get_template(d.template) if f.stage == "sft" else None
        check_tokenizer(tokenizer, template, m.model_name_or_path)
        with t.main_process_first(desc="preprocessing"):  # the others then read its datasets cache
            dataset = build_dataset(args, specs, tokenizer, template)
        train_set, eval_set = split(dataset, d.val_size, t.seed)
        if t.eval_strategy != "no" and eval_set is None:
            strategy = getattr(t.eval_strategy, "value", t.eval_strategy)
            raise TrainingError(f"--eval_strategy {strategy} needs held-out examples: pass --val_size (e.g. 0.01)")
        if is_main:  # the arguments as given: building the model and the Trainer changes some
            record = run_record(args, {s.name: {str(p): registry.file_sha1(p) for p in s.files} for s in specs}, contamination)
            log.info("%s: %d training examples, %d held out", f.stage, len(train_set), len(eval_set) if eval_set else 0)
            log.info("first example: %s", describe_example(train_set[0], tokenizer))

        model = build_model(args, is_main)
        collator = (
            default_data_collator  # pt blocks all have the same length
            if f.stage == "pt"
            else DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
        )
        trainer = Trainer(
            model=model, args=t, data_collator=collator, train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer
        )
        scorer = None
        if devops_eval is not None:
            scorer = DevOpsEvalCallback(devops_eval, tokenizer, t.output_dir, model_info(args, model), trainer.log)
            trainer.add_callback(scorer)

        if is_main:  # written once the model and the Trainer are in place: a run that cannot start leaves none
            write_run_record(output, record)
        result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()  # the output directory itself becomes the final checkpoint
    trainer.save_state()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    if t.do_eval and eval_set is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if f.plot_loss and is_main:
        plot = plot_loss(trainer.state.log_history, output)
        if plot is None:
            log.warning("--plot_loss: no loss was logged to plot (lower --logging_steps)")
    if scorer is not None:
        scorer.score(trainer.model, trainer.state.global_step, str(output), is_main)
    return output


def run_record(args: TrainArgs, files: dict, contamination: dict | None = None) -> dict:
    """What `OUT/harness_train.json` holds: every argument, each data file's sha1, and the software that ran."""
    import dataclasses
    import platform

    import transformers

    from harness import __version__
    from harness.evaluate import git_state

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("peft", "datasets", "accelerate", "deepspeed"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    record = {
        "harness": {"version": __version__, **git_state()},
        # what was loaded; `converted_from`: the model as given, where the harness trained from its copy
        "model": {**dataclasses.asdict(args.model), "converted_from": args.converted_from},
        "data": {**dataclasses.asdict(args.data), "files": files},
        "finetuning": dataclasses.asdict(args.finetuning),
        "devops_eval": dataclasses.asdict(args.devops_eval),
        "training": args.training.to_dict(),
        "world_size": args.training.world_size,
        "contamination": contamination,  # harness.contamination.check_before_training
        "software": versions,
    }
    return record


def write_run_record(output: Path, record: dict) -> Path:
    """`OUT/harness_train.json`, atomically."""
    from harness.files import write_json

    output.mkdir(parents=True, exist_ok=True)
    write_json(output / TRAINING_RECORD, record)
    return output / TRAINING_RECORD


def resume_point(output: Path, resume_from: str | None, overwrite: bool, is_main: bool) -> str | None:
    """The checkpoint to resume from (None: start afresh); refuse to train over someone else's files.

    `--overwrite_output_dir` empties a directory an earlier training run wrote (it holds
    harness_train.json, trainer_state.json, training_args.bin or a checkpoint-*): its final weights,
    adapter, tokenizer, checkpoints and scores must not mix with this run's, or `harness eval --model
    OUT` would load a stale adapter onto new weights. Anything else that is not empty is refused, as
    without the flag: the flag replaces a training run, it does not delete other files.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if resume_from:
        return resume_from
    if not output.is_dir() or not any(output.iterdir()):
        return None
    if overwrite:
        if not is_main:  # the main process alone decides and clears; it stops the launch if it refuses
            return None
        if not is_training_output(output):
            raise TrainingError(
                f"--output_dir {output} is not empty and holds no training run ({TRAINING_RECORD}, trainer_state.json or "
                "checkpoint-*); --overwrite_output_dir replaces only a training run's output: choose another directory"
            )
        log.info("--overwrite_output_dir: removing the earlier run in %s", output)
        try:
            empty_directory(output)
        except OSError as e:
            raise TrainingError(f"--overwrite_output_dir: cannot empty {output}: {e}") from None
        return None
    last = get_last_checkpoint(str(output))
    if last is None:
        raise TrainingError(
            f"--output_dir {output} exists and is not empty; pass --overwrite_output_dir to train into it afresh, or choose another"
        )
    if is_main:
        log.info("resuming from %s (pass --overwrite_output_dir to start afresh)", last)
    return last


TRAINING_MARKERS = (TRAINING_RECORD, "trainer_state.json", "training_args.bin", RECORDS)


def is_training_output(output: Path) -> bool:
    """Whether `output` holds what a training run (this harness's or another Trainer's) writes."""
    return any((output / name).exists() for name in TRAINING_MARKERS) or any(
        p.is_dir() for p in output.glob("checkpoint-*")
    )


def empty_directory(directory: Path) -> None:
    """Remove everything inside `directory`, not following links; the directory itself stays."""
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@contextmanager
def discard_on_failure(output: Path, remove_dir: bool, enabled: bool):
    """On any failure in the block, empty `output` (and remove it when `remove_dir`) unless it holds a
    checkpoint to resume from. Only for a run that began with `output` absent or empty: then all in it is its own."""
    try:
        yield
    except BaseException:
        if enabled and output.is_dir() and not any(p.is_dir() for p in output.glob("checkpoint-*")):
            try:
                empty_directory(output)
                if remove_dir:
                    output.rmdir()
            except OSError as e:  # the failure itself is what the user must see
                log.warning("could not remove what the failed run wrote in %s: %s", output, e)
        raise


def load_tokenizer(args: TrainArgs):
    from transformers import AutoTokenizer

    from harness.models import check_json_files

    m = args.model
    if Path(m.model_name_or_path).expanduser().is_dir():  # `[]` or `null` there would end in a traceback
        check_json_files(Path(m.model_name_or_path).expanduser())
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            m.model_name_or_path, revision=m.model_revision, trust_remote_code=m.trust_remote_code, cache_dir=m.cache_dir
        )
    except Exception as e:
        raise TrainingError(f"cannot load the tokenizer of {m.model_name_or_path}: {first_line(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of attention and loss
    tokenizer.padding_side = "right"
    return tokenizer


def build_dataset(args: TrainArgs, specs: list, tokenizer, template):
    """The registered datasets `specs` as token ids for the stage, concatenated in the order given."""
    from datasets import concatenate_datasets

    d, stage = args.data, args.finetuning.stage
    map_kwargs = {"num_proc": d.preprocessing_num_workers, "load_from_cache_file": not d.overwrite_cache}
    parts = []
    for spec in specs:
        rows, columns = registry.load(spec, stage, args.model.cache_dir, d.max_samples)
        if stage == "pt":
            parts.append(pretrain_blocks(rows, columns, tokenizer, d.max_source_length, **map_kwargs))
        else:
            parts.append(
                supervised_examples(
                    rows, columns, tokenizer, template, d.max_source_length, d.max_target_length, name=spec.name, **map_kwargs
                )
            )
    dataset = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if len(dataset) == 0:
        why = f"no text fills one block of --max_source_length {d.max_source_length} tokens" if stage == "pt" else "no row has both a prompt and a response"
        raise TrainingError(f"--dataset {d.dataset} gives no training examples: {why}")
    return dataset


def split(dataset, val_size: float, seed: int):
    """(train, held-out) by `--val_size`: a fraction below 1, or a count of examples; None if 0."""
    if val_size <= 0:
        return dataset, None
    size = int(val_size) if val_size >= 1 else val_size
    try:
        parts = dataset.train_test_split(test_size=size, seed=seed)
    except ValueError:
        raise TrainingError(f"--val_size {val_size} cannot be split from {len(dataset)} examples; lower it or add data") from None
    return parts["train"], parts["test"]


def training_dtype(args: TrainArgs) -> torch.dtype:
    """fp32 master weights unless something else keeps them: DeepSpeed's optimizer, or LoRA's frozen base."""
    t = args.training
    half = torch.bfloat16 if t.bf16 else torch.float16 if t.fp16 else None
    if half is not None and (t.deepspeed or args.finetuning.finetuning_type == "lora"):
        return half
    return torch.float32


def load_model(args: TrainArgs):
    """The model to train, loaded after the training arguments so DeepSpeed ZeRO-3 partitions it on load."""
    from transformers import AutoModelForCausalLM

    m = args.model
    families.register_own_class(m.model_name_or_path)  # e.g. a Baichuan2-13B copy trained further
    try:
        model = AutoModelForCausalLM.from_pretrained(
            m.model_name_or_path,
            revision=m.model_revision,
            trust_remote_code=m.trust_remote_code,
            cache_dir=m.cache_dir,
            dtype=training_dtype(args),
        )
    except Exception as e:
        raise TrainingError(f"cannot load model {m.model_name_or_path}: {first_line(e)}") from None
    if args.training.gradient_checkpointing:
        model.config.use_cache = False  # a KV cache is useless in training and clashes with checkpointing
    return model


def build_model(args: TrainArgs, is_main: bool):
    """The model to train: all of it (full), or a fresh LoRA adapter on it with the rest frozen."""
    t, f = args.training, args.finetuning
    model = load_model(args)
    if f.finetuning_type == "lora":
        if t.gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need grads
        model = add_lora(model, f.lora_target, f.lora_rank, f.lora_alpha, f.lora_dropout)
        if t.ddp_find_unused_parameters is None:
            t.ddp_find_unused_parameters = False  # frozen weights are not "unused" parameters
    if is_main:
        trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
        total = sum(_numel(p) for p in model.parameters())
        log.info("%s fine-tuning: %d of %d parameters trainable (%.2f%%)", f.finetuning_type, trainable, total, 100 * trainable / total)
    return model


def model_info(args: TrainArgs, model):
    """What DevOps run records say about the model in training; the callback adds name, path, step, dtype."""
    from harness.records import ModelInfo

    m, f = args.model, args.finetuning
    return ModelInfo(
        name=m.model_name_or_path,
        revision=m.model_revision,
        tokenizer=m.model_name_or_path,
        requested_dtype="auto",
        architecture=(getattr(model.config, "architectures", None) or [type(model).__name__])[0],
        trust_remote_code=m.trust_remote_code,
        extra={"training": {"stage": f.stage, "finetuning_type": f.finetuning_type, "base_model": m.model_name_or_path}},
    )


def describe_example(example: dict, tokenizer, width: int = 300) -> str:
    """An encoded example as text, cut to `width` characters: the whole input, and what carries loss."""
    labels = [t for t in example["labels"] if t != IGNORE_INDEX]
    text = {"input": tokenizer.decode(example["input_ids"]), "labels": tokenizer.decode(labels)}
    return ", ".join(f"{k} {v[:width]!r}{'...' if len(v) > width else ''}" for k, v in text.items())


def _numel(p) -> int:
    return getattr(p, "ds_numel", None) or p.numel()  # ZeRO-3 leaves each process an empty stand-in
