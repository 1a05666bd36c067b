"""The leaderboard as data: sections of comparable numbers, tables in the model card's shape.

- A *section* holds runs on the same questions, prompts and data (protocol and version, subject
  set and limit, text normalization, data fingerprint). Numbers of different sections are never
  ranked in one table; each section says what it used.
- In a section, a *table* per kind of prompt: Base (plain prompt) and Chat (one ChatML user turn;
  the tokenizer's own chat template is a table of its own), as in the model card.
- A *row* is one model; its cells are zero-shot and five-shot accuracy. Reported rows (the model
  card's numbers) sit in the sections whose protocol, version and question set are the card's,
  labelled as reported.
- The Int4 cells (the card's third column) hold runs whose record says `model.quantization.bits`
  is 4. Such a run fills the Int4 cells of the row of the model it was made from when its
  quantization record names it (`"source"`: that model's name as given to `harness eval`) and
  that row is in the same table; otherwise it is a row of its own with only Int4 cells. The Int4
  columns appear in a table only when it has such a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.errors import HarnessError, RunError
from harness.records import Run
from leaderboard.references import Reference, card_mismatch, references

CARD_SHOTS = (0, 5)  # the model card's columns
REPORTED, MEASURED = "reported", "measured"
# Parameter-count bands, in billions, that group rows the way the model card does (13B with 14B).
SIZE_BANDS = (1, 4, 10, 20, 50, 100)


@dataclass(frozen=True)
class Cell:
    """One number of a table, in percent: reported (no interval), or measured by `run`."""

    percent: float
    low: float | None = None
    high: float | None = None
    correct: int | None = None
    n: int | None = None
    run: Run | None = None

    @classmethod
    def measured(cls, run: Run) -> Cell:
        m = run.micro
        return cls(100 * m.accuracy, 100 * m.low, 100 * m.high, m.correct, m.n, run)


@dataclass
class Row:
    """One model in a table: its cells by (int4, shots)."""

    label: str
    model: str  # the name as recorded (reported rows: the card's name)
    source: str  # REPORTED or MEASURED
    parameters: float | None
    cells: dict[tuple[bool, int], Cell] = field(default_factory=dict)
    highlight: bool = False
    runs: list[Run] = field(default_factory=list)

    def cell(self, shots: int, int4: bool = False) -> Cell | None:
        return self.cells.get((int4, shots))

    @property
    def contamination(self) -> str | None:
        """Why the row is flagged: a run of its model was trained on data holding evaluated questions."""
        return next((run.contamination for run in self.runs if run.contamination), None)

    @property
    def size_band(self) -> int:
        if self.parameters is None:
            return -1
        return sum(self.parameters >= b * 1e9 for b in SIZE_BANDS)

    def rank_key(self) -> tuple:
        """Size band (largest first), then five-shot score, then zero-shot (the Int4 ones for a
        row that has only those), then name."""
        plain = [self.cells.get((False, 5)), self.cells.get((False, 0))]
        scores = plain if any(plain) else [self.cells.get((True, 5)), self.cells.get((True, 0))]
        first = next((c.percent for c in scores if c), float("-inf"))
        second = scores[1].percent if scores[1] else float("-inf")
        return (-self.size_band, -first, -second, self.label.lower(), self.label)


@dataclass
class Table:
    kind: str  # Base or Chat
    chat: str | None  # None, "chatml" or "tokenizer"
    rows: list[Row]

    @property
    def int4(self) -> bool:
        """Whether the Int4 columns are shown: only when some row has a 4-bit run."""
        return any(int4 for row in self.rows for int4, _ in row.cells)


@dataclass
class Section:
    """Tables of numbers that may be ranked together: same questions, prompts and data."""

    protocol: str
    version: str
    subjects: tuple[str, ...]
    limit: int | None
    normalize: str
    data: str | None  # None: a section of reported rows only
    data_label: str
    questions: int
    tables: list[Table]
    runs: list[tuple[str, Run]]  # (label, run) for the per-subject table, ranked
    reported: bool
    # The categories and groups of a section beyond the devops group: shown instead of its subjects.
    parts: tuple = ()
    group: str | None = None  # the runs' --group/--subjects names, as given

    def part_score(self, run: Run, name: str, average: str = "macro") -> float | None:
        scores = run.record.scores.parts.get(name)
        return None if scores is None else scores[average == "macro"].accuracy


@dataclass
class Board:
    sections: list[Section]
    reference_source: str


def build_board(runs: list[Run], highlight: list[str] | None = None, refs: tuple[Reference, ...] | None = None) -> Board:
    """Group runs into sections, rows and cells; put the reported rows where they belong."""
    refs = references() if refs is None else refs
    patterns = _patterns(highlight or [])
    grouped: dict[tuple, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.settings.section, []).append(run)
    sections = [_section(key, group, refs, patterns) for key, group in grouped.items()]
    for card in {(r.protocol, r.protocol_version): r for r in refs}.values():  # else in a section of their own
        if not any(s.reported and (s.protocol, s.version) == (card.protocol, card.protocol_version) for s in sections):
            sections.append(_section(_card_section(card), [], refs, patterns))
    sections.sort(key=lambda s: (not s.reported, s.data is not None and s.data_label != "the published files",
                                 s.protocol, s.version, s.subjects, s.limit or 0, s.normalize, s.data or ""))
    return Board(sections, refs[0].source if refs else "")


def _patterns(highlight: list[str]) -> list[re.Pattern]:
    try:
        return [re.compile(p, re.IGNORECASE) for p in highlight]
    except re.error as e:
        raise HarnessError(f"--highlight {e.pattern!r} is not a regular expression: {e}") from None


def _card_section(ref: Reference) -> tuple:
    """The section key of the model card's own setting (its data: the published files)."""
    from tasks import devops_subjects

    return (ref.protocol, ref.protocol_version, tuple(s.key for s in devops_subjects()), None, "none", None)


