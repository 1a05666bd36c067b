"""The quantization methods the harness offers, what each needs, and the checks on a request."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.quantized import importable


class QuantizeError(HarnessError):
    """A quantization that cannot be done as asked (method, bits, package, output directory...)."""


@dataclass(frozen=True)
class Method:
    """One way to make a quantized checkpoint; `bits[0]` is its default."""

    name: str
    bits: tuple[int, ...]
    modules: tuple[str, ...]  # import names that must be present
    packages: tuple[str, ...]  # what pip installs for them (the extra's pins)
    extra: str  # the pyproject extra that brings `packages`
    calibrated: bool = False  # whether it reads calibration text (GPTQ) or rounds weights as they are
    default_group_size: int | None = None  # None: the library fixes the grouping itself
    summary: str = ""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "gptq", (4, 8), ("gptqmodel", "optimum.gptq"), ("gptqmodel==7.6.0", "optimum>=2.3,<3"), "gptq",
            calibrated=True, default_group_size=128,
            summary="GPTQ through transformers' GPTQConfig and GPT-QModel; calibrated, group-wise",
        ),
        Method(
            "bnb-int8", (8,), ("bitsandbytes",), ("bitsandbytes>=0.50.2,<0.51",), "quant",
            summary="bitsandbytes LLM.int8(): int8 weights and activations, outlier features (above 6) in fp16",
        ),
        Method(
            "bnb-nf4", (4,), ("bitsandbytes",), ("bitsandbytes>=0.50.2,<0.51",), "quant",
            summary="bitsandbytes 4-bit NormalFloat, blocks of 64 weights",
        ),
        Method(
            "quanto-int8", (8,), ("optimum.quanto",), ("optimum-quanto==0.2.7",), "quant",
            summary="optimum-quanto int8 weights, per output channel",
        ),
        Method(
            "quanto-int4", (4,), ("optimum.quanto",), ("optimum-quanto==0.2.7",), "quant",
            summary="optimum-quanto int4 weights, groups of 128 (or per channel for narrow layers)",
        ),
    )
}

# Modules each method leaves in floating point: the token embedding and the output projection
# (tied to it in most small models), as GPTQ and bitsandbytes do by default.
KEPT_IN_FLOAT = ("lm_head",)


@dataclass(frozen=True)
class QuantizeRequest:
    """What to make: method, bits and group size resolved to their defaults."""

    method: str
    bits: int
    group_size: int | None

    def describe(self) -> str:
        group = f", group size {self.group_size}" if self.group_size else ""
        return f"{self.method} {self.bits}-bit{group}"


def resolve_request(method: str, bits: int | None, group_size: int | None) -> QuantizeRequest:
    """Check method, bits and group size against what the method can do."""
    m = METHODS.get(method)
    if m is None:
        raise QuantizeError(f"--method {method}: unknown method; choose one of {', '.join(METHODS)}")
    bits = m.bits[0] if bits is None else bits
    if bits not in m.bits:
        can = " or ".join(str(b) for b in m.bits)
        raise QuantizeError(f"--bits {bits}: {method} makes {can}-bit weights only")
    if group_size is not None:
        if m.default_group_size is None:
            raise QuantizeError(f"--group-size: {method} sets its grouping itself ({m.summary}); only gptq takes --group-size")
        if group_size < 1 and group_size != -1:
            raise QuantizeError(f"--group-size {group_size}: give a positive number of weights, or -1 for one group per row")
    return QuantizeRequest(method, bits, group_size if group_size is not None else m.default_group_size)


def missing_packages(method: str) -> str | None:
    """None when the method's libraries import; else a one-line instruction to install them."""
    m = METHODS[method]
    missing = [name for name in m.modules if not importable(name)]
    if not missing:
        return None
    pins = " ".join(f"'{p}'" for p in m.packages)
    return (
        f"--method {method} needs {' and '.join(missing)}, not installed here: "
        f"pip install -c constraints.txt -e '.[{m.extra}]' (or pip install -c constraints.txt {pins})"
    )


def require_packages(method: str) -> None:
    problem = missing_packages(method)
    if problem:
        raise QuantizeError(problem)


def library_versions(method: str) -> dict[str, str | None]:
    """Versions of everything that decides the checkpoint's bytes, for the marker."""
    names = ["torch", "transformers", "safetensors"]
    names += {"gptq": ["gptqmodel", "optimum"], "bnb-int8": ["bitsandbytes"], "bnb-nf4": ["bitsandbytes"],
              "quanto-int8": ["optimum-quanto"], "quanto-int4": ["optimum-quanto"]}[method]
    return {name: _version(name) for name in names}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
