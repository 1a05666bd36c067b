"""The subjects of the DevOps group and their benchmarks, read from `subjects.yaml`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import yaml

from tasks.errors import TaskError

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Benchmark:
    """A source benchmark: its file layout, CSV header and Hub location."""

    key: str
    title: str
    local_path: str
    header: tuple[str, ...]
    optional_columns: tuple[str, ...]
    question_column: str
    answer_column: str
    hub: dict


@dataclass(frozen=True)
class Subject:
    """One evaluated subject: which split is scored, which split gives few-shot examples."""

    key: str
    benchmark: Benchmark
    name_zh: str
    name_en: str
    split: str
    fewshot_split: str
    count: int
    sha256: dict[str, str]  # split -> sha256 of the published file's bytes
    content_sha256: dict[str, str]  # split -> digest of its parsed cells (`tasks.data.content_digest`)
    # (split, record, letter) of option cells the published files leave empty; any other is an error.
    empty_options: frozenset[tuple[str, int, str]] = frozenset()

    def local_file(self, split: str) -> str:
        """The file's path relative to a data directory in the benchmark's own layout."""
        return self.benchmark.local_path.format(split=split, key=self.key)


@cache
def _spec() -> dict:
    return yaml.safe_load(files("tasks").joinpath("subjects.yaml").read_text(encoding="utf-8"))


@cache
def benchmarks() -> dict[str, Benchmark]:
    out = {}
    for key, b in _spec()["benchmarks"].items():
        out[key] = Benchmark(
            key=key,
            title=b["title"],
            local_path=b["local_path"],
            header=tuple(b["header"]),
            optional_columns=tuple(b.get("optional_columns", ())),
            question_column=b["columns"]["question"],
            answer_column=b["columns"]["answer"],
            hub=b["hub"],
        )
    return out


@cache
def all_subjects() -> tuple[Subject, ...]:
    """The six subjects in their canonical order (CMMLU first, then C-Eval)."""
    bench = benchmarks()
    return tuple(
        Subject(
            key=s["key"],
            benchmark=bench[s["benchmark"]],
            name_zh=s["name_zh"],
            name_en=s["name_en"],
            split=s["split"],
            fewshot_split=s["fewshot_split"],
            count=int(s["count"]),
            sha256=dict(s["sha256"]),
            content_sha256=dict(s["content_sha256"]),
            empty_options=_empty_options(s.get("empty_options") or {}),
        )
        for s in _spec()["subjects"]
    )


def _empty_options(declared: dict) -> frozenset[tuple[str, int, str]]:
    """`{split: {record: "CD"}}` as (split, record, letter) triples."""
    return frozenset((split, int(record), letter) for split, rows in declared.items() for record, letters in rows.items() for letter in letters)


GROUP = _spec()["group"]


def select_subjects(names: list[str] | None) -> tuple[Subject, ...]:
    """Subjects by key (or the group name for all six), in canonical order."""
    subjects = all_subjects()
    if not names or names == [GROUP]:
        return subjects
    known = {s.key: s for s in subjects}
    unknown = [n for n in names if n not in known and n != GROUP]
    if unknown:
        raise TaskError(
            f"unknown subject {unknown[0]!r}; known: {GROUP}, " + ", ".join(known)
        )
    if GROUP in names:
        return subjects
    wanted = set(names)
    return tuple(s for s in subjects if s.key in wanted)


def subject_title(key: str) -> str:
    """A subject's English name; the key itself for a subject the registry does not know."""
    return next((s.name_en for s in all_subjects() if s.key == key), key)
