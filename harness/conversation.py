"""Conversation formats: how a conversation is laid out as text for a model tuned on it.

`default` and `chatml` (what `--template` chooses) are LLaMA-Efficient-Tuning's templates of the
same names, the ones the DevOps-Model recipe trains with (`--template default` for `pt`, `chatml`
for Qwen `sft`). Training renders its examples with them and a chat front end renders its prompts
with them, so a model is asked questions in the layout it was tuned on. Plain text in, plain text
out: no tokenizer here.

The layout of a conversation (system block, then turns):

    turn 0:  system block + separator + query_format(query)   response + response end
    turn t:  separator + query_format(query)                   response + response end

where the system block is empty (and takes no separator) when `system_format` renders nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError

# The training recipe's ChatML system text, as the recipe has it (DESIGN §7); eval keeps the card's: prompts.CARD_EVAL_SYSTEM (§4).
CHATML_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class ChatTemplate:
    """A conversation layout; the strings are those of LLaMA-Efficient-Tuning's template."""

    name: str
    system: str  # the system text used when a conversation brings none
    system_format: str  # renders {system} into the system block
    query_format: str  # renders {query} into a user turn, up to where the assistant answers
    separator: str  # after the system block, and between turns
    stop_words: tuple[str, ...] = ()  # text that ends a response; none: the tokenizer's EOS token
    special_tokens: tuple[str, ...] = ()  # strings the tokenizer must know as single tokens

    def prompts(self, query: str, history: Sequence[tuple[str, str]] = (), system: str | None = None) -> list[str]:
        """The text before each response: one entry per past turn of `history`, then `query`'s."""
        block = self.system_format.format(system=system or self.system)
        queries = [q for q, _ in history] + [query]
        out = []
        for i, q in enumerate(queries):
            lead = (block + self.separator if block else "") if i == 0 else self.separator
            out.append(lead + self.query_format.format(query=q))
        return out

    def response_end(self, eos_token: str) -> str:
        """What closes a response: the first stop word, else the tokenizer's EOS token."""
        return self.stop_words[0] if self.stop_words else eos_token

    def render(
        self,
        query: str,
        history: Sequence[tuple[str, str]] = (),
        system: str | None = None,
        *,
        eos_token: str = "",
    ) -> str:
        """The prompt a model continues to answer `query`, each past response closed by its end."""
        prompts = self.prompts(query, history, system)
        end = self.response_end(eos_token)
        past = "".join(p + r + end for p, (_, r) in zip(prompts, history))
        return past + prompts[-1]


TEMPLATES = {
    t.name: t
    for t in (
        ChatTemplate(
            name="default",
            system=(
                "A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions."
            ),
            system_format="{system}",
            query_format="Human: {query}\nAssistant: ",
            separator="\n",
        ),
        ChatTemplate(
            name="chatml",
            system=CHATML_SYSTEM,
            system_format="<|im_start|>system\n{system}<|im_end|>",
            query_format="<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n",
            separator="\n",
            stop_words=("<|im_end|>",),
            special_tokens=("<|im_start|>", "<|im_end|>"),
        ),
    )
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise HarnessError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATES)}") from None