def _section(key: tuple, runs: list[Run], refs: tuple[Reference, ...], patterns) -> Section:
    protocol, version, subjects, limit, normalize, data = key
    _refuse_duplicates(runs)
    # The card's numbers appear only beside runs they may be ranked with (`card_mismatch`): the
    # card's prompts on all its questions of the published files.
    if runs:
        first = runs[0]
        wanted = [r for r in refs if card_mismatch(first.settings, first.micro.n, str(first.path), r) is None]
    else:
        wanted = [r for r in refs if (r.protocol, r.protocol_version) == (protocol, version)]
    # Rows by table, (kind, chat format); a section with reported rows always shows their tables.
    tables: dict[tuple[str, str | None], list[Row]] = {("Base", None): []} if wanted else {}
    for ref in wanted:
        tables.setdefault((ref.kind, ref.chat), []).append(_reported_row(ref))
    for run in sorted(runs, key=lambda r: r.model.bits == 4):  # 4-bit runs last: they join their source's row
        _place(tables.setdefault(("Chat" if run.chat else "Base", run.settings.chat), []), run)
    built = [_table(kind, chat, rows, patterns) for (kind, chat), rows in sorted(tables.items(), key=_table_order)]
    labelled = [(_run_label(row, run), run) for t in built for row in t.rows for run in row.runs]
    labelled.sort(key=lambda lr: (lr[1].settings.chat or "", lr[1].settings.shots, -lr[1].micro.accuracy, lr[0]))
    sample = runs[0] if runs else None
    return Section(
        protocol, version, subjects, limit, normalize, data,
        data_label=_data_label(sample) if sample else "as published by the model card",
        questions=sample.micro.n if sample else _card_questions(),
        tables=built,
        runs=labelled,
        reported=bool(wanted),
        parts=sample.settings.parts if sample else (),
        group=sample.settings.group if sample else None,
    )


def _card_questions() -> int:
    from tasks import devops_subjects

    return sum(s.count for s in devops_subjects())


def _table_order(item) -> tuple:
    (kind, chat), _ = item
    return (kind != "Base", chat or "")


