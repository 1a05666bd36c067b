"""What a quantized checkpoint costs: the original and the checkpoint scored on the same questions
with the same settings, compared at each shots setting; and the line that reports a checkpoint."""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvalRequest:
    """How both models are scored (`harness quantize --eval`), and on which questions."""

    protocol: str
    shots: tuple[int, ...]  # one comparison each
    chat: str | None  # None, "chatml" or "tokenizer" (`PromptFormat.chat`)
    limit: int | None
    batch_size: int
    progress: bool
    output_root: Path | None  # None: runs/quantize-<checkpoint name>
    data_dir: str | None  # None: the Hub
    subjects: tuple[str, ...] | None  # subject keys and group names; None: the devops group
    normalize: str = "none"
    tasks_file: str | None = None  # a user's own subjects


@dataclass(frozen=True)
class Comparisons:
    """Where the runs and comparison.md/.json were written, and the Markdown (as written)."""

    root: Path
    markdown: str


def evaluate_both(request: EvalRequest, spec, checkpoint, cache: Path) -> Comparisons:
    """Score original and quantized model with the same settings, then compare them at each shots setting."""
    from harness.files import write_all_or_none
    from harness.models import ModelSpec, resolve_source
    from harness.quantize.checkpoint import label
    from harness.quantize.comparison import quantization_cost, render_markdown, weights_bytes
    from harness.records import load_run
    from tasks import load_benchmark, load_registry

    subjects = list(request.subjects) if request.subjects is not None else None
    data, data_info = load_benchmark(request.data_dir, subjects, request.normalize, load_registry(request.tasks_file))
    root = request.output_root or Path("runs") / f"quantize-{_slug(checkpoint.path.name)}"
    quantized_spec = ModelSpec(model=str(checkpoint.path), device=spec.device, trust_remote_code=spec.trust_remote_code)
    sides = {"original": spec, "quantized": quantized_spec}
    for side, side_spec in sides.items():
        _score(request, side_spec, data, data_info, {k: root / side / f"shots-{k}" for k in request.shots}, cache)
    source_dir = resolve_source(spec, cache).path
    sizes = (weights_bytes(source_dir), weights_bytes(checkpoint.path))
    costs = [
        quantization_cost(
            load_run(root / "original" / f"shots-{k}"), load_run(root / "quantized" / f"shots-{k}"), label(checkpoint.marker), sizes
        )
        for k in request.shots
    ]
    markdown = render_markdown(costs)
    record = {"checkpoint": str(checkpoint.path), "quantization": checkpoint.marker, "comparisons": [c.record() for c in costs]}
    write_all_or_none({
        root / "comparison.md": markdown,
        root / "comparison.json": json.dumps(record, ensure_ascii=False, indent=2) + "\n",
    })
    return Comparisons(root, markdown)


def _score(request: EvalRequest, spec, data, data_info, outputs: dict, cache: Path) -> None:
    from harness.evaluate import EvalSettings, evaluate
    from harness.models import load_model
    from harness.prompts import PromptFormat
    from tasks import get_protocol

    loaded = load_model(spec, cache)
    protocol = get_protocol(request.protocol)
    for shots, out in outputs.items():
        settings = EvalSettings(
            fmt=PromptFormat(protocol, shots, request.chat), limit=request.limit, batch_size=request.batch_size, seed=0
        )
        evaluate(loaded, data, settings, out, data_info=data_info, progress=request.progress)
    del loaded  # one model in memory at a time
    gc.collect()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def describe_checkpoint(checkpoint) -> str:
    """The line `harness quantize` reports a made (or reused) checkpoint with."""
    from harness.quantize.checkpoint import label
    from harness.quantize.comparison import format_bytes, weights_bytes

    m = checkpoint.marker
    what = label(m)
    if checkpoint.reused:
        return f"{checkpoint.path}: already holds this quantization of {m['source']} ({what}); using it"
    calib = f"; calibration {m['calibration']['source']} ({m['calibration']['texts']} texts)" if m.get("calibration") else ""
    return (
        f"{checkpoint.path}: {m['source']} quantized ({what}{calib}); {m['quantized_layers']} layers quantized, "
        f"{', '.join(m['float_layers']) or 'none'} kept in floating point; weights {format_bytes(weights_bytes(checkpoint.path))}; "
        f"reload verified (identical logits); {m['quantize_seconds']:.1f} s"
    )
