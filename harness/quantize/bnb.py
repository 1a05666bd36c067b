"""bitsandbytes int8 (LLM.int8()) and 4-bit NF4, quantized as the weights load and saved with
`save_pretrained`; transformers reads the checkpoint's `quantization_config` back. transformers
leaves the output projection in floating point, as the other methods here do."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.quantize.methods import QuantizeRequest
from harness.quantized import quiet_bnb_notices


def quantize(source: str, request: QuantizeRequest, compute_dtype: torch.dtype, load_kwargs: dict) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quiet_bnb_notices()

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
