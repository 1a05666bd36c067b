"""Loading quantized checkpoints that transformers' `from_pretrained` does not read on its own.

The engine half of quantization: the model loader recognises and loads an optimum-quanto
checkpoint here, and quiets bitsandbytes while it loads one of its checkpoints. Making
checkpoints is `harness.quantize`, which builds on this module and never the other way round.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ModelError

if TYPE_CHECKING:
    import torch

QMAP = "quanto_qmap.json"  # the file quanto's QuantizedModelForCausalLM writes beside the weights
MARKER = "harness_quantization.json"  # what `harness quantize` did, beside the weights; the run record copies it


def importable(module: str) -> bool:
    """Whether `module` (a dotted import name) is installed, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package ("optimum" for "optimum.gptq")
        return False


def is_quanto_checkpoint(path: str | Path) -> bool:
    return (Path(path) / QMAP).is_file()


def load_quanto(path: str | Path, dtype: str = "auto") -> torch.nn.Module:
    """A quanto checkpoint as the plain transformers model it wraps (on the CPU).

    transformers' `from_pretrained` would leave its quantized layers randomly initialised."""
    if dtype != "auto":
        raise ModelError(f"--dtype {dtype}: {path} is an optimum-quanto checkpoint, which keeps its own dtype; use --dtype auto")
    if not importable("optimum.quanto"):
        raise ModelError(f"{path} is an optimum-quanto checkpoint; loading it needs pip install -c constraints.txt -e '.[quant]'")
    from optimum.quanto import QuantizedModelForCausalLM

    return usable_in_inference_mode(QuantizedModelForCausalLM.from_pretrained(str(path))._wrapped)


def usable_in_inference_mode(model: torch.nn.Module) -> torch.nn.Module:
    """Let quanto's int4 layers run where the harness scores, under torch.inference_mode.

    quanto's int4 weight is a tensor subclass made outside inference mode; the view its linear takes
    of it inside inference mode fails ("Cannot set version_counter for inference tensor":
    optimum-quanto issue 304, pytorch issue 170419). Those layers run under no_grad instead, which
    computes the same numbers.
    """
    from optimum.quanto import qint4

    for module in model.modules():
        if getattr(module, "weight_qtype", None) == qint4:
            module.forward = functools.partial(_outside_inference_mode, module.forward)
    return model


def _outside_inference_mode(forward, *args, **kwargs):
    import torch

    with torch.inference_mode(False), torch.no_grad():
        return forward(*args, **kwargs)


def quiet_bnb_notices() -> None:
    """Drop two bitsandbytes notices that say nothing about this run: that fp32 inputs are cast to
    fp16 (how LLM.int8() computes; logged on every forward pass of every layer, thousands of lines)
    and that the optional `kernels` package is missing (it would fetch a CPU NF4 kernel from the Hub
    at run time, which an offline evaluation does not do)."""
    import logging

    for name in ("bitsandbytes.autograd._functions", "bitsandbytes.backends.cpu.ops"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BnbNotices) for f in logger.filters):
            logger.addFilter(_BnbNotices())


class _BnbNotices:
    DROPPED = ("MatMul8bitLt: inputs will be cast", "Failed to load CPU gemm_4bit_forward from kernels-community")

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.DROPPED)
