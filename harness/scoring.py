"""Letter scoring: the next-token logits of A..D at the end of each prompt.

One forward pass per question. Questions of a subject share a long prefix (instruction and
few-shot examples); its KV cache is computed once and each question runs only its own tokens
against it. Questions are batched by length with right padding, and only the last real
position of each row is projected onto the vocabulary.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import ModelError


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


def plan_batches(
    groups: list[list[Encoded]], *, batch_size: int, max_batch_tokens: int, prefix_cache: bool
) -> list[Batch]:
    """A deterministic batch plan: per group, rows sorted longest first, packed under both limits.

    The plan depends only on the prompts and the limits, so a resumed run recomputes exactly the
    batches an uninterrupted run would have (and so the same floating-point results).
    """
    plan = []
    for g, items in enumerate(groups):
        prefix = common_prefix_len([it.input_ids for it in items]) if prefix_cache else 0
        order = sorted(range(len(items)), key=lambda i: (-len(items[i].input_ids), i))
        batch: list[int] = []
        for i in order:
            # Rows are sorted longest first, so the batch's first row sets its padded width.
            width = len(items[batch[0]].input_ids) - prefix if batch else 0
            if batch and (len(batch) >= batch_size or width * (len(batch) + 1) > max_batch_tokens):
                plan.append(Batch(g, tuple(batch), prefix))
                batch = []
            batch.append(i)
        if batch:
            plan.append(Batch(g, tuple(batch), prefix))
    return plan


class LetterScorer:
    """Runs batches of a plan on a causal LM and returns the four letter logits per row (fp32)."""

    def __init__(self, model, *, pad_id: int = 0):
        self.model = model
        self.pad_id = pad_id
        self.device = model.get_input_embeddings().weight.device  # the first layer's, under a device map
        params = _forward_params(model)
        # Fast path: the model slices positions before its LM head and takes a Cache object.
        self.fast = "logits_to_keep" in params and ("cache" in params or "past_key_values" in params)
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self._prefix_key: tuple[int, ...] | None = None
        self._prefix_cache = None

    @torch.inference_mode()
    def score(self, batch: Batch, items: list[Encoded]) -> np.ndarray:
        rows = [items[i] for i in batch.items]
        prefix_len = batch.prefix_len if self.fast else 0
        cache = self._cache_for(rows[0].input_ids[:prefix_len], len(rows)) if prefix_len else None
        suffixes = [r.input_ids[prefix_len:] for r in rows]
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, s in enumerate(suffixes):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, prefix_len : prefix_len + len(s)] = 1
        last = torch.tensor([len(s) - 1 for s in suffixes])
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


def _forward_params(model) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)
