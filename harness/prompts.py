"""Prompt strings as the model sees them: a protocol's rendering, optionally in a chat turn."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError, ModelError
from tasks import Protocol, Question, SubjectData, fewshot_examples

CHAT_TEMPLATES = ("chatml", "tokenizer")
# The model card's eval system text, as the card has it (DESIGN §4); training keeps its recipe's: conversation.CHATML_SYSTEM (§7).
CARD_EVAL_SYSTEM = "you are a helpful assistant"
# The model card's Chat rows: the whole k-shot prompt in one user turn, scored at the first
# assistant token.
CHATML = (
    f"<|im_start|>system\n{CARD_EVAL_SYSTEM}<|im_end|>\n"
    "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
)


@dataclass(frozen=True)
class PromptFormat:
    """Protocol, shot count and chat wrapping: everything that decides a prompt's text."""

    protocol: Protocol
    shots: int
    chat: str | None = None  # None, "chatml" or "tokenizer"

    def __post_init__(self):
        if self.chat not in (None, *CHAT_TEMPLATES):
            raise HarnessError(f"unknown chat template {self.chat!r}; choose one of {', '.join(CHAT_TEMPLATES)}")
        if self.chat and self.protocol.move_trailing_whitespace:
            # Its continuations (" A") carry the space that ends the bare prompt; after an assistant
            # header there is none to move, and the letters would not be what the protocol scores.
            raise HarnessError(
                f"the {self.protocol.name} protocol has no chat form (its continuations follow the bare prompt); "
                "drop --chat, or use the devops, cmmlu or ceval protocol"
            )

    @property
    def add_special_tokens(self) -> bool:
        # A tokenizer's own chat template already writes BOS where the model wants it.
        return self.chat != "tokenizer"


def wrap_chat(prompt: str, chat: str | None, tokenizer=None) -> str:
    if chat is None:
        return prompt
    if chat == "chatml":
        return CHATML.format(prompt=prompt)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ModelError("the tokenizer has no chat template of its own; use --chat-template chatml")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def subject_prompts(data: SubjectData, fmt: PromptFormat, tokenizer=None, limit: int | None = None) -> list[tuple[Question, str]]:
    """Each scored question of a subject with its full prompt text."""
    shots = fewshot_examples(data.shots, fmt.shots, data.subject)
    questions = data.questions if limit is None else data.questions[:limit]
    return [
        (q, wrap_chat(fmt.protocol.render(data.subject, shots, q), fmt.chat, tokenizer))
        for q in questions
    ]


def leading_special_ids(tokenizer) -> list[int]:
    """The token ids the tokenizer itself puts before any text (BOS for Gemma and Llama; none for
    Qwen). Asked of the tokenizer rather than read from `add_bos_token`, which some
    post-processors ignore (Gemma's converted tokenizer says False and adds BOS)."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []
