"""`harness train`'s arguments: LLaMA-Efficient-Tuning's names, parsed by `transformers.HfArgumentParser`
together with `Seq2SeqTrainingArguments`, so the DevOps-Model launch scripts run as they are.

Flags that transformers 5 renamed or dropped are translated before parsing (`LEGACY_FLAGS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import HfArgumentParser, Seq2SeqTrainingArguments

from harness.errors import first_line, one_line
from training.errors import TrainingError


@dataclass
class ModelArguments:
    """The model to start from."""

    model_name_or_path: str = field(metadata={"help": "Hub id or local checkpoint directory to train from"})
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run the model repo's own code (Qwen-1 needs it)"})
    cache_dir: str | None = field(default=None, metadata={"help": "where Hub downloads and dataset caches go"})


@dataclass
class DataArguments:
    """Which registered datasets, and how they become token blocks (pt) or prompt/response pairs (sft)."""

    dataset: str = field(metadata={"help": "dataset name(s) from DATASET_DIR/dataset_info.json, comma-separated"})
    dataset_dir: str = field(default="data", metadata={"help": "folder holding dataset_info.json (default: data)"})
    template: str | None = field(default=None, metadata={"help": "chat template for sft: default or chatml"})
    max_source_length: int = field(default=512, metadata={"help": "pt: block size; sft: max prompt tokens per turn"})
    max_target_length: int = field(default=512, metadata={"help": "sft: max response tokens per turn"})
    val_size: float = field(default=0.0, metadata={"help": "held-out part for eval_loss: a fraction in (0,1) or a count"})
    max_samples: int | None = field(default=None, metadata={"help": "use only the first N rows of each dataset"})
    overwrite_cache: bool = field(default=False, metadata={"help": "re-run preprocessing instead of reusing its cache"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "processes for preprocessing"})
    refuse_contaminated: bool = field(default=False, metadata={"help": "refuse to train on datasets holding evaluated questions (default: warn)"})


@dataclass
class FinetuningArguments:
    """What is trained (stage, full or LoRA) and what the run leaves behind."""

    stage: Literal["pt", "sft"] = field(default="sft", metadata={"help": "pt: continued pre-training; sft: instruction tuning"})
    finetuning_type: Literal["full", "lora"] = field(default="lora", metadata={"help": "train all weights, or a LoRA adapter"})
    lora_target: str | None = field(
        default=None,
        metadata={"help": "module names for LoRA, comma-separated, or 'all' (all linear layers); default per architecture"},
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scale alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    plot_loss: bool = field(default=False, metadata={"help": "write training_loss.png into the output directory"})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "empty the output directory of an earlier training run and start afresh (default: resume from its last checkpoint)"},
    )


@dataclass
class DevOpsEvalArguments:
    """Scoring the DevOps task (the harness engine) at every save during training."""

    eval_devops_shots: str | None = field(default=None, metadata={"help": "shots to score at each save, e.g. 0,5 (default: none)"})
    eval_devops_data_dir: str | None = field(default=None, metadata={"help": "benchmark data folder (default $HARNESS_DATA_DIR, else the Hub)"})
    eval_devops_protocol: str = field(default="devops", metadata={"help": "prompt protocol (default devops)"})
    eval_devops_chat: bool = field(default=False, metadata={"help": "wrap prompts in one ChatML user turn (chat models)"})
    eval_devops_limit: int | None = field(default=None, metadata={"help": "score only the first N questions per subject (a smoke test)"})
    eval_devops_batch_size: int = field(default=8, metadata={"help": "questions per forward pass"})

    @property
    def shots(self) -> list[int]:
        if not self.eval_devops_shots:
            return []
        try:
            return list(dict.fromkeys(int(s) for s in self.eval_devops_shots.split(",")))
        except ValueError:
            raise TrainingError(f"--eval_devops_shots {self.eval_devops_shots!r}: give shot counts like 0,5") from None


@dataclass
class TrainArgs:
    """Everything `harness train` was given, one dataclass per concern."""

    model: ModelArguments
    data: DataArguments
    training: Seq2SeqTrainingArguments
    finetuning: FinetuningArguments
    devops_eval: DevOpsEvalArguments
    # Set when `model.model_name_or_path` is a copy the harness made (a named model, or a checkpoint
    # in one of the card's formats converted): the model as given, and the conversion, for the record.
    converted_from: dict | None = None


# transformers 5 renamed these; the seed's scripts still pass the old names.
LEGACY_FLAGS = {"--evaluation_strategy": "--eval_strategy", "--no_cuda": "--use_cpu"}


class _OneLineParser(HfArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def build_parser() -> HfArgumentParser:
    return _OneLineParser(
        (ModelArguments, DataArguments, Seq2SeqTrainingArguments, FinetuningArguments, DevOpsEvalArguments),
        prog="harness train",
        description="Train a causal LM (stage pt or sft, full or LoRA); `harness train merge -h` for merging adapters.",
    )


def modernize(argv: list[str]) -> list[str]:
    """The seed's flags in transformers 5 spelling: renamed flags, `--warmup_ratio R` as `--warmup_steps R`."""
    out = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in LEGACY_FLAGS:
            arg = LEGACY_FLAGS[name] + eq + value
        elif name == "--warmup_ratio":
            # transformers 5 reads a warmup_steps below 1 as a fraction of the training steps.
            ratio = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                if not 0 <= float(ratio) < 1:
                    raise TrainingError(f"--warmup_ratio {ratio}: give a fraction in [0, 1)")
            except ValueError:
                pass  # not a number: the parser says so
            arg = "--warmup_steps" + eq + value
        out.append(arg)
    return out


