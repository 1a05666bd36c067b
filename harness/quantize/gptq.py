"""GPTQ through transformers' `GPTQConfig`, which runs GPT-QModel (CPU or GPU) via optimum.

Saved with `save_pretrained` — not optimum's `GPTQQuantizer.save()`, which writes v1 weights
under a gptq_v2 config that then reloads silently wrong. The caller proves the save by reloading.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.quantize.calibration import Calibration
from harness.quantize.methods import KEPT_IN_FLOAT, QuantizeError, QuantizeRequest

# Group sizes GPT-QModel's kernels all take, largest first: what a refusal suggests instead.
FITTING_GROUP_SIZES = (128, 64, 32, 16)


def check_group_size(source: str, request: QuantizeRequest, config_kwargs: dict) -> None:
    """Refuse a group size that does not divide the input width of every layer GPTQ quantizes.

    GPT-QModel quantizes and saves such a model, then its int4 kernel fails at the first forward
    pass; the widths come from the model built on the meta device (no weights read). A config that
    cannot be read here is left to the quantization itself to report."""
    group = request.group_size
    if group is None or group == -1:
        return
    try:
        widths = quantized_widths(source, config_kwargs)
    except Exception:
        return
    if not widths or not (misfits := {name: k for name, k in widths.items() if k % group}):
        return
    name, width = next(iter(misfits.items()))
    fitting = [g for g in FITTING_GROUP_SIZES if all(k % g == 0 for k in widths.values())]
    smaller = [g for g in fitting if g < group]
    suggest = f"--group-size {(smaller or fitting)[0]} or -1 (one group per row)" if fitting else "--group-size -1 (one group per row)"
    raise QuantizeError(
        f"--group-size {group}: does not divide the input width {width} of {name} "
        f"({len(misfits)} of the {len(widths)} layers gptq quantizes); give {suggest}"
    )


def quantized_widths(source: str, config_kwargs: dict) -> dict[str, int]:
    """Input width (in_features) of each Linear layer GPTQ quantizes: all but the output projection."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source, **config_kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=config_kwargs.get("trust_remote_code", False))
    return {
        name: m.in_features
        for name, m in model.named_modules()
        if type(m) is torch.nn.Linear and name.rsplit(".", 1)[-1] not in KEPT_IN_FLOAT
    }


def quantize(source: str, request: QuantizeRequest, calibration: Calibration, tokenizer, load_kwargs: dict) -> torch.nn.Module:
    """The source checkpoint quantized in memory; its modules still hold the packed GPTQ weights."""
    from transformers import AutoModelForCausalLM, GPTQConfig

    config = GPTQConfig(
        bits=request.bits,
        group_size=request.group_size,
        dataset=list(calibration.texts),
        tokenizer=tokenizer,
    )
    return AutoModelForCausalLM.from_pretrained(source, quantization_config=config, **load_kwargs)


def save(model: torch.nn.Module, out: Path) -> None:
    # Call before any forward pass: GPT-QModel's CPU kernel repacks its weights in place at the
    # first one in eval mode, and saved after that the file would hold the repacked tensors.
    qc = model.config.quantization_config
    # The calibration texts themselves stay out of config.json; the marker has their hash.
    if isinstance(qc, dict):
        qc["dataset"] = None
        qc["tokenizer"] = None
    else:
        qc.dataset = None
        qc.tokenizer = None
    model.save_pretrained(out)
