"""What is scanned (registered datasets as training reads them, or plain files), and the scan itself."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from harness.contamination.corpus import KINDS, CorpusFile, corpus_files, read_records
from harness.contamination.report import findings_record
from tasks import load_benchmark, load_registry
from tasks.contamination import DEFAULT_NGRAM, DEFAULT_THRESHOLD, TextRecord, scan

# Wraps the record stream as it is read (a progress bar), given the files it comes from.
Progress = Callable[[Iterable[TextRecord], list[CorpusFile]], Iterable[TextRecord]]


@dataclass(frozen=True)
class ScanRequest:
    """`harness contamination`'s question: these datasets (or these files) against these questions."""

    datasets: tuple[str, ...] = ()  # names in dataset_dir/dataset_info.json
    dataset_dir: str = "data"
    files: tuple[str, ...] = ()  # used when no datasets are named: files or directories of them
    data_dir: str | None = None  # the benchmark's local copy; None: the Hub
    subjects: tuple[str, ...] | None = None  # subject keys and group names; None: the devops group
    tasks_file: str | None = None  # a user's own subjects (`harness eval --tasks-file`)
    ngram: int = DEFAULT_NGRAM
    threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class ScanResult:
    """The findings as the JSON record (`report.findings_record`), and how long the scan took."""

    record: dict
    seconds: float


def scan_training_data(request: ScanRequest, progress: Progress | None = None) -> ScanResult:
    """Resolve the files (a bad one is refused before the questions load), load the questions, scan."""
    if request.datasets:
        sources = dataset_files(request.dataset_dir, list(request.datasets))
    else:
        sources = corpus_files(list(request.files))
    subjects = list(request.subjects) if request.subjects is not None else None
    questions, benchmark = load_questions(request.data_dir, subjects, request.tasks_file)
    records = all_records(sources)
    started = time.perf_counter()
    findings = scan(questions, progress(records, sources) if progress else records, request.ngram, request.threshold)
    seconds = time.perf_counter() - started
    return ScanResult(findings_record(findings, questions, sources, benchmark, seconds), seconds)


def dataset_files(dataset_dir: str, names: list[str]) -> list[CorpusFile]:
    """The files of registered datasets, each with the columns training reads from it."""
    from training import registry

    entries = registry.read_registry(dataset_dir)
    files = []
    for name in names:
        entry = entries.get(name)
        stage = entry.get("stage") if isinstance(entry, dict) else None
        spec, = registry.resolve(dataset_dir, [name], stage or "pt")  # also: exists, and matches its file_sha1
        files += training_files(spec, stage or "pt")
    return files


def training_files(spec, stage: str) -> list[CorpusFile]:
    """A resolved registry entry (`training.registry.DatasetSpec`) as files to scan, for training at `stage`.

    A column must be there only where training needs it (`training.registry.load`): the prompt, the
    response for sft, and any the registry maps itself; an unmapped default (`input`, `output`, ...)
    is read where the file has it."""
    columns = tuple(dict.fromkeys(c for c in spec.columns.values() if c))
    needed = {"prompt"} | ({"response"} if stage == "sft" else set()) | set(spec.explicit)
    required = {c for role, c in spec.columns.items() if c and role in needed}
    optional = tuple(c for c in columns if c not in required)
    return [CorpusFile(p, KINDS[p.suffix.lower()], columns, spec.name, optional) for p in spec.files]


def all_records(sources: list[CorpusFile]) -> Iterator[TextRecord]:
    for source in sources:
        yield from read_records(source)


def load_questions(data_dir: str | None, subjects: list[str] | None, tasks_file: str | None = None):
    """The evaluated questions (as published) and where they were read."""
    data, info = load_benchmark(data_dir, subjects, "none", load_registry(tasks_file))
    info.pop("selection", None)
    return [q for d in data for q in d.questions], info
