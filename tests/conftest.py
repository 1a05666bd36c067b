"""Shared fixtures: the staged benchmark data, and tiny real models built on the spot.

Tiny models are real architectures (Qwen2, Llama, Gemma 3) with a few thousand parameters and a
byte-level BPE tokenizer trained here on the questions' own text, saved with save_pretrained:
the real loading code and real forward passes run, in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "cmmlu").is_dir():
        pytest.fail(f"benchmark data not found at {DATA_DIR}; set HARNESS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def subject_data(data_dir):
    from tasks import devops_subjects, load_local

    return {d.subject.key: d for d in load_local(data_dir, devops_subjects())}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Named models convert once into a cache; tests share one that is not the user's.
    monkeypatch.setenv("HARNESS_CACHE", str(_shared_cache()))


def _shared_cache() -> Path:
    path = Path(os.environ.get("HARNESS_TEST_CACHE") or ROOT / ".pytest_cache" / "harness-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _training_text(subject_data) -> list[str]:
    from tasks import get_protocol, protocols

    texts = []
    for d in subject_data.values():
        for name in protocols():
            p = get_protocol(name)
            texts.append(p.render(d.subject, d.shots, d.questions[0]))
            texts.extend(p.render(d.subject, (), q) + p.continuations()[0] for q in d.questions)
    return texts


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, subject_data) -> Path:
    """A byte-level BPE (Qwen2-style: no BOS) trained on the questions; letters are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(subject_data), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=special[1:],
    )
    out = tmp_path_factory.mktemp("tiny-tokenizer")
    fast.save_pretrained(out)
    return out


def _tiny_config(arch: str, vocab_size: int):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.2,  # spread-out logits: fewer near-ties between letters
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=None,
    )
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "gemma3":
        # A short sliding window and a final soft-cap exercise the paths Gemma 3 270M takes.
        return Gemma3TextConfig(
            **{**common, "num_key_value_heads": 1},
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=24,
            layer_types=["sliding_attention", "full_attention"],
            final_logit_softcapping=30.0,
        )
    raise ValueError(arch)


def build_tiny_model(arch: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config(arch, len(tokenizer)), dtype=torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, tiny_tokenizer_dir):
    """`make(arch="qwen2", seed=0)` → a saved tiny checkpoint directory (cached per arch and seed)."""
    made: dict[tuple[str, int], Path] = {}

    def make(arch: str = "qwen2", seed: int = 0) -> Path:
        key = (arch, seed)
        if key not in made:
            made[key] = build_tiny_model(arch, tiny_tokenizer_dir, tmp_path_factory.mktemp(f"tiny-{arch}-{seed}"), seed)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory) -> Path:
    return tiny_model_factory("qwen2")


@pytest.fixture(scope="session")
def packed_linear() -> list[str]:
    """["onednn-packed-linear"] where this CPU's oneDNN lays a bfloat16 weight out once (it needs
    AVX-512 BW/VL/DQ or AVX-NE-CONVERT: an AVX2-only CPU such as AMD Zen 3 has neither), else []:
    the packed stand-in a bfloat16 CPU run gets on this machine. Asked of oneDNN itself, not of the harness."""
    import torch

    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 8, dtype=torch.bfloat16), 4)
    except (RuntimeError, AttributeError):
        return []
    return ["onednn-packed-linear"]


@pytest.fixture
def cpu_has(monkeypatch):
    """`cpu_has(bf16=..., fp16=...)`: what torch.cpu's probes say this CPU has, for one test: bfloat16
    matrix instructions (AVX-512 BF16 and AMX tiles) and float16 ones (AMX-FP16)."""
    import torch

    def has(bf16: bool, fp16: bool = False) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: fp16)

    return has


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """Gemma 3 270M (base), converted once from the PyPI package's GGUF into the test cache."""
    from harness.models import NAMED_MODELS

    return NAMED_MODELS["gemma-3-270m"](_shared_cache())


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on shared CPU cores: one torch thread is several times faster than two contended
    ones (a module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
