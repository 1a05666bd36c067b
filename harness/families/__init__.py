"""The model card's checkpoints in their original, remote-code formats, loaded natively.

Qwen-1 (`qwen`: DevOps-Model, Qwen-7B/14B) as Qwen2, InternLM-1 (`internlm`) as Llama with biased
attention, Baichuan2 (`baichuan`) as Llama (7B) or our ALiBi class (13B). A family module
names its format (`FORMAT`: config.json's `model_type`; `ARCHITECTURE`), its vocabulary file, how
that becomes a fast tokenizer (`fast_tokenizer`) and how its weights become a class with the same
mathematics (`write_checkpoint`); this module converts both once, into the harness cache. No
remote code runs.
`models.py` asks `source_format` (of a local checkpoint, or of a Hub snapshot once its config.json is
fetched; `hub_files` says what else to fetch) and loads what `convert` returns like any other checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from harness.families import baichuan2, internlm, qwen1
from harness.families.shards import WEIGHT_PATTERNS
from harness.families.vocab import find_vocab, vocab_key

FAMILIES = {family.FORMAT: family for family in (qwen1, internlm, baichuan2)}


def source_format(path: Path) -> str | None:
    """The original format of the checkpoint in `path` ("qwen"...), or None for any other."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # the ordinary loading path reports an unreadable config
    if not isinstance(values, dict):
        return None  # nor is a config that is no object this code's to report
    if not isinstance(values.get("architectures") or [], list):
        values = {**values, "architectures": []}
    architectures = values.get("architectures") or []
    return next((name for name, family in FAMILIES.items()
                 if values.get("model_type") == family.FORMAT or family.ARCHITECTURE in architectures), None)


def register_own_class(path: str | Path) -> None:
    """Before transformers' Auto classes load the checkpoint in `path`: if it is of the harness's own
    class (Baichuan2-13B's ALiBi model: a converted copy, or a fine-tuning, merge or quantization of
    one), make that class known to them in this process. Anything else (a Hub id, a transformers
    class) is left alone."""
    try:
        values = json.loads((Path(path).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return
    if isinstance(values, dict) and values.get("model_type") == baichuan2.ALIBI_MODEL_TYPE:
        baichuan2.register()


def vocab_name(fmt: str) -> str:
    """The tokenizer file a checkpoint in `fmt` ships ("qwen.tiktoken"), which `convert_tokenizer` reads."""
    return FAMILIES[fmt].VOCAB_FILE


def hub_files(fmt: str) -> list[str]:
    """What `convert` reads from a checkpoint in `fmt`, as Hub file patterns for a snapshot: its
    config.json, its vocabulary and its weights. Nothing else of the repo (its remote code, its
    other tokenizer and generation files) is read."""
    return ["config.json", vocab_name(fmt), *WEIGHT_PATTERNS]


def record(fmt: str) -> dict:
    """What the run record's model block says about the conversion."""
    return {"source_format": fmt, "converter": FAMILIES[fmt].CONVERTER}


def convert_tokenizer(path: Path, fmt: str, cache_root: Path) -> Path:
    """A directory with the checkpoint's tokenizer as a transformers fast tokenizer."""
    family = FAMILIES[fmt]
    target = cache_root / f"{fmt}-tokenizer-{vocab_key(_vocab(family, path))}-v{_version(family)}"
    return _once(target, lambda out: _write_tokenizer(family, path, out))


def convert(path: Path, fmt: str, cache_root: Path, fingerprint: str) -> Path:
    """A directory with the checkpoint converted to a transformers class, tokenizer included;
    made once per weights fingerprint and converter version."""
    family = FAMILIES[fmt]
    target = cache_root / f"{fmt}-{fingerprint}-v{_version(family)}"

    def build(out: Path) -> None:
        family.write_checkpoint(Path(path), out)
        _write_tokenizer(family, path, out)

    if hasattr(family, "register"):
        family.register()  # a class of the harness's own (Baichuan2-13B's ALiBi), for from_pretrained
    return _once(target, build)


def _vocab(family, path: Path) -> Path:
    return find_vocab(Path(path), family.VOCAB_FILE, family.DESCRIBED)


def _write_tokenizer(family, path: Path, out: Path) -> None:
    family.fast_tokenizer(_vocab(family, path)).save_pretrained(out)


def _version(family) -> str:
    return family.CONVERTER.rsplit("/", 1)[-1]


def _once(target: Path, build) -> Path:
    """`target`, built by `build(tmp)` into a temporary directory and renamed into place."""
    if (target / "config.json").is_file() or (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # not another process that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
