"""Make a quantized checkpoint: quantize, save, prove the save by reloading, mark it, put it in place.

The checkpoint is built in a temporary directory beside `--output` and renamed into place only
once its reload through the harness's own model loader gives exactly the in-memory quantized
model's logits; a failure leaves nothing behind. The marker `harness_quantization.json` says
what was done; `harness eval` copies it into the run record's `model.quantization`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from harness import __version__
from harness.errors import ModelError, first_line
from harness.files import read_json_object
from harness.models import (
    NAMED_MODELS,
    ModelSpec,
    hub_kwargs,
    load_model,
    load_tokenizer,
    loadable_path,
    resolve_device,
    resolve_source,
)
from harness.quantize.calibration import Calibration
from harness.quantize.methods import METHODS, QuantizeError, QuantizeRequest, library_versions, require_packages
from harness.quantized import MARKER, is_quanto_checkpoint

MARKER_SCHEMA = "devops-eval/quantization/1"
# What a marker must match for an existing --output to be reused rather than refused.
REQUEST_FIELDS = ("method", "bits", "requested_group_size", "source", "source_revision", "dtype", "calibration_sha256")
# The reload check's input: the devops instruction line and a question stem written for it (no benchmark text).
PROBE_TEXT = "以下是关于开发运维领域的单项选择题，请选出其中的正确答案。请直接输出选项。\n问题：在 Kubernetes 中，用于声明式地管理无状态应用副本的对象是\nA."


@dataclass(frozen=True)
class QuantizedCheckpoint:
    """A finished quantized checkpoint directory and its marker."""

    path: Path
    marker: dict
    reused: bool = False  # found in place from an earlier identical request


def make_checkpoint(
    spec: ModelSpec, request: QuantizeRequest, out: Path, cache_dir: Path, calibration: Calibration | None
) -> QuantizedCheckpoint:
    """Quantize `spec`'s model as `request` says into `out` (or reuse an identical one already there)."""
    require_packages(request.method)
    src = check_request(spec, request, cache_dir)
    wanted = _request_record(spec, src, request, calibration)
    existing = existing_checkpoint(out, wanted)
    if existing:
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        # Quantization libraries print banners and progress on stdout, which is for results.
        with contextlib.redirect_stdout(sys.stderr):
            marker = _build(spec, src, request, calibration, tmp, cache_dir, wanted)
        _write_marker(tmp, marker)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a checkpoint is an ordinary directory
        if out.exists():
            out.rmdir()  # empty: existing_checkpoint refused anything else
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return QuantizedCheckpoint(out, marker)


def label(marker: dict) -> str:
    """'gptq 4-bit, group size 128' from a checkpoint's marker."""
    group = marker.get("group_size")
    return f"{marker['method']} {marker['bits']}-bit" + (f", group size {group}" if group else "")


def check_request(spec: ModelSpec, request: QuantizeRequest, cache_dir: Path):
    """The float checkpoint to quantize (`check_source`), checked to fit the request: no model loaded yet."""
    src = check_source(spec, cache_dir)
    if request.method == "gptq":
        from harness.quantize.gptq import check_group_size

        with contextlib.redirect_stdout(sys.stderr):
            check_group_size(loadable_path(spec, cache_dir), request, hub_kwargs(spec, src))
    return src


def check_source(spec: ModelSpec, cache_dir: Path):
    """The float checkpoint to quantize; refuses GGUF files, adapters and already-quantized models."""
    if spec.gguf_file or str(spec.model).endswith(".gguf"):
        raise QuantizeError(f"--model {spec.model}: quantize a transformers checkpoint, not a GGUF file")
    if spec.adapter:
        raise QuantizeError("--adapter: merge the adapter into its base model first (peft's merge_and_unload), then quantize that")
    if spec.device_map:
        raise QuantizeError("--device-map: quantization places the model itself; use --device")
    src = resolve_source(spec, cache_dir)
    if src.adapter:
        raise QuantizeError(f"--model {spec.model} is a LoRA adapter: merge it into its base model first, then quantize that")
    path = Path(src.path)
    if src.local:
        config = _read_json(path / "config.json")
        already = (path / MARKER).is_file() or is_quanto_checkpoint(path) or config.get("quantization_config")
        if already:
            raise QuantizeError(f"--model {spec.model} is already quantized; quantize its floating-point original")
    return src


def existing_checkpoint(out: Path, wanted: dict) -> QuantizedCheckpoint | None:
    """An identical earlier quantization in `out`; None for a missing or empty `out`; else refused."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise QuantizeError(f"--output {out} is a file; give a directory for the checkpoint")
    if not any(out.iterdir()):
        return None
    marker_path = out / MARKER
    if not marker_path.is_file():
        raise QuantizeError(f"--output {out} exists and is not empty; choose another directory")
    marker = _read_json(marker_path)
    for field in REQUEST_FIELDS:
        there, now = marker.get(field), wanted.get(field)
        if field == "source" and _local_dir(wanted) and _local_dir(marker):
            there, now = marker["source_path"], wanted["source_path"]  # one directory, however it was named
        if there != now:
            raise QuantizeError(
                f"--output {out} holds another quantization ({field}: {there!r} there, {now!r} now); choose another directory"
            )
    return QuantizedCheckpoint(out, marker, reused=True)


def _request_record(spec: ModelSpec, src, request: QuantizeRequest, calibration: Calibration | None) -> dict:
    # `source` as given (the leaderboard matches it to the original's runs); `source_path` absolute
    # for a local checkpoint, so that reusing --output does not depend on the working directory.
    return {
        "method": request.method,
        "bits": request.bits,
        "requested_group_size": request.group_size,
        "source": spec.model,
        "source_path": src.hub or (str(Path(src.path).resolve()) if src.local else src.path),  # a Hub snapshot by its id
        "source_revision": spec.revision,
        "dtype": spec.dtype,
        "calibration_sha256": calibration.sha256 if calibration else None,
    }


def _local_dir(record: dict) -> bool:
    """Whether the record's source is a directory given by its path (not a named model, not a Hub id)."""
    path = record.get("source_path")
    return record.get("source") not in NAMED_MODELS and isinstance(path, str) and Path(path).is_absolute()


