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
