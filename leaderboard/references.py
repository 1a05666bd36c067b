"""The model card's published scores, as data (`references.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import yaml


@dataclass(frozen=True)
class Reference:
    """A reported row: micro accuracy in percent over the 574 questions, zero- and five-shot."""

    name: str
    family: str
    size: str
    kind: str  # Base or Chat
    zero_shot: float
    five_shot: float
    protocol: str
    source: str
    protocol_version: str = "1"
    chat: str | None = None  # how a Chat row was prompted (None for Base rows)

    def score(self, shots: int) -> float | None:
        """The reported percentage for a shots setting (the card reports 0 and 5 only)."""
        return {0: self.zero_shot, 5: self.five_shot}.get(shots)


@cache
def references() -> tuple[Reference, ...]:
    spec = yaml.safe_load(files("leaderboard").joinpath("references.yaml").read_text(encoding="utf-8"))
    return tuple(
        Reference(
            protocol=spec["protocol"],
            protocol_version=str(spec["protocol_version"]),
            chat=spec["chat"] if m["kind"] == "Chat" else None,
            source=spec["source"],
            **{**m, "size": str(m["size"])},
        )
        for m in spec["models"]
    )


def find_reference(name: str) -> Reference:
    """A reference row by name (case-insensitive); KeyError lists the known names."""
    for ref in references():
        if ref.name.lower() == name.lower():
            return ref
    raise KeyError(f"unknown reference model {name!r}; known: {', '.join(r.name for r in references())}")


# --- where the card's numbers apply ------------------------------------------------------------
# The model-card rule, in one place: the leaderboard puts reported rows only in sections it
# returns None for, and `harness gate --min-reference` floors only runs it returns None for.


def card_mismatch(settings, questions: int, who: str, card: Reference | None = None, row: bool = False) -> str | None:
    """Why the model card's numbers (`card`'s; default: the card's first row) do not apply to runs
    of `settings` (`harness.records.RunSettings`) over `questions` questions, said of `who` (a run's
    path); None where they do. That is what a leaderboard section shares — prompts, questions, data —
    and with `row`, also the row's own chat format and shots (a floor compares with one number)."""
    from tasks import devops_subjects

    card = card or references()[0]
    ref = card if row else None
    total = sum(s.count for s in devops_subjects())
    if settings.protocol != card.protocol:
        return f"the model card's scores were measured with the {card.protocol} protocol; {who} used {settings.protocol}"
    if settings.version != card.protocol_version:
        return f"the model card's scores are protocol {card.protocol} v{card.protocol_version}; {who} used v{settings.version}"
    if ref is not None and settings.chat != ref.chat:
        return f"the model card scored {ref.name} {_prompted(ref.chat)}; {who} was scored {_prompted(settings.chat)}"
    if ref is not None and ref.score(settings.shots) is None:
        return f"the model card reports 0- and 5-shot scores only; {who} is {settings.shots}-shot"
    if questions != total:
        return f"the model card's scores are over all {total} questions; {who} scored {questions}"
    if settings.limit is not None and not row:  # a leaderboard section of --limit runs is a smoke test
        return f"the model card's scores are over all {total} questions; {who} used --limit {settings.limit}"
    if settings.normalize != "none":
        return f"the model card's scores are on the text as published; {who} used --normalize {settings.normalize}"
    if not settings.published_data:
        return f"the model card's scores are on the published files; {who} read other data"
    return None


def _prompted(chat: str | None) -> str:
    return f"as a chat model ({chat})" if chat else "without a chat template"
