"""Letter scoring: the next-token logits of A..D at the end of each prompt.

One forward pass per question. Questions of a subject share a long prefix (instruction and
few-shot examples); its keys and values are computed once and each question runs only its own
tokens against them. Questions are batched by length with right padding, and only the last real
position of each row is projected onto the vocabulary.

On the architectures whose attention the tests prove (`SHARED_PREFIX_MODEL_TYPES`) the prefix is
shared by every row of a batch without being copied (`shared_prefix_attention` attends to it with
one matrix product for all rows) and the head projects onto the letters' rows only. Other models
take the prefix through transformers' own cache, copied per row.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.errors import ModelError
from harness.kernels import CpuKernels


@dataclass(frozen=True)
class Encoded:
    """A prompt as token ids, and the token id that each of A..D continues it with."""

    input_ids: tuple[int, ...]
    letter_ids: tuple[int, int, int, int]


def encode_prompts(
    tokenizer,
    prompts: list[str],
    continuations: tuple[str, ...],
    *,
    add_special_tokens: bool = True,
    move_trailing_whitespace: bool = False,
    tokenizer_name: str = "the tokenizer",
) -> list[Encoded]:
    """Tokenize prompts and derive each letter's token by encoding prompt+letter.

    The letter's id is what follows the prompt's own encoding in the joint encoding; a tokenizer
    for which that is not exactly one token (or that re-tokenizes the prompt's end) is refused.
    With `move_trailing_whitespace` the context's trailing whitespace moves into the continuation
    (lm-evaluation-harness's rule).
    """
    contexts = [p.rstrip() if move_trailing_whitespace else p for p in prompts]
    joined = [
        ctx + prompt[len(ctx):] + cont
        for ctx, prompt in zip(contexts, prompts)
        for cont in continuations
    ]
    ctx_ids = tokenizer(contexts, add_special_tokens=add_special_tokens)["input_ids"]
    whole_ids = tokenizer(joined, add_special_tokens=add_special_tokens)["input_ids"]
    n = len(continuations)
    out = []
    for i, ctx in enumerate(ctx_ids):
        letters = []
        for j, cont in enumerate(continuations):
            whole = whole_ids[i * n + j]
            tail = whole[len(ctx):]
            if whole[: len(ctx)] != ctx or len(tail) != 1:
                pieces = tokenizer.convert_ids_to_tokens(tail if whole[: len(ctx)] == ctx else whole[-3:])
                raise ModelError(
                    f"{tokenizer_name} does not encode the answer {cont!r} after the prompt as exactly "
                    f"one token (it gives {pieces}); letter scoring needs one token per letter"
                )
            letters.append(tail[0])
        out.append(Encoded(tuple(ctx), tuple(letters)))
    return out


@dataclass(frozen=True)
class Batch:
    """Rows scored together: indices into one group's items, all sharing `prefix_len` tokens."""

    group: int
    items: tuple[int, ...]
    prefix_len: int


def common_prefix_len(sequences: list[tuple[int, ...]]) -> int:
    """Length of the longest common prefix, leaving every sequence at least one token of its own."""
    if not sequences:
        return 0
    first = sequences[0]
    n = min(len(s) for s in sequences) - 1
    for s in sequences[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


# A forward pass's fixed cost in tokens' worth of compute (Python, per-layer kernel launches, the
# letters' head): measured on CPU with Gemma 3 270M, where a pass of 8 × 70 tokens costs about 12%
# more than its tokens alone. The plan weighs it against padding.
FORWARD_COST = 64


def plan_batches(
    groups: list[list[Encoded]], *, batch_size: int, max_batch_tokens: int, prefix_cache: bool,
    forward_cost: int = FORWARD_COST,
) -> list[Batch]:
    """A deterministic batch plan: per group, rows sorted longest first and cut into runs of at most
    `batch_size` rows and `max_batch_tokens` padded tokens (a single row may exceed it), at the cuts
    that make the padded tokens computed plus `forward_cost` per pass fewest: a batch ends where
    the lengths drop, not at a fixed count.

    The plan depends only on the prompts and the limits, so a resumed run recomputes exactly the
    batches an uninterrupted run would have (and so the same floating-point results).
    """
    plan = []
    for g, items in enumerate(groups):
        prefix = common_prefix_len([it.input_ids for it in items]) if prefix_cache else 0
        order = sorted(range(len(items)), key=lambda i: (-len(items[i].input_ids), i))
        widths = [len(items[i].input_ids) - prefix for i in order]
        for first, end in _cheapest_runs(widths, batch_size, max_batch_tokens, forward_cost):
            plan.append(Batch(g, tuple(order[first:end]), prefix))
    return plan


def _cheapest_runs(widths: list[int], max_rows: int, max_tokens: int, forward_cost: int) -> list[tuple[int, int]]:
    """Runs [first, end) covering `widths` (longest first, so a run's first row sets its padded
    width) under both limits, with the least padded tokens + `forward_cost` per run."""
    cost = [0] + [float("inf")] * len(widths)
    first_of = [0] * (len(widths) + 1)  # the best run ending before `end` starts here
    for end in range(1, len(widths) + 1):
        for first in range(end - 1, max(0, end - max_rows) - 1, -1):
            rows = end - first
            if rows > 1 and rows * widths[first] > max_tokens:
                break  # an earlier first row is wider and adds a row: over the limit too
            total = cost[first] + rows * widths[first] + forward_cost
            if total < cost[end]:
                cost[end], first_of[end] = total, first
    runs, end = [], len(widths)
    while end:
        runs.append((first_of[end], end))
        end = first_of[end]
    return runs[::-1]


class LetterScorer:
    """Runs batches of a plan on a causal LM and returns the four letter logits per row (fp32)."""

    def __init__(self, model, *, pad_id: int = 0, shared_prefix: bool = True):
        self.model = model
        self.pad_id = pad_id
        self.device = model.get_input_embeddings().weight.device  # the first layer's, under a device map
        base = _base_model(model)
        params = _forward_params(model)
        # Fast path: the model slices positions before its LM head and takes a Cache object.
        self.fast = "logits_to_keep" in params and ("cache" in params or "past_key_values" in params)
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        # Faster still: the prefix shared across a batch's rows without copies, and a head of the letters' rows only.
        self.shared = shared_prefix and self.fast and getattr(base.config, "model_type", None) in SHARED_PREFIX_MODEL_TYPES
        self.attention = SHARED_PREFIX if self.shared else getattr(base.config, "_attn_implementation", None)
        if self.shared:
            from transformers import AttentionInterface

            AttentionInterface.register(SHARED_PREFIX, shared_prefix_attention)
        self._prefix_key: tuple[int, ...] | None = None
        self._prefix_cache = None
        self.kernels = CpuKernels.for_model(model, self.device)  # bfloat16 stand-ins, same bits (CPU)

    @torch.inference_mode()
    def score(self, batch: Batch, items: list[Encoded]) -> np.ndarray:
        with self.kernels.swapped() if self.kernels else contextlib.nullcontext():
            return self._score(batch, items)

    def _score(self, batch: Batch, items: list[Encoded]) -> np.ndarray:
        rows = [items[i] for i in batch.items]
        if self.shared:
            return self._score_shared(batch.prefix_len, rows)
        prefix_len = batch.prefix_len if self.fast else 0
        cache = self._cache_for(rows[0].input_ids[:prefix_len], len(rows)) if prefix_len else None
        ids, last, width = self._padded([r.input_ids[prefix_len:] for r in rows])
        mask = torch.zeros((len(rows), prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, row in enumerate(rows):
            mask[r, prefix_len : len(row.input_ids)] = 1
        letters = torch.tensor([r.letter_ids for r in rows])
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.fast:
            positions = (prefix_len + torch.arange(width)).expand(len(rows), width).to(self.device)
            kwargs = {self.cache_kw: cache, "use_cache": cache is not None}
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                logits_to_keep=last[:, None].to(self.device),
                **kwargs,
            )
            logits = out.logits[:, 0, :]
        else:
            out = self.model(input_ids=ids, attention_mask=mask)
            logits = out.logits[torch.arange(len(rows)), last.to(self.device)]
        picked = logits.gather(1, letters.to(self.device)).float()
        return picked.cpu().numpy()

    def _padded(self, suffixes: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Right-padded token ids, each row's last real position, and the width."""
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long)
        for r, s in enumerate(suffixes):
            ids[r, : len(s)] = torch.tensor(s)
        return ids, torch.tensor([len(s) - 1 for s in suffixes]), width

    def _score_shared(self, prefix_len: int, rows: list[Encoded]) -> np.ndarray:
        """The batch against the prefix's shared keys and values; only the letters' logits are computed."""
        prefix = self._shared_prefix(rows[0].input_ids[:prefix_len])
        ids, last, width = self._padded([r.input_ids[prefix_len:] for r in rows])
        vocab = sorted({t for r in rows for t in r.letter_ids})  # the rows of the LM head needed
        column = torch.tensor([[vocab.index(t) for t in r.letter_ids] for r in rows])
        positions = (prefix_len + torch.arange(width)).expand(len(rows), width)
        with _letter_head(self.model, vocab), _attention(self.model, SHARED_PREFIX):
            out = self.model(
                input_ids=ids.to(self.device),
                position_ids=positions.to(self.device),
                logits_to_keep=last[:, None].to(self.device),
                use_cache=False,
                shared_prefix=prefix,
            )
        picked = out.logits[:, 0, :].gather(1, column.to(out.logits.device)).float()
        return picked.cpu().numpy()

    def _shared_prefix(self, prefix: tuple[int, ...]) -> SharedPrefix:
        """The prefix's keys and values, computed once per distinct prefix and shared by every batch."""
        if prefix != self._prefix_key:
            self._prefix_cache = SharedPrefix(len(prefix))
            if prefix:
                ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
                with _letter_head(self.model, [0]), _attention(self.model, SHARED_PREFIX):
                    self.model(input_ids=ids, use_cache=False, logits_to_keep=1, shared_prefix=self._prefix_cache)
            self._prefix_cache.recording = False
            self._prefix_key = prefix
        return self._prefix_cache

    def _cache_for(self, prefix: tuple[int, ...], rows: int):
        """The prefix's KV cache, computed once per distinct prefix and copied per batch."""
        if prefix != self._prefix_key:
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self._prefix_cache = getattr(out, "cache", None) or out.past_key_values
            self._prefix_key = prefix
        cache = copy.deepcopy(self._prefix_cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache


# --- attention over a shared prefix ---------------------------------------------------------------

SHARED_PREFIX = "harness_shared_prefix"  # the attention implementation's registered name
# Architectures whose attention is the model's scaled dot product with a causal (and sliding-window)
# mask and nothing else, so `shared_prefix_attention` computes exactly what they compute.
SHARED_PREFIX_MODEL_TYPES = frozenset({"llama", "qwen2", "gemma3_text"})


@dataclass
class SharedPrefix:
    """The keys and values of a prefix, per layer, as (1, kv_heads, length, head_dim): recorded by the
    prefix's own forward pass, then read by every batch of rows that continue it."""

    length: int
    layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    recording: bool = True
    _hidden: dict[tuple, torch.Tensor] = field(default_factory=dict)

    def hidden(self, start: int, width: int, groups: int, window: int | None, device) -> torch.Tensor:
        """Where each of `width` queries at positions start.. may not look (True), repeated for `groups`
        heads: over the rows' own keys, or over the prefix's and theirs where a sliding window cuts
        into the prefix. Made once per shape and shared by the layers."""
        key = (start, width, groups, window, device)
        if key not in self._hidden:
            cuts = window is not None and start + width > window
            q_pos = start + torch.arange(width, device=device)[:, None]
            k_pos = torch.arange(0 if cuts else start, start + width, device=device)[None, :]
            allowed = (k_pos <= q_pos) & (q_pos - k_pos < window) if cuts else k_pos <= q_pos
            self._hidden[key] = (~allowed).repeat(groups, 1)
        return self._hidden[key]


def shared_prefix_attention(
    module, query, key, value, attention_mask, *, shared_prefix: SharedPrefix, scaling: float, dropout: float = 0.0,
    sliding_window: int | None = None, softcap: float | None = None, **kwargs,
):
    """Causal attention of right-padded rows that all continue `shared_prefix` at the same position.

    query (rows, heads, width, head_dim) and key/value (rows, kv_heads, width, head_dim) are the
    rows' own tokens. The prefix's keys are never copied per row: the scores of every row against
    them are one matrix product. Right padding needs no mask (a real token never sees a later pad);
    the causal and sliding-window masks are built from positions. Softmax runs in float32; the
    scores are products in the model's dtype, as in transformers' eager attention (in bfloat16 that
    agrees with the uncached one-question path as often as SDPA's float32 scores do). The keys are
    recorded scaled where `keys_scaled`.
    """
    # Scaling the keys instead of the scores saves a pass over the scores. Where the scale is a power
    # of two (Gemma 3: 1/16) it rounds nothing; other scales in float32 move a score by about one
    # float32 step (the tests' tolerance is 1e-4); bfloat16 keys would round, so there it is not done.
    keys_scaled = softcap is None and (query.dtype == torch.float32 or math.frexp(scaling)[0] == 0.5)
    if keys_scaled:
        key = key * scaling
    if shared_prefix.recording:  # the prefix's own pass: it is the whole sequence
        shared_prefix.layers[module.layer_idx] = (key, value)
        p = 0
    else:
        p = shared_prefix.length
    rows, heads, width, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    q = query.reshape(rows, kv_heads, groups * width, dim)
    parts = [torch.matmul(q, key.transpose(-1, -2))]  # (rows, kv_heads, groups * width, width)
    if p:
        prefix_keys, prefix_values = shared_prefix.layers[module.layer_idx]
        q_all = q.transpose(0, 1).reshape(kv_heads, rows * groups * width, dim)  # all rows' queries, per kv head
        prefix_scores = torch.matmul(q_all, prefix_keys[0].transpose(-1, -2))
        parts.insert(0, prefix_scores.view(kv_heads, rows, groups * width, p).transpose(0, 1))
    scores = torch.cat(parts, dim=-1) if p else parts[0]
    if not keys_scaled:
        scores = scores.float().mul_(scaling)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    hidden = shared_prefix.hidden(p, width, groups, sliding_window, query.device)
    scores[..., scores.shape[-1] - hidden.shape[-1] :].masked_fill_(hidden, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(value.dtype)  # computed in float32 from bfloat16 too
    out = torch.matmul(probs[..., p:], value)  # (rows, kv_heads, groups * width, head_dim)
    if p:
        probs_all = probs[..., :p].transpose(0, 1).reshape(kv_heads, rows * groups * width, p)
        out += torch.matmul(probs_all, prefix_values[0]).view(kv_heads, rows, groups * width, dim).transpose(0, 1)
    return out.view(rows, heads, width, dim).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def _attention(model, implementation: str):
    """The model runs with this attention implementation inside the block, its own outside."""
    base = _base_model(model)
    before = base.config._attn_implementation
    base.set_attn_implementation(implementation)
    try:
        yield
    finally:
        base.set_attn_implementation(before)


class _LetterRows(torch.nn.Module):
    """An LM head cut down to some vocabulary rows: their logits only, as the full head computes them."""

    def __init__(self, head: torch.nn.Linear, ids: list[int]):
        super().__init__()
        index = torch.tensor(ids, device=head.weight.device)
        self.weight = head.weight.index_select(0, index)
        self.bias = None if head.bias is None else head.bias.index_select(0, index)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self.weight, self.bias)


@contextlib.contextmanager
def _letter_head(model, ids: list[int]):
    """Inside the block the model projects onto the rows `ids` of its head only (a plain linear head;
    any other is left whole). What the model does to logits after its head (e.g. Gemma's final
    soft-cap) is element-wise, so the letters' logits are those of the full head."""
    base = _base_model(model)
    head = base.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        yield
        return
    base.set_output_embeddings(_LetterRows(head, ids))
    try:
        yield
    finally:
        base.set_output_embeddings(head)


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _forward_params(model) -> set[str]:
    return set(inspect.signature(_base_model(model).forward).parameters)
