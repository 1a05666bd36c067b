"""InternLM-1 (`InternLMForCausalLM`: internlm-7b, internlm-chat-7b) as transformers' Llama.

The layers are Llama's with biased q/k/v/o projections when `bias` is set (7B; 20B has none):
`LlamaConfig(attention_bias=...)`, rotary base 10000, RMSNorm, the SiLU-gated MLP, an untied
head. The parameter names are already Llama's, so the converted checkpoint is a new config.json
beside links to the original weight files: nothing is copied.

The tokenizer is the SentencePiece BPE model converted as transformers converts any SentencePiece
model (its own normaliser settings, byte fallback, user-defined pieces such as `<eoh>`/`<eoa>`
kept whole), with InternLMTokenizer's `<s>` before every encoding, eos and pad `</s>`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from harness.errors import ModelError
from harness.families.vocab import read_sentencepiece

FORMAT = "internlm"
CONVERTER = "harness.families.internlm/1"
ARCHITECTURE = "InternLMForCausalLM"  # config.json `architectures`; `model_type` is FORMAT
DESCRIBED = "an InternLM checkpoint"  # in messages: "DIR is an InternLM checkpoint without ..."
VOCAB_FILE = "tokenizer.model"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# model.chat's layout (build_inputs), the tokenizer adding <s> in front; no system turn.
CHAT_TEMPLATE = (
    "{{ '<s>' }}"
    "{%- for m in messages if m['role'] != 'system' %}"
    "{%- if m['role'] == 'user' %}{{ '<|User|>:' + m['content'] + '<eoh>\\n' }}"
    "{%- else %}{{ '<|Bot|>:' + m['content'] + '<eoa>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|Bot|>:' }}{%- endif %}"
)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


# --- tokenizer --------------------------------------------------------------------------------


def fast_tokenizer(vocab_file: Path):
    """InternLM's SentencePiece model as a transformers fast tokenizer with InternLMTokenizer's ids."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok, vocab = read_sentencepiece(vocab_file)
    if tok is None or vocab.get(BOS) != 1 or vocab.get(EOS) != 2:
        raise ModelError(f"{vocab_file}: not InternLM's BPE model with <s>=1 and </s>=2")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,  # tokenizer_config's pad (the model config's pad_token_id is 2 since Oct 2023)
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


# --- weights ----------------------------------------------------------------------------------


def llama_config(config: dict):
    """The Llama configuration with InternLM's mathematics."""
    from transformers import LlamaConfig

    if config.get("rope_scaling"):
        raise ModelError(f"InternLM config has rope_scaling={config['rope_scaling']!r}; the native path handles plain RoPE only")
    heads = config["num_attention_heads"]
    return LlamaConfig(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=heads,
        hidden_act=config.get("hidden_act", "silu"),
        max_position_embeddings=config.get("max_position_embeddings", 2048),
        initializer_range=config.get("initializer_range", 0.02),
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},  # InternLMRotaryEmbedding's fixed base
        attention_bias=bool(config.get("bias", True)),
        mlp_bias=False,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        bos_token_id=config.get("bos_token_id", 1),
        eos_token_id=config.get("eos_token_id", 2),
        pad_token_id=config.get("pad_token_id", 2),
        architectures=["LlamaForCausalLM"],
        dtype=str(config.get("torch_dtype") or "float16"),
    )


def write_checkpoint(path: Path, out: Path) -> None:
    """A Llama config.json beside links to the original weight files (same names, same tensors)."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    llama = llama_config(config)
    present = [name for name in _WEIGHT_FILES if (path / name).is_file()]
    if not present:
        raise ModelError(f"{path}: no model.safetensors or pytorch_model.bin (nor a sharded index) to load")
    shards = set(present)
    for index in (name for name in present if name.endswith(".index.json")):
        shards |= set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values())
    for name in sorted(shards):
        _link(path / name, out / name)
    llama.save_pretrained(out)
    (out / "SOURCE.json").write_text(
        json.dumps({"source": str(path), "source_format": FORMAT, "converter": CONVERTER, "linked": sorted(shards)}, indent=2),
        encoding="utf-8",
    )


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.absolute(), dst)
    except OSError:
        shutil.copyfile(src, dst)
