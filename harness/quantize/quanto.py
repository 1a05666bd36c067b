"""optimum-quanto int8 / int4 weights through quanto's own API: quantize and freeze, save with
its serialization (weights plus `quanto_qmap.json`), reload through its requantize path.

transformers' `QuantoConfig` cannot save, and `from_pretrained` does not read quanto's files:
given a quanto directory it would leave the quantized layers randomly initialised. The harness's
model loader therefore sends such a directory here (`is_quanto_checkpoint`)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from harness.quantize.methods import KEPT_IN_FLOAT, QuantizeRequest

QMAP = "quanto_qmap.json"  # the file quanto's QuantizedModelForCausalLM writes beside the weights


def quantize(model: torch.nn.Module, request: QuantizeRequest) -> torch.nn.Module:
    """Quantize a loaded float model in place (weights only) and freeze it."""
    from optimum.quanto import QuantizedModelForCausalLM, qint4, qint8

    weights = {8: qint8, 4: qint4}[request.bits]
    return _usable_in_inference_mode(QuantizedModelForCausalLM.quantize(model, weights=weights, exclude=list(KEPT_IN_FLOAT))._wrapped)


def save(model: torch.nn.Module, out: Path) -> None:
    from optimum.quanto import QuantizedModelForCausalLM

    QuantizedModelForCausalLM(model).save_pretrained(out)
    (Path(out) / "README.md").unlink(missing_ok=True)  # the hub mixin's empty model card


def is_quanto_checkpoint(path: str | Path) -> bool:
    return (Path(path) / QMAP).is_file()


def load(path: str | Path) -> torch.nn.Module:
    """A quanto checkpoint as the plain transformers model it wraps (on the CPU)."""
    from optimum.quanto import QuantizedModelForCausalLM

    return _usable_in_inference_mode(QuantizedModelForCausalLM.from_pretrained(str(path))._wrapped)


def _usable_in_inference_mode(model: torch.nn.Module) -> torch.nn.Module:
    """Let int4 layers run where the harness scores, under torch.inference_mode.

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
    with torch.inference_mode(False), torch.no_grad():
        return forward(*args, **kwargs)


def group_sizes(model: torch.nn.Module) -> list[int | None]:
    """The group sizes quanto chose for the quantized layers (None: one scale per output channel)."""
    return sorted({getattr(m, "weight_group_size", None) for m in model.modules() if hasattr(m, "weight_qtype")},
                  key=lambda g: (g is None, g))
