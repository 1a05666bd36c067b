"""Multi-turn chat with one model, as the model card's quick start does with `model.chat(query, history)`.

A `Conversation` keeps the history, lays each prompt out with a chat template (`default` or
`chatml`, token by token the way training lays out an sft example) or with the tokenizer's own
chat template, and generates an answer that ends at the template's stop word or at EOS, whichever
comes first; the stop word is not part of the answer. Text in, text out: reading a terminal is
the CLI's business (`harness/commands/chat.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from harness.conversation import TEMPLATES, ChatTemplate, get_template
from harness.errors import HarnessError, ModelError, first_line
from harness.prompts import leading_special_ids

log = logging.getLogger(__name__)

TOKENIZER_TEMPLATE = "tokenizer"  # the tokenizer's own chat template (tokenizer_config.json)
TEMPLATE_CHOICES = (*TEMPLATES, TOKENIZER_TEMPLATE)
_SENTINEL = "HARNESS-CHAT-ANSWER-7F3A"  # stands for an answer when finding where a template closes one


@dataclass(frozen=True)
class Decoding:
    """How answers are generated. Temperature 0 is greedy; above 0, sampling seeded by `seed`."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float | None = None  # None: the checkpoint's generation_config.json decides
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise HarnessError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        if self.temperature < 0:
            raise HarnessError(f"--temperature {self.temperature}: must be 0 (greedy) or more")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise HarnessError(f"--top-p {self.top_p}: must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Prompt:
    """What the model continues to answer a turn: as text, and as the token ids it is given."""

    text: str
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Reply:
    """One answered turn."""

    query: str
    prompt: Prompt
    answer: str  # without the stop word or EOS that ended it
    finish: str  # "stop": a stop word or EOS ended the answer; "length": --max-new-tokens did
    new_tokens: int  # tokens generated, the one that stopped generation included


def resolve_template(name: str) -> ChatTemplate | None:
    """A training template by name, or None for the tokenizer's own chat template."""
    return None if name == TOKENIZER_TEMPLATE else get_template(name)


# --- prompts -------------------------------------------------------------------------------------


def render_prompt(
    tokenizer, template: ChatTemplate | None, query: str, history: Sequence[tuple[str, str]] = (), system: str | None = None
) -> Prompt:
    """The prompt for `query` after `history`, laid out by `template` (None: the tokenizer's own)."""
    if template is None:
        text = _apply_tokenizer_template(tokenizer, _messages(query, history, system), generation_prompt=True)
        return Prompt(text, tuple(_encode(tokenizer, text)))
    # As training encodes an sft example: the tokenizer's leading special tokens (BOS) once, then
    # each turn's prompt, response and response end encoded piece by piece.
    eos = tokenizer.eos_token or ""
    end = template.response_end(eos)
    pieces = template.prompts(query, history, system)
    ids = leading_special_ids(tokenizer)
    for prompt, (_, response) in zip(pieces, history):
        ids += _encode(tokenizer, prompt) + _encode(tokenizer, response) + _encode(tokenizer, end)
    ids += _encode(tokenizer, pieces[-1])
    return Prompt(template.render(query, history, system, eos_token=eos), tuple(ids))


def _messages(query: str, history: Sequence[tuple[str, str]], system: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    for q, r in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    return messages + [{"role": "user", "content": query}]


def _apply_tokenizer_template(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # noqa: BLE001  (a template is third-party Jinja; it raises what it likes)
        raise ModelError(f"the tokenizer's chat template refused the conversation: {first_line(e)}") from None


def check_tokenizer_template(tokenizer, model: str) -> None:
    """Refuse `--template tokenizer` for a tokenizer that ships no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"the tokenizer of {model} has no chat template of its own; use --template chatml or --template default"
        )


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


# --- where an answer ends ------------------------------------------------------------------------


@dataclass(frozen=True)
class Stops:
    """What ends an answer: token ids (EOS, one-token stop words) and stop words as text."""

    ids: frozenset[int]
    words: tuple[str, ...]

    def answer(self, tokenizer, generated: Sequence[int]) -> tuple[str, bool]:
        """The answer text in `generated` and whether something that ends an answer was reached."""
        ids = list(generated)
        stopped = False
        for i, token in enumerate(ids):
            if token in self.ids:
                ids, stopped = ids[:i], True
                break
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        found = [i for i in (text.find(word) for word in self.words) if i >= 0]
        if found:
            return text[: min(found)], True
        return text, stopped

    def unsettled(self, text: str) -> int:
        """How many trailing characters may still turn into a stop word or an incomplete character."""
        held = len(text) - len(text.rstrip("\ufffd"))  # bytes of a character still being generated
        for word in self.words:
            for k in range(min(len(word) - 1, len(text)), 0, -1):
                if text.endswith(word[:k]):
                    held = max(held, k)
                    break
        return held


def stops_for(tokenizer, model, template: ChatTemplate | None) -> Stops:
    """EOS (the tokenizer's and the checkpoint's generation config's) and the template's stop words."""
    words = template.stop_words if template is not None else _tokenizer_template_stop_words(tokenizer)
    ids = set(_as_list(tokenizer.eos_token_id)) | set(_as_list(getattr(model.generation_config, "eos_token_id", None)))
    text_words = []
    for word in words:
        token = _single_token(tokenizer, word)
        if token is None:
            text_words.append(word)  # not one token in this vocabulary: found in the decoded text
        else:
            ids.add(token)
    return Stops(frozenset(ids), tuple(text_words))


def _tokenizer_template_stop_words(tokenizer) -> tuple[str, ...]:
    # The token a tokenizer's template writes right after an assistant answer (<|im_end|>,
    # <end_of_turn>, <|eot_id|>) ends an answer. Only a single token counts, so that ordinary
    # text a template happens to write there never cuts an answer short.
    try:
        text = _apply_tokenizer_template(
            tokenizer,
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}],
            generation_prompt=False,
        )
    except ModelError:
        return ()
    after = text.partition(_SENTINEL)[2].split()
    if after and _single_token(tokenizer, after[0]) is not None:
        return (after[0],)
    return ()


def _single_token(tokenizer, word: str) -> int | None:
    ids = _encode(tokenizer, word)
    return ids[0] if len(ids) == 1 else None


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


class _StopAtWords(StoppingCriteria):
    """Stops generation once the decoded answer contains a stop word that is several tokens long."""

    def __init__(self, tokenizer, stops: Stops, prompt_length: int):
        self.tokenizer, self.stops, self.prompt_length = tokenizer, stops, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [self.stops.answer(self.tokenizer, row[self.prompt_length :].tolist())[1] for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class AnswerStreamer(BaseStreamer):
    """Writes the answer to `out` while it is generated: the final answer's text, never a stop word.

    transformers' TextStreamer would print a stop word that is ordinary text, and the start of one
    before it is complete; this one holds back any tail that may still become a stop word.
    """

    def __init__(self, tokenizer, stops: Stops, out: TextIO):
        self.tokenizer, self.stops, self.out = tokenizer, stops, out
        self.ids: list[int] = []
        self.shown = 0
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() hands over the prompt first
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        text, stopped = self.stops.answer(self.tokenizer, self.ids)
        self._show(text if stopped else text[: len(text) - self.stops.unsettled(text)])

    def end(self) -> None:
        self._show(self.stops.answer(self.tokenizer, self.ids)[0])

    def _show(self, text: str) -> None:
        if len(text) > self.shown:
            self.out.write(text[self.shown :])
            self.out.flush()
            self.shown = len(text)


# --- the conversation ----------------------------------------------------------------------------


@dataclass
class Conversation:
    """A multi-turn chat with one loaded model: each answer joins the history the next prompt carries."""

    model: torch.nn.Module = field(repr=False)
    tokenizer: object = field(repr=False)
    template: ChatTemplate | None  # None: the tokenizer's own chat template
    system: str | None = None  # None: the template's own system text
    decoding: Decoding = field(default_factory=Decoding)
    history: list[tuple[str, str]] = field(default_factory=list)
    stops: Stops = field(init=False)

    def __post_init__(self):
        if self.template is None:
            check_tokenizer_template(self.tokenizer, "the model")
        self.stops = stops_for(self.tokenizer, self.model, self.template)

    def render(self, query: str) -> Prompt:
        """The prompt `query` would be asked with now, after the history so far."""
        return render_prompt(self.tokenizer, self.template, query, self.history, self.system)

    def ask(self, query: str, stream: TextIO | None = None) -> Reply:
        """Answer `query` (streaming the answer to `stream` as it is generated) and remember the turn."""
        prompt = self.render(query)
        generated = self._generate(prompt, stream)
        answer, stopped = self.stops.answer(self.tokenizer, generated)
        self.history.append((query, answer))
        return Reply(query, prompt, answer, "stop" if stopped else "length", len(generated))

    def reset(self) -> None:
        """Forget every earlier turn."""
        self.history.clear()

    def _generate(self, prompt: Prompt, stream: TextIO | None) -> list[int]:
        context = _context_length(self.model)
        room = context - len(prompt.ids)
        if room < 1:
            raise HarnessError(
                f"the conversation is {len(prompt.ids)} tokens, leaving no room for an answer in the model's context "
                f"of {context}; /reset to start over"
            )
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([prompt.ids], dtype=torch.long, device=device)
        criteria = StoppingCriteriaList([_StopAtWords(self.tokenizer, self.stops, len(prompt.ids))] if self.stops.words else [])
        streamer = AnswerStreamer(self.tokenizer, self.stops, stream) if stream is not None else None
        torch.manual_seed(self.decoding.seed)  # each turn: same conversation, same answers
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=self._generation_config(min(self.decoding.max_new_tokens, room)),
                stopping_criteria=criteria,
                streamer=streamer,
            )
        return output[0, len(prompt.ids) :].tolist()

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        # What the flags say wins; what they leave open (top-k, a repetition penalty) comes from the
        # checkpoint's generation_config.json, as in the model card's quick start.
        d = self.decoding
        stop_ids = sorted(self.stops.ids) or None
        pad = self.tokenizer.pad_token_id
        settings = {
            "max_new_tokens": max_new_tokens,
            "do_sample": not d.greedy,
            "eos_token_id": stop_ids,
            "pad_token_id": pad if pad is not None else stop_ids and stop_ids[0],
        }
        if not d.greedy:
            settings["temperature"] = d.temperature
        if d.top_p is not None:
            settings["top_p"] = d.top_p
        return GenerationConfig(**settings)


def _context_length(model) -> int:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or 1 << 31


def template_warning(tokenizer, template: ChatTemplate | None) -> str | None:
    """Why answers may be poor: the template's special tokens are not single tokens for this tokenizer."""
    split = [t for t in (template.special_tokens if template else ()) if _single_token(tokenizer, t) is None]
    if not split:
        return None
    others = "--template default" + (", or --template tokenizer" if getattr(tokenizer, "chat_template", None) else "")
    return (
        f"the tokenizer splits {', '.join(split)} into several tokens, so the model was not tuned on the "
        f"{template.name} template; answers may be poor (try {others})"
    )
