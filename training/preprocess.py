"""Rows → token ids, the two ways the seed's recipe trains.

`pt`:  every text + EOS, concatenated and cut into blocks of `block_size` tokens; the remainder
       that does not fill a block is dropped. Labels are the inputs (the model shifts them).
`sft`: the chat template renders system, history and query; the loss is on the response tokens
       and the token that ends them (the template's stop word, else EOS), on every turn. Per turn
       the prompt is cut to `max_source` tokens and the response to `max_target`; turns that would
       take the example past `max_source + max_target` are dropped.
"""

from __future__ import annotations

from itertools import chain

from harness.conversation import ChatTemplate
from harness.prompts import leading_special_ids
from training.errors import DatasetError, TrainingError

IGNORE_INDEX = -100  # label of a token the loss skips (what transformers' loss ignores)


def _text(value) -> str:
    return "" if value is None else str(value)


def pretrain_blocks(dataset, columns: dict, tokenizer, block_size: int, **map_kwargs):
    """A dataset of `block_size`-token blocks: input_ids, attention_mask, labels."""
    eos = _eos_id(tokenizer)
    text = columns["prompt"]

    def blocks(batch):
        ids = tokenizer([_text(t) for t in batch[text]], add_special_tokens=False)["input_ids"]
        flat = list(chain.from_iterable(seq + [eos] for seq in ids))
        cut = [flat[i : i + block_size] for i in range(0, len(flat) // block_size * block_size, block_size)]
        return {"input_ids": cut, "attention_mask": [[1] * block_size for _ in cut], "labels": [list(b) for b in cut]}

    dataset = dataset.filter(lambda row: bool(_text(row[text]).strip()), **_filter_kwargs(map_kwargs))
    return dataset.map(blocks, batched=True, remove_columns=dataset.column_names, **map_kwargs)


def supervised_examples(
    dataset, columns: dict, tokenizer, template: ChatTemplate, max_source: int, max_target: int, *, name: str, **map_kwargs
):
    """A dataset of rendered conversations: input_ids, attention_mask, labels (IGNORE_INDEX off the responses)."""
    end = tokenizer.convert_tokens_to_ids(template.response_end(tokenizer.eos_token or ""))
    start = leading_special_ids(tokenizer)  # BOS where the tokenizer adds one, as eval and chat see it
    prompt, response = columns["prompt"], columns["response"]

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def examples(batch, indices):
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for j, row in enumerate(indices):  # row: the dataset's own row number, empty rows counted
            if not (_text(batch[prompt][j]).strip() and _text(batch[response][j]).strip()):
                continue  # nothing to learn from
            query = _text(batch[prompt][j])
            if columns["query"] and _text(batch[columns["query"]][j]):
                query += "\n" + _text(batch[columns["query"]][j])
            history = _history(batch[columns["history"]][j], name, row) if columns["history"] else []
            system = _text(batch[columns["system"]][j]) if columns["system"] else None
            responses = [r for _, r in history] + [_text(batch[response][j])]
            input_ids, labels = [], []
            for turn, (p, r) in enumerate(zip(template.prompts(query, history, system), responses)):
                source = ((start if turn == 0 else []) + encode(p))[:max_source]
                target = (encode(r) + [end])[:max_target]
                if len(input_ids) + len(source) + len(target) > max_source + max_target:
                    break
                input_ids += source + target
                labels += [IGNORE_INDEX] * len(source) + target
            out["input_ids"].append(input_ids)
            out["attention_mask"].append([1] * len(input_ids))
            out["labels"].append(labels)
        return out

    # Empty rows are skipped inside the map, not filtered out before it: a bad row's error names its index in the data.
    return dataset.map(examples, batched=True, with_indices=True, remove_columns=dataset.column_names, **map_kwargs)


def check_tokenizer(tokenizer, template: ChatTemplate | None, model: str) -> None:
    """Refuse a tokenizer that cannot end texts (no EOS) or splits the template's special tokens."""
    _eos_id(tokenizer, model)
    for token in template.special_tokens if template else ():
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise TrainingError(
                f"template {template.name} needs {token} as one token, but the tokenizer of {model} splits it into "
                f"{len(ids)}; use --template default, or a tokenizer with ChatML tokens (Qwen)"
            )


def _eos_id(tokenizer, model: str = "the model") -> int:
    if tokenizer.eos_token_id is None:
        raise TrainingError(f"the tokenizer of {model} has no EOS token, which ends every text and response")
    return tokenizer.eos_token_id


def _history(value, name: str, row: int) -> list[tuple[str, str]]:
    pairs = value or []
    if not isinstance(pairs, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise DatasetError(f"dataset {name!r}, row {row}: history must be a list of [query, response] pairs")
    return [(_text(q), _text(r)) for q, r in pairs]


def _filter_kwargs(map_kwargs: dict) -> dict:
    return {k: v for k, v in map_kwargs.items() if k in ("num_proc", "load_from_cache_file")}