def _place(rows: list[Row], run: Run) -> None:
    """Put a measured run in its model's row: a 4-bit run in the Int4 cells of the row of the
    model it was made from (its quantization record's `source`), if that row has the cell free."""
    int4 = run.model.bits == 4
    slot = (int4, run.settings.shots)
    row = _source_row(rows, (run.model.quantization or {}).get("source"), slot) if int4 else None
    if row is None:
        row = next((r for r in rows if r.source == MEASURED and r.runs[0].model.identity == run.model.identity), None)
    if row is None:
        row = Row(_measured_label(run.model), run.model.name, MEASURED, run.parameters)
        rows.append(row)
    row.runs.append(run)
    if run.settings.shots in CARD_SHOTS:
        row.cells[slot] = Cell.measured(run)


def _source_row(rows: list[Row], source, slot) -> Row | None:
    """The row of the unquantized model named `source`, if it is in the table with `slot` free."""
    if not source:
        return None
    for row in rows:
        model = row.runs[0].model if row.source == MEASURED else None
        if model and model.quantization is None and source in (model.name, model.path):
            return row if slot not in row.cells else None
    return None


def _table(kind: str, chat: str | None, rows: list[Row], patterns) -> Table:
    _disambiguate([r for r in rows if r.source == MEASURED])
    for row in rows:
        row.highlight = any(p.search(row.label) for p in patterns)  # the name as shown
    return Table(kind, chat, sorted(rows, key=Row.rank_key))


def _reported_row(ref: Reference) -> Row:
    row = Row(ref.name, ref.name, REPORTED, _parse_size(ref.size))
    for shots in CARD_SHOTS:
        row.cells[(False, shots)] = Cell(ref.score(shots))
    return row


def _refuse_duplicates(runs: list[Run]) -> None:
    seen: dict[tuple, Run] = {}
    for run in runs:
        key = (run.model.identity, run.settings)
        if key in seen:
            raise RunError(
                f"{seen[key].path} and {run.path} are runs of the same model and settings "
                f"({run.model.name}, {run.settings.describe()}); pass only one of them"
            )
        seen[key] = run


def _disambiguate(rows: list[Row]) -> None:
    """Make measured labels unique in a table: full name, then dtype, revision, quantization."""
    def clashes() -> set[str]:
        labels = [r.label for r in rows]
        return {label for label in labels if labels.count(label) > 1}

    steps = [
        lambda r, m: m.name,
        lambda r, m: f"{r.label} ({m.dtype})",
        lambda r, m: f"{r.label} @{(m.revision or 'no revision')[:12]}",
        lambda r, m: f"{r.label} [{(m.quantization or {}).get('method', 'unquantized')}]",
    ]
    for step in steps:
        dup = clashes()
        if not dup:
            return
        for row in rows:
            if row.label in dup:
                row.label = step(row, row.runs[0].model)
    for i, row in enumerate(r for r in rows if r.label in clashes()):
        row.label = f"{row.label} #{i + 1}"


def _run_label(row: Row, run: Run) -> str:
    """A row's label in the per-subject table, where a 4-bit run has no column of its own."""
    return f"{row.label} ({quantization_note(run.model)})" if run.model.bits == 4 else row.label


def quantization_note(model) -> str:
    """'gptq 4-bit', 'bnb-int8 8-bit', ...; empty for an unquantized model."""
    q = model.quantization or {}
    if not q:
        return ""
    bits = f"{q['bits']}-bit" if q.get("bits") else ""
    return " ".join(x for x in (str(q.get("method") or "quantized"), bits) if x)


def _measured_label(model) -> str:
    note = quantization_note(model)
    return f"{model.short_name()} ({note})" if note and model.bits != 4 else model.short_name()


def _data_label(run: Run) -> str:
    if run.published_data:
        return "the published files"
    if run.settings.data_origin == "hub":
        return "the Hub datasets at the pinned revisions"
    return "a local copy that differs from the published files"


def _parse_size(size: str) -> float | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMBT])\s*", size.upper())
    if not m:
        return None
    return float(m.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]
