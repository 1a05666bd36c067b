"""bitsandbytes int8 (LLM.int8()) and 4-bit NF4, quantized as the weights load and saved with
`save_pretrained`; transformers reads the checkpoint's `quantization_config` back. transformers
leaves the output projection in floating point, as the other methods here do."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.quantize.methods import QuantizeRequest


def quantize(source: str, request: QuantizeRequest, compute_dtype: torch.dtype, load_kwargs: dict) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if request.method == "bnb-int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return AutoModelForCausalLM.from_pretrained(source, quantization_config=config, **load_kwargs)


def save(model: torch.nn.Module, out: Path) -> None:
    model.save_pretrained(out)


def quiet_cast_warning() -> None:
    """Drop bitsandbytes' warning, on every int8 forward pass of every layer, that fp32 inputs are cast
    to fp16: that is how LLM.int8() computes, and thousands of copies would bury a run's output."""
    import logging

    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _CastWarning) for f in logger.filters):
        logger.addFilter(_CastWarning())


class _CastWarning:
    def filter(self, record) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")