def _build(spec, src, request, calibration, tmp: Path, cache_dir: Path, wanted: dict) -> dict:
    start = time.perf_counter()
    model, tokenizer = quantize_model(spec, request, calibration, cache_dir)
    save_quantized(request.method, model, tokenizer, tmp)
    quantize_seconds = time.perf_counter() - start
    verified = verify_reload(model.eval(), tmp, spec, tokenizer, cache_dir)
    return {
        "schema": MARKER_SCHEMA,
        **wanted,
        "group_size": _group_size(request, model),
        "summary": METHODS[request.method].summary,
        "calibration": calibration.record() if calibration else None,
        "quantized_layers": sum(1 for m in model.modules() if _is_linear(m) and type(m) is not torch.nn.Linear),
        "float_layers": [name for name, m in model.named_modules() if type(m) is torch.nn.Linear],
        "device": resolve_device(spec.device),
        "libraries": library_versions(request.method),
        "harness": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quantize_seconds": round(quantize_seconds, 3),
        "verified_reload": verified,
    }


def quantize_model(spec: ModelSpec, request: QuantizeRequest, calibration: Calibration | None, cache_dir: Path):
    """The model quantized in memory, and its tokenizer; save it before running it (see `save_quantized`)."""
    src = resolve_source(spec, cache_dir)
    tokenizer = load_tokenizer(spec, cache_dir)
    return _quantize(spec, src, request, calibration, tokenizer, resolve_device(spec.device), cache_dir), tokenizer


def save_quantized(method: str, model: torch.nn.Module, tokenizer, out: Path) -> None:
    """Write model and tokenizer as the method's library serializes them. Call before any forward pass:
    GPT-QModel's CPU kernel repacks its weights in place at the first one in eval mode."""
    if method == "gptq":
        from harness.quantize.gptq import save
    elif method.startswith("bnb-"):
        from harness.quantize.bnb import save
    else:
        from harness.quantize.quanto import save
    save(model, out)
    tokenizer.save_pretrained(out)


def _quantize(spec, src, request, calibration, tokenizer, device, cache_dir) -> torch.nn.Module:
    load_kwargs = {"dtype": _dtype(spec), "device_map": {"": device}, **hub_kwargs(spec, src)}
    try:
        weights = loadable_path(spec, cache_dir)  # the card's original formats: their converted copy
        if request.method == "gptq":
            from harness.quantize import gptq

            return gptq.quantize(weights, request, calibration, tokenizer, load_kwargs)
        if request.method.startswith("bnb-"):
            from harness.quantize import bnb

            return bnb.quantize(weights, request, _compute_dtype(spec, weights), load_kwargs)
        from harness.quantize import quanto

        return quanto.quantize(load_model(spec, cache_dir).model, request)
    except (QuantizeError, ModelError):
        raise
    except Exception as e:
        raise QuantizeError(f"{request.method} could not quantize {spec.model}: {first_line(e)}") from None


def verify_reload(model: torch.nn.Module, path: Path, spec: ModelSpec, tokenizer, cache_dir: Path) -> dict:
    """Reload the saved checkpoint as `harness eval` would and demand the in-memory model's logits, exactly."""
    ids = torch.tensor([tokenizer(PROBE_TEXT).input_ids])
    try:
        expected = probe_logits(model, ids)
        reloaded = load_model(ModelSpec(model=str(path), device=spec.device, trust_remote_code=spec.trust_remote_code), cache_dir)
        got = probe_logits(reloaded.model, ids)
    except (QuantizeError, ModelError):
        raise
    except Exception as e:
        raise QuantizeError(f"the quantized model fails to run ({first_line(e)}); nothing was written") from None
    difference = float((got - expected).abs().max())
    if not torch.equal(got, expected):
        raise QuantizeError(
            f"the saved checkpoint reloads with other logits than the quantized model (max |difference| {difference:.3g} "
            f"over {ids.shape[1]} probe tokens); nothing was written"
        )
    return {"probe_tokens": int(ids.shape[1]), "max_abs_logit_difference": difference}


@torch.no_grad()
def probe_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device)).logits.float().cpu()


def _group_size(request: QuantizeRequest, model: torch.nn.Module):
    """The grouping the checkpoint actually has: GPTQ's as asked, NF4's blocks, quanto's own choice."""
    if request.method == "quanto-int4":
        from harness.quantize.quanto import group_sizes

        sizes = group_sizes(model)
        return sizes[0] if len(sizes) == 1 else sizes
    return {"gptq": request.group_size, "bnb-nf4": 64}.get(request.method)


def _dtype(spec: ModelSpec):
    return "auto" if spec.dtype == "auto" else getattr(torch, spec.dtype)


def _compute_dtype(spec: ModelSpec, weights: str) -> torch.dtype:
    """NF4 computes in the model's own dtype: the one asked for, else the checkpoint's."""
    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(weights, trust_remote_code=spec.trust_remote_code)
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _is_linear(m: torch.nn.Module) -> bool:
    return hasattr(m, "in_features") and hasattr(m, "out_features")


def _write_marker(directory: Path, marker: dict) -> None:
    (directory / MARKER).write_text(json.dumps(marker, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict:
    return read_json_object(path, QuantizeError) if path.is_file() else {}
