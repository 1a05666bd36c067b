"""LoRA (peft): which modules to adapt, putting an adapter on a model, and merging one into its base."""

from __future__ import annotations

from pathlib import Path

from harness.errors import first_line
from harness.families.baichuan2 import ALIBI_MODEL_TYPE
from training.errors import TrainingError

# LLaMA-Efficient-Tuning's advice per architecture: the attention projections (query and value for
# LLaMA-style blocks, the fused QKV projection where a model has one).
DEFAULT_TARGETS = {
    **dict.fromkeys(
        ("llama", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "mistral", "mixtral", "gemma", "gemma2", "gemma3",
         "gemma3_text", "internlm", "starcoder2", ALIBI_MODEL_TYPE),  # the last: Baichuan2-13B converted
        ("q_proj", "v_proj"),
    ),
    "qwen": ("c_attn",),  # Qwen-1 and DevOps-Model (remote code)
    "baichuan": ("W_pack",),
    "gpt2": ("c_attn",),
    **dict.fromkeys(("chatglm", "falcon", "bloom", "gpt_neox"), ("query_key_value",)),
}


def target_modules(model, lora_target: str | None):
    """`--lora_target` as peft takes it: a list of names, "all-linear", or the architecture's default."""
    if lora_target:
        names = [t.strip() for t in lora_target.split(",") if t.strip()]
        return "all-linear" if names == ["all"] else names
    model_type = getattr(model.config, "model_type", None)
    if model_type not in DEFAULT_TARGETS:
        raise TrainingError(
            f"no default LoRA targets for model type {model_type!r}; name them with --lora_target "
            "(e.g. q_proj,v_proj) or --lora_target all"
        )
    return list(DEFAULT_TARGETS[model_type])


def add_lora(model, lora_target: str | None, rank: int, alpha: float, dropout: float):
    """`model` wrapped with a fresh trainable LoRA adapter; every other weight frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules(model, lora_target),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # e.g. "Target modules {...} not found in the base model"
        raise TrainingError(f"--lora_target {lora_target or ','.join(config.target_modules)}: {first_line(e)}") from None


def check_merge_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TrainingError(f"--output {output} exists and is not empty; choose another")


def merge(loaded, output: Path) -> Path:
    """Write `loaded` (a harness LoadedModel: base + adapter) as one plain checkpoint at `output`.

    Written into a temporary sibling and renamed at the end, so a failed merge leaves nothing behind.
    The adapter's `harness_train.json`, if it has one, is copied with it.
    """
    import shutil
    import tempfile

    from harness.lineage import TRAINING_RECORD, training_record

    output = Path(output)
    check_merge_output(output)
    if not loaded.info.adapter:
        raise TrainingError(f"{loaded.info.name} has no adapter to merge; pass --adapter DIR")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-"))
    try:
        merged = loaded.model.merge_and_unload()
        merged.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        # The adapter's training record comes along, so the merged model keeps its lineage and, if
        # its training data held evaluated questions, the gate and leaderboard still flag its runs.
        record = training_record(loaded.info.adapter)
        if record is not None:
            shutil.copyfile(record, tmp / TRAINING_RECORD)
        if output.exists():
            output.rmdir()
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output
