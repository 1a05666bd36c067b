"""Reading an original checkpoint's weight files and writing converted ones, a shard at a time."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import ModelError

_INDEXES = (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin"))
# The files `weight_shards` reads, as Hub file patterns (huggingface_hub's allow_patterns): the
# indexes, and the weight files of either format, whatever names an index gives its shards. A repo
# that ships both formats has both fetched; the safetensors are the ones read.
WEIGHT_PATTERNS = (*(index for index, _ in _INDEXES), "*.safetensors", "*.bin")


def weight_shards(path: Path) -> list[Path]:
    """The checkpoint's weight files: an index's shards, or the single file."""
    for index_name, single in _INDEXES:
        index = path / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return [path / f for f in dict.fromkeys(weight_map.values())]
        if (path / single).is_file():
            return [path / single]
    raise ModelError(f"{path}: no model.safetensors or pytorch_model.bin (nor a sharded index) to convert")


def read_shard(shard: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    if shard.suffix == ".safetensors":
        return load_file(shard)
    try:
        return torch.load(shard, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # a file from before torch's zip format cannot be memory-mapped
        return torch.load(shard, map_location="cpu", weights_only=True)


def write_converted(path: Path, out: Path, convert_tensors, config, source: dict) -> None:
    """`convert_tensors` applied to each shard of `path`, written as safetensors in `out` with
    `config` (a transformers config) and SOURCE.json: memory holds one shard at a time."""
    from safetensors.torch import save_file

    shards = weight_shards(path)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        name = "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = convert_tensors(read_shard(shard))
        save_file(tensors, out / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    config.save_pretrained(out)
    record = {"source": str(path), **source, "shards": [s.name for s in shards]}
    (out / "SOURCE.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