def on_cpu_without_accelerator(argv: list[str]) -> list[str]:
    """`argv` plus `--use_cpu` on a machine with no accelerator, unless it says otherwise.

    transformers (through accelerate) needs telling: without it, it refuses `--bf16`, and under
    torchrun it counts one process where there are N (DeepSpeed included), so every process
    believes it is the main one. With it, the processes join one gloo process group.
    """
    import torch

    accelerator = torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available())
    if accelerator or any(a.partition("=")[0] == "--use_cpu" for a in argv):
        return argv
    return [*argv, "--use_cpu"]


def parse_train_args(argv: list[str]) -> TrainArgs:
    """Parse and check `harness train`'s arguments; a mistake is one TrainingError line."""
    parser = build_parser()
    argv = on_cpu_without_accelerator(modernize(argv))
    try:
        *parsed, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as e:  # a dataclass's own checks, e.g. TrainingArguments' strategy rules
        raise TrainingError(first_line(e)) from None
    if rest:
        raise TrainingError(f"unrecognized arguments: {' '.join(rest)} (see harness train --help)")
    args = TrainArgs(*parsed)
    check(args)
    return args


def check(args: TrainArgs) -> None:
    """Refuse what cannot work before anything is loaded; make a local model path absolute."""
    from pathlib import Path

    from harness.conversation import get_template
    from harness.files import check_directory_target

    check_directory_target(args.training.output_dir, "--output_dir")
    resume = args.training.resume_from_checkpoint
    if resume:  # the Trainer would fail only once the model is loaded, with a traceback
        checkpoint = Path(resume).expanduser()
        if not checkpoint.is_dir():
            raise TrainingError(f"--resume_from_checkpoint {resume}: no such directory; give a checkpoint-N directory of a run")
        if not (checkpoint / "trainer_state.json").is_file():
            raise TrainingError(
                f"--resume_from_checkpoint {resume}: not a training checkpoint (no trainer_state.json); give a checkpoint-N directory of a run"
            )
        args.training.resume_from_checkpoint = str(checkpoint)
    local = Path(args.model.model_name_or_path).expanduser()
    if local.is_dir():  # a LoRA adapter records its base by this path: it must work from any folder
        args.model.model_name_or_path = str(local.resolve())
    d, f = args.data, args.finetuning
    if f.stage == "sft":
        if not d.template:
            raise TrainingError("--stage sft needs --template (default or chatml)")
    if d.template:
        get_template(d.template)
    if d.max_source_length < 1 or d.max_target_length < 1:
        raise TrainingError("--max_source_length and --max_target_length must be at least 1")
    if d.val_size < 0:
        raise TrainingError(f"--val_size {d.val_size}: give a fraction in (0, 1) or a count of examples")
    if d.max_samples is not None and d.max_samples < 1:
        raise TrainingError("--max_samples must be at least 1")
    if f.lora_rank < 1:
        raise TrainingError("--lora_rank must be at least 1")
    if not 0 <= f.lora_dropout < 1:
        raise TrainingError("--lora_dropout must be in [0, 1)")
    e = args.devops_eval
    if e.shots:
        from tasks import check_shots, get_protocol

        for k in e.shots:
            check_shots(k)
        get_protocol(e.eval_devops_protocol)
        if e.eval_devops_batch_size < 1 or (e.eval_devops_limit is not None and e.eval_devops_limit < 1):
            raise TrainingError("--eval_devops_batch_size and --eval_devops_limit must be at least 1")
