"""bitsandbytes int8 (LLM.int8()) and 4-bit NF4, quantized as the weights load and saved with
`save_pretrained`; transformers reads the checkpoint's `quantization_config` back. transformers
leaves the output projection in floating point, as the other methods here do."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.quantize.methods import QuantizeRequest


def quantize(source: str, request: QuantizeRequest, compute_dtype: torch.dtype, load_kwargs: dict) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quiet_notices()

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


def quiet_notices() -> None:
    """Drop two bitsandbytes notices that say nothing about this run: that fp32 inputs are cast to
    fp16 (how LLM.int8() computes; logged on every forward pass of every layer, thousands of lines)
    and that the optional `kernels` package is missing (it would fetch a CPU NF4 kernel from the Hub
    at run time, which an offline evaluation does not do)."""
    import logging

    for name in ("bitsandbytes.autograd._functions", "bitsandbytes.backends.cpu.ops"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Notices) for f in logger.filters):
            logger.addFilter(_Notices())


class _Notices:
    DROPPED = ("MatMul8bitLt: inputs will be cast", "Failed to load CPU gemm_4bit_forward from kernels-community")

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.DROPPED)
