"""GPTQ through transformers' `GPTQConfig`, which runs GPT-QModel (CPU or GPU) via optimum.

Saved with `save_pretrained` — not optimum's `GPTQQuantizer.save()`, which writes v1 weights
under a gptq_v2 config that then reloads silently wrong. The caller proves the save by reloading.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.quantize.calibration import Calibration
from harness.quantize.methods import QuantizeRequest


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
