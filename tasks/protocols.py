"""Prompt protocols: how a question and its few-shot examples become one prompt string.

The protocols themselves are data (`protocols.yaml`); this module only renders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import yaml

from tasks.data import Question
from tasks.errors import TaskError
from tasks.registry import LETTERS, Subject

MAX_SHOTS = 5


@dataclass(frozen=True)
class Protocol:
    """A named, versioned prompt format (see protocols.yaml for the field meanings)."""

    name: str
    version: str
    title: str
    header: str | dict[str, str]
    block: str
    shot_answer: str
    separator: str
    continuation: str
    strip_question: bool = False
    move_trailing_whitespace: bool = False
    aggregate: str = "micro"

    def header_for(self, subject: Subject) -> str:
        template = self.header
        if isinstance(template, dict):
            template = template[subject.benchmark.prompt_style]
        return template.format(name_zh=subject.name_zh)

    def render_block(self, q: Question) -> str:
        question = q.question.strip() if self.strip_question else q.question
        return self.block.format(question=question, **dict(zip(LETTERS, q.options)))

    def render(self, subject: Subject, shots: tuple[Question, ...], q: Question) -> str:
        """The prompt for `q` after `shots` (already chosen), ending where the letter is scored."""
        parts = [self.render_block(s) + self.shot_answer.format(answer=s.answer) for s in shots]
        parts.append(self.render_block(q))
        return self.header_for(subject) + self.separator.join(parts)

    def continuations(self) -> tuple[str, ...]:
        """The four scored strings, in A..D order."""
        return tuple(self.continuation.format(letter=letter) for letter in LETTERS)

    @property
    def id(self) -> str:
        return f"{self.name}/v{self.version}"


@cache
def protocols() -> dict[str, Protocol]:
    spec = yaml.safe_load(files("tasks").joinpath("protocols.yaml").read_text(encoding="utf-8"))
    return {name: Protocol(name=name, **{k: v for k, v in p.items()}) for name, p in spec.items()}


def get_protocol(name: str) -> Protocol:
    try:
        return protocols()[name]
    except KeyError:
        raise TaskError(f"unknown protocol {name!r}; known: {', '.join(protocols())}") from None


def check_shots(shots: int) -> int:
    if not 0 <= shots <= MAX_SHOTS:
        raise TaskError(f"--shots {shots} is outside 0..{MAX_SHOTS}")
    return shots


def fewshot_examples(pool: tuple[Question, ...], shots: int, subject: Subject) -> tuple[Question, ...]:
    """The first `shots` rows of the few-shot split, in file order."""
    check_shots(shots)
    if len(pool) < shots:
        raise TaskError(
            f"{subject.key}: the {subject.fewshot_split} split has {len(pool)} rows, {shots} shots asked"
        )
    return pool[:shots]
