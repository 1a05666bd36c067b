"""Baichuan2-13B's architecture for transformers 5: Llama's layers with ALiBi instead of rotary positions.

No transformers class has ALiBi in a Llama block, so this one is ours: `LlamaForCausalLM` whose
model adds to every attention score the head's ALiBi slope times the key's position (Press et al.,
"Train Short, Test Long"; the slopes of the closest power of two of heads, then every other slope of
the next one, as Baichuan2 does) and leaves the rotary embedding out (cos 1, sin 0: the identity).
Softmax ignores a per-row constant, so the key's absolute position gives the same weights as the
distance. Keys a row may not see (later positions, padding) get the dtype's minimum.
Registered with the Auto classes under `harness_baichuan_alibi` by `register()`.
"""

from __future__ import annotations

import math

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast

MODEL_TYPE = "harness_baichuan_alibi"


class BaichuanAlibiConfig(LlamaConfig):
    model_type = MODEL_TYPE


def alibi_slopes(heads: int) -> torch.Tensor:
    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return torch.tensor(power_of_two(heads))
    closest = 2 ** math.floor(math.log2(heads))
    return torch.tensor(power_of_two(closest) + alibi_slopes(2 * closest).tolist()[0::2][: heads - closest])


def alibi_mask(attention_mask, batch: int, past: int, length: int, heads: int, dtype, device) -> torch.Tensor:
    """(batch, heads, length, past + length): slope × key position where a query may look, else the minimum."""
    total = past + length
    keys = torch.arange(total, device=device)
    queries = past + torch.arange(length, device=device)
    allowed = (keys[None, :] <= queries[:, None])[None].expand(batch, length, total)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :total].to(device=device, dtype=torch.bool)
    bias = alibi_slopes(heads).to(device=device, dtype=torch.float32)[:, None] * keys[None, :].float()
    mask = bias[None, :, None, :].expand(batch, heads, length, total).to(dtype)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


class BaichuanAlibiModel(LlamaModel):
    config_class = BaichuanAlibiConfig

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None, use_cache=None,
                past_key_values=None, **kwargs) -> BaseModelOutputWithPast:
        cache = cache if cache is not None else past_key_values
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        batch, length = inputs_embeds.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (past + torch.arange(length, device=inputs_embeds.device))[None]
        mask = alibi_mask(attention_mask, batch, past, length, self.config.num_attention_heads, inputs_embeds.dtype,
                          inputs_embeds.device)
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        ones = torch.ones(batch, length, head_dim, dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        identity = (ones, torch.zeros_like(ones))  # no rotary positions: ALiBi carries them
        hidden_states = inputs_embeds
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = layer(hidden_states, attention_mask=mask, position_embeddings=identity, position_ids=position_ids,
                                  cache=cache, use_cache=use_cache, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)


class BaichuanAlibiForCausalLM(LlamaForCausalLM):
    config_class = BaichuanAlibiConfig

    def __init__(self, config: BaichuanAlibiConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = BaichuanAlibiModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


def register() -> None:
    """Make the Auto classes load `harness_baichuan_alibi` checkpoints (idempotent)."""
    try:
        AutoConfig.register(MODEL_TYPE, BaichuanAlibiConfig)
        AutoModelForCausalLM.register(BaichuanAlibiConfig, BaichuanAlibiForCausalLM)
    except ValueError:
        pass  # already registered
