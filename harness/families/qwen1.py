"""Qwen-1 (`QWenLMHeadModel`: Qwen-7B/14B, DevOps-Model-7B/14B) as transformers' Qwen2.

The mathematics is Qwen2's within the trained context: RMSNorm blocks, rotary attention with biased
q/k/v and an unbiased output projection, a SiLU-gated MLP, an untied head. The fused `c_attn` is
split into q, k, v (rows in that order); the MLP computes `c_proj(w1(x) * silu(w2(x)))`, so `w2`
is Qwen2's gate and `w1` its up projection. Dynamic NTK and logn attention change nothing up to
`seq_length` tokens (their factors are 1 there); past it the original rescales and Qwen2 does not,
so the converted config's `max_position_embeddings` is `seq_length` (8192 for Qwen-7B, 2048 for
Qwen-14B), the limit within which the two agree. The harness's prompts stay far below it.

The tokenizer is `qwen.tiktoken` (byte-level BPE ranks) with Qwen-1's split pattern, NFC
normalisation as `QWenTokenizer.tokenize` does, and the 208 special tokens from id 151643.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from harness.errors import ModelError
from harness.families.shards import write_converted

FORMAT = "qwen"
CONVERTER = "harness.families.qwen1/1"
ARCHITECTURE = "QWenLMHeadModel"  # config.json `architectures`; `model_type` is FORMAT
DESCRIBED = "a Qwen-1 checkpoint"  # in messages: "DIR is a Qwen-1 checkpoint without ..."
VOCAB_FILE = "qwen.tiktoken"
# QWenTokenizer's pre-tokenizer: one digit per piece, unlike cl100k's \p{N}{1,3}.
PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END) + tuple(f"<|extra_{i}|>" for i in range(205))
FIRST_SPECIAL_ID = 151643
# model.chat's layout (qwen_generation_utils.make_context, chat_format "chatml") and its default system text.
CHAT_SYSTEM = "You are a helpful assistant."
CHAT_TEMPLATE = (  # newlines as expressions: transformers renders templates with trim_blocks
    "{%- if messages and messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- else %}{%- set system = '" + CHAT_SYSTEM + "' %}{%- endif %}"
    "{{ '<|im_start|>system\\n' + system + '<|im_end|>' }}"
    "{%- for m in messages if m['role'] != 'system' %}"
    "{{ '\\n<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '\\n<|im_start|>assistant\\n' }}{%- endif %}"
)
_NOT_QWEN2 = {"rotary_pct": 1.0, "no_bias": True}  # what Qwen2's layers assume, with the value they need


# --- tokenizer --------------------------------------------------------------------------------


def read_ranks(vocab_file: Path) -> dict[bytes, int]:
    """The BPE ranks of a tiktoken file: one `base64(token) rank` per line."""
    ranks = {}
    for n, line in enumerate(vocab_file.read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError:
            raise ModelError(f"{vocab_file}: line {n} is not 'base64-token rank'") from None
    return ranks


def fast_tokenizer(vocab_file: Path):
    """`qwen.tiktoken` as a transformers fast tokenizer with QWenTokenizer's ids."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = read_ranks(vocab_file)
    if sorted(ranks.values()) != list(range(FIRST_SPECIAL_ID)):
        raise ModelError(f"{vocab_file}: expected ranks 0..{FIRST_SPECIAL_ID - 1}, one per token")

    class _Ranks(TikTokenConverter):  # transformers' tiktoken conversion, fed ranks read here (no tiktoken needed)
        def load_tiktoken_bpe(self, _url):
            return ranks

    tok = _Ranks(pattern=PATTERN, extra_special_tokens=SPECIAL_TOKENS).converted()
    tok.normalizer = normalizers.NFC()
    if tok.token_to_id(ENDOFTEXT) != FIRST_SPECIAL_ID or tok.get_vocab_size() != FIRST_SPECIAL_ID + len(SPECIAL_TOKENS):
        raise ModelError(f"{vocab_file}: the special tokens did not land at their original ids")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=ENDOFTEXT,  # Qwen-1's end of document (eod_id); its tokenizer names no eos or pad
        pad_token=ENDOFTEXT,
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


# --- weights ----------------------------------------------------------------------------------


def qwen2_config(config: dict):
    """The Qwen2 configuration with the same mathematics, or a ModelError naming what differs."""
    from transformers import Qwen2Config

    for key, needed in _NOT_QWEN2.items():
        if config.get(key, needed) != needed:
            raise ModelError(f"Qwen-1 config has {key}={config[key]!r}; the native path handles only {key}={needed!r}")
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    if config.get("kv_channels", hidden // heads) * heads != hidden:
        raise ModelError("Qwen-1 config has kv_channels × num_attention_heads != hidden_size; the native path cannot load it")
    return Qwen2Config(
        vocab_size=config["vocab_size"],
        hidden_size=hidden,
        intermediate_size=config["intermediate_size"] // 2,  # Qwen-1 halves it for each of w1 and w2
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=heads,
        hidden_act="silu",
        max_position_embeddings=config.get("seq_length", 2048),  # the trained context: no NTK or logn below it
        initializer_range=config.get("initializer_range", 0.02),
        rms_norm_eps=config.get("layer_norm_epsilon", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(config.get("rotary_emb_base", 10000))},
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=FIRST_SPECIAL_ID,
        pad_token_id=FIRST_SPECIAL_ID,
        architectures=["Qwen2ForCausalLM"],
        dtype=_dtype(config),
    )


def _dtype(config: dict) -> str:
    # Qwen-1 picks its precision from bf16/fp16/fp32 flags; with none set it runs in bf16 (DESIGN §4).
    if config.get("fp32"):
        return "float32"
    if config.get("fp16"):
        return "float16"
    if config.get("bf16"):
        return "bfloat16"
    return str(config.get("torch_dtype") or "bfloat16")


_RENAMES = {
    "transformer.wte.weight": "model.embed_tokens.weight",
    "transformer.ln_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER_RENAMES = {
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "mlp.w1.weight": "mlp.up_proj.weight",  # w1(x) * silu(w2(x))
    "mlp.w2.weight": "mlp.gate_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
}
_DROPPED = ("attn.masked_bias", "attn.rotary_emb.inv_freq", "attn.bias")  # buffers some checkpoints carry


def convert_tensors(tensors: dict) -> dict:
    """One shard's tensors under Qwen2's names; `c_attn` split into q, k, v."""
    out = {}
    for name, t in tensors.items():
        if name in _RENAMES:
            out[_RENAMES[name]] = t
            continue
        if not name.startswith("transformer.h."):
            raise ModelError(f"unexpected Qwen-1 weight {name}")
        layer, rest = name.removeprefix("transformer.h.").split(".", 1)
        prefix = f"model.layers.{layer}."
        if rest in _LAYER_RENAMES:
            out[prefix + _LAYER_RENAMES[rest]] = t
        elif rest in ("attn.c_attn.weight", "attn.c_attn.bias"):
            kind = rest.rsplit(".", 1)[1]
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                out[f"{prefix}self_attn.{proj}.{kind}"] = part.contiguous()
        elif not rest.startswith(_DROPPED):
            raise ModelError(f"unexpected Qwen-1 weight {name}")
    return out


def write_checkpoint(path: Path, out: Path) -> None:
    """The converted checkpoint in `out`, one output shard per input shard."""
    config = qwen2_config(json.loads((path / "config.json").read_text(encoding="utf-8")))
    write_converted(path, out, convert_tensors, config, {"source_format": FORMAT, "converter": CONVERTER})
