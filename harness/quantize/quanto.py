"""optimum-quanto int8 / int4 weights through quanto's own API: quantize and freeze, save with
its serialization (weights plus `quanto_qmap.json`); `harness.quantized` reloads it.

transformers' `QuantoConfig` cannot save, and `from_pretrained` does not read quanto's files:
given a quanto directory it would leave the quantized layers randomly initialised. The harness's
model loader therefore sends such a directory to `harness.quantized.load_quanto`."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.quantize.methods import KEPT_IN_FLOAT, QuantizeRequest
from harness.quantized import usable_in_inference_mode


def quantize(model: torch.nn.Module, request: QuantizeRequest) -> torch.nn.Module:
    """Quantize a loaded float model in place (weights only) and freeze it."""
    from optimum.quanto import QuantizedModelForCausalLM, qint4, qint8

    weights = {8: qint8, 4: qint4}[request.bits]
    return usable_in_inference_mode(QuantizedModelForCausalLM.quantize(model, weights=weights, exclude=list(KEPT_IN_FLOAT))._wrapped)


def save(model: torch.nn.Module, out: Path) -> None:
    from optimum.quanto import QuantizedModelForCausalLM

    QuantizedModelForCausalLM(model).save_pretrained(out)
    (Path(out) / "README.md").unlink(missing_ok=True)  # the hub mixin's empty model card


def group_sizes(model: torch.nn.Module) -> list[int | None]:
    """The group sizes quanto chose for the quantized layers (None: one scale per output channel)."""
    return sorted({getattr(m, "weight_group_size", None) for m in model.modules() if hasattr(m, "weight_qtype")},
                  key=lambda g: (g is None, g))
