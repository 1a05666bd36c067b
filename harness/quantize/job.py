"""`harness quantize` once its flags are read: check the request before anything heavy, make the
checkpoint, and with an evaluation request score it beside the original."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.models import ModelSpec
from harness.quantize.calibration import gptq_calibration
from harness.quantize.checkpoint import MARKER, check_request, make_checkpoint
from harness.quantize.evaluation import Comparisons, EvalRequest, describe_checkpoint, evaluate_both
from harness.quantize.methods import QuantizeError, QuantizeRequest, require_packages, resolve_request


@dataclass(frozen=True)
class QuantizeJob:
    """What `harness quantize` was asked: which model, which method, where, calibrated on what."""

    spec: ModelSpec
    method: str
    bits: int | None
    group_size: int | None
    output: Path
    calibration: str | None  # gptq: devops-dev (None) or a corpus file
    data_dir: str | None  # the questions calibration is checked against (None: the Hub)
    normalize: str = "none"
    evaluation: EvalRequest | None = None  # --eval: score original and checkpoint


@dataclass(frozen=True)
class Quantized:
    line: str  # what was made (or reused), in a line
    compared: Comparisons | None


def checked_request(job: QuantizeJob) -> QuantizeRequest:
    """The method, bits and group size as one request; what cannot be done is refused here."""
    request = resolve_request(job.method, job.bits, job.group_size)
    if job.calibration and request.method != "gptq":
        raise QuantizeError(f"--calibration: {request.method} rounds the weights as they are; only gptq reads calibration text")
    return request


def quantize(job: QuantizeJob, request: QuantizeRequest, cache_dir: Path, made: Callable[[str], None] = lambda line: None) -> Quantized:
    """Refuse what would fail late (an output in the way, a missing library, a model that does not
    fit the request, calibration text holding a question) before minutes of work; then quantize.
    `made` hears the checkpoint's line as soon as it exists, before any evaluation."""
    _precheck_output(job.output)
    require_packages(request.method)
    check_request(job.spec, request, cache_dir)  # the model fits the request, before any data is read
    calibration = gptq_calibration(job.calibration, job.data_dir, job.normalize) if request.method == "gptq" else None
    checkpoint = make_checkpoint(job.spec, request, job.output, cache_dir, calibration)
    gc.collect()
    line = describe_checkpoint(checkpoint)
    made(line)
    compared = evaluate_both(job.evaluation, job.spec, checkpoint, cache_dir) if job.evaluation else None
    return Quantized(line, compared)


def _precheck_output(out: Path) -> None:
    if out.is_file():
        raise QuantizeError(f"--output {out} is a file; give a directory for the checkpoint")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise QuantizeError(f"--output {out} exists and is not empty; choose another directory")
