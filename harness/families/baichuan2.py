"""Baichuan2 (`BaichuanForCausalLM`): 7B as transformers' Llama, 13B as Llama with ALiBi (harness.families.alibi).

Both are Llama blocks with the q/k/v projections fused in `W_pack` (rows q, k, v; no biases) and
a NormHead: in evaluation the head's rows are L2-normalised once, so the converted `lm_head` holds
the normalised rows (computed in the weights' own dtype, as the original does). RMSNorm,
SiLU-gated MLP, untied head. 7B has rotary positions (base 10000); 13B has ALiBi instead, and its
config no `max_position_embeddings` (only `model_max_length`), which is how the two are told apart.

The tokenizer: transformers' conversion of the SentencePiece BPE model (identity normaliser, no
dummy prefix, byte fallback, user-defined pieces such as `<reserved_106>` kept whole); no BOS or EOS
added, as BaichuanTokenizer (add_bos_token false); eos `</s>`, pad = unk `<unk>`.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import ModelError
from harness.families.shards import write_converted
from harness.families.vocab import read_sentencepiece

FORMAT = "baichuan"
CONVERTER = "harness.families.baichuan2/1"
ARCHITECTURE = "BaichuanForCausalLM"  # config.json `architectures`; `model_type` is FORMAT
ALIBI_MODEL_TYPE = "harness_baichuan_alibi"  # 13B's converted class (alibi.MODEL_TYPE), told without importing it
DESCRIBED = "a Baichuan2 checkpoint"  # in messages: "DIR is a Baichuan2 checkpoint without ..."
VOCAB_FILE = "tokenizer.model"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
USER, ASSISTANT = "<reserved_106>", "<reserved_107>"  # generation_config's user_token_id 195, assistant_token_id 196
# model.chat's layout (generation_utils.build_chat_input): system, then per turn the role token and the text.
CHAT_TEMPLATE = (
    "{%- for m in messages %}"
    "{%- if m['role'] == 'system' %}{{ m['content'] }}"
    "{%- elif m['role'] == 'user' %}{{ '" + USER + "' + m['content'] }}"
    "{%- else %}{{ '" + ASSISTANT + "' + m['content'] }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '" + ASSISTANT + "' }}{%- endif %}"
)


# --- tokenizer --------------------------------------------------------------------------------


def fast_tokenizer(vocab_file: Path):
    """Baichuan2's SentencePiece model as a transformers fast tokenizer with BaichuanTokenizer's ids."""
    from transformers import PreTrainedTokenizerFast

    tok, vocab = read_sentencepiece(vocab_file)
    if tok is None or (vocab.get(UNK), vocab.get(BOS), vocab.get(EOS), vocab.get(USER), vocab.get(ASSISTANT)) != (0, 1, 2, 195, 196):
        raise ModelError(f"{vocab_file}: not Baichuan2's BPE model (<unk> 0, <s> 1, </s> 2, <reserved_106> 195, <reserved_107> 196)")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=UNK,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


# --- weights ----------------------------------------------------------------------------------


def uses_alibi(config: dict) -> bool:
    return "max_position_embeddings" not in config


def register() -> None:
    """The ALiBi class (13B) known to the Auto classes; only imported when a Baichuan2 model loads."""
    from harness.families.alibi import register

    register()


def llama_config(config: dict):
    """The Llama configuration with Baichuan2's mathematics: rotary (7B) or the ALiBi class (13B)."""
    from transformers import LlamaConfig

    alibi = uses_alibi(config)
    if alibi:
        from harness.families.alibi import BaichuanAlibiConfig
    heads = config["num_attention_heads"]
    return (BaichuanAlibiConfig if alibi else LlamaConfig)(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=heads,
        hidden_act=config.get("hidden_act", "silu"),
        max_position_embeddings=config["model_max_length"] if alibi else config["max_position_embeddings"],
        initializer_range=config.get("initializer_range", 0.02),
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},  # RotaryEmbedding's fixed base
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        bos_token_id=config.get("bos_token_id", 1),
        eos_token_id=config.get("eos_token_id", 2),
        pad_token_id=config.get("pad_token_id", 0),
        architectures=["BaichuanAlibiForCausalLM" if alibi else "LlamaForCausalLM"],
        dtype=str(config.get("torch_dtype") or "bfloat16"),
    )


def convert_tensors(tensors: dict) -> dict:
    """One shard's tensors under Llama's names: W_pack split into q, k, v; the NormHead's rows normalised."""
    import torch

    out = {}
    for name, t in tensors.items():
        if name.endswith(".self_attn.W_pack.weight"):
            prefix = name.removesuffix("W_pack.weight")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                out[f"{prefix}{proj}.weight"] = part.contiguous()
        elif name == "lm_head.weight":
            out[name] = torch.nn.functional.normalize(t)
        elif name.endswith("rotary_emb.inv_freq"):
            continue
        else:
            out[name] = t
    return out


def write_checkpoint(path: Path, out: Path) -> None:
    """The converted checkpoint in `out`, one output shard per input shard."""
    config = llama_config(json.loads((path / "config.json").read_text(encoding="utf-8")))
    write_converted(path, out, convert_tensors, config, {"source_format": FORMAT, "converter": CONVERTER})
