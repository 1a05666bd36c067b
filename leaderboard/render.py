"""The leaderboard rendered: Markdown (Jinja2 template), CSV, JSON, and the bar chart.

Nothing here depends on the clock or on where it runs beyond `base` (the directory that links
are relative to), so the same runs always render to the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from harness.records import Run
from leaderboard.board import CARD_SHOTS, Board, Cell, Row, Section, Table
from reports.markdown import Raw, environment, md_code, md_escape, md_url
from reports.output import png_bytes, pyplot
from tasks.registry import subject_title

SCHEMA = "devops-eval/leaderboard/1"
CHAT_TEMPLATES = {"chatml": "ChatML", "tokenizer": "the tokenizer's chat template"}


# --- Markdown -------------------------------------------------------------------------------

def render_markdown(board: Board, base: Path, chart: str | None = None) -> str:
    """The leaderboard block; links are relative to `base`; `chart` is the image's relative path."""
    template = environment("leaderboard").get_template("leaderboard.md.j2")
    return template.render(
        board=board,
        chart=md_url(chart) if chart else None,
        section_title=_section_title,
        section_caption=_section_caption,
        table_title=_table_title,
        strong=_strong,
        score=_score,
        percent=lambda x: Raw("–" if x is None else f"{100 * x:.2f}"),
        subject_header=lambda section, key: f"{subject_title(key)} ({_subject_n(section, key)})",
        part_header=lambda p: f"{p.title} ({len(p.subjects)}{'' if p.complete else f' of {p.of}'})",
        kind=_kind,
        run_link=lambda run: _link(run, base),
        contamination_note=_contamination_note,
    )


def _contamination_note(t: Table) -> Raw | None:
    """The footnote of a table's flagged rows (⚠️ after the name): trained on data holding evaluated questions."""
    flagged = [f"{md_escape(r.label)}: {md_escape(r.contamination)}" for r in t.rows if r.contamination]
    return Raw("⚠️ contamination (`harness contamination`): " + "; ".join(flagged) + ".") if flagged else None


def _section_title(s: Section) -> Raw:
    return Raw(f"Protocol {md_code(s.protocol)} v{md_escape(s.version)} · {s.questions} questions · data: {md_escape(s.data_label)}")


def _section_caption(s: Section) -> Raw:
    parts = []
    if s.limit is not None:
        parts.append(f"Only the first {s.limit} questions of each subject (`--limit`): a smoke test, not a score.")
    if s.subjects and len(s.subjects) > 12:
        parts.append(f"{len(s.subjects)} subjects (`--subjects {md_escape(s.group or '?')}`), "
                     "per category and group below; each subject's numbers are in the CSV and JSON.")
    elif s.subjects and len(s.subjects) != 6:
        parts.append(f"Subjects: {', '.join(md_escape(k) for k in s.subjects)}.")
    if s.normalize != "none":
        parts.append(f"Question text normalized ({md_escape(s.normalize)}).")
    if s.data:
        parts.append(f"Data fingerprint {md_code(s.data)} (a digest of every split's parsed cells, in each run record).")
    if s.reported:
        parts.append(f"Reported rows: {md_escape(_reference_source())}, protocol {md_code(s.protocol)} v{md_escape(s.version)}.")
    return Raw(" ".join(parts))


def _reference_source() -> str:
    from leaderboard.references import references

    return references()[0].source


def _table_title(t: Table) -> Raw:
    title = f"{t.kind} 模型"
    if t.chat and t.chat != "chatml":
        title += f" ({md_escape(CHAT_TEMPLATES.get(t.chat, t.chat))})"
    return Raw(title)


def _strong(text: str, on: bool) -> Raw:
    return Raw(f"**{md_escape(text)}**" if on else md_escape(text))


def _score(cell: Cell | None, bold: bool) -> Raw:
    if cell is None:
        return Raw("–")
    value = f"**{cell.percent:.2f}**" if bold else f"{cell.percent:.2f}"
    if cell.run is None:
        return Raw(value)
    return Raw(f"{value} [{cell.low:.1f}, {cell.high:.1f}]")


def _subject_n(section: Section, key: str) -> int:
    return section.runs[0][1].subjects[key].n


def _kind(run: Run) -> str:
    if not run.chat:
        return "Base"
    return "Chat" if run.settings.chat == "chatml" else f"Chat ({CHAT_TEMPLATES.get(run.settings.chat, run.settings.chat)})"


def relative(path: Path, base: Path) -> str:
    """`path` relative to `base` (POSIX separators), so a link works from the rendered file."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def _link(run: Run, base: Path) -> Raw:
    rel = relative(run.path, base)
    return Raw(f"[{md_escape(rel)}]({md_url(rel)})")


# --- CSV and JSON ---------------------------------------------------------------------------

CSV_FIELDS = [
    "section", "protocol", "protocol_version", "questions", "data", "data_label", "kind", "chat",
    "model", "label", "source", "shots", "int4", "accuracy", "ci95_low", "ci95_high", "correct", "n",
    "macro", "run", "contamination",
]


def _cells(board: Board):
    """(section index, section, table, row, (int4, shots), cell) for every number of the tables."""
    for i, section in enumerate(board.sections, start=1):
        for table in section.tables:
            for row in table.rows:
                for (int4, shots), cell in sorted(row.cells.items()):
                    yield i, section, table, row, int4, shots, cell


def render_csv(board: Board, base: Path) -> str:
    """One line per number in the Base/Chat tables, percent; measured lines name their run."""
    subjects = sorted({k for s in board.sections for k in s.subjects}, key=_subject_order)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS + [f"accuracy_{k}" for k in subjects], lineterminator="\n")
    writer.writeheader()
    for i, section, table, row, int4, shots, cell in _cells(board):
        run = cell.run
        line = {
            "section": i, "protocol": section.protocol, "protocol_version": section.version,
            "questions": section.questions,
            "data": section.data or "", "data_label": section.data_label,
            "kind": table.kind, "chat": table.chat or "", "model": row.model, "label": row.label,
            "source": row.source, "shots": shots, "int4": int(int4), "accuracy": f"{cell.percent:.2f}",
            "ci95_low": _pct(cell.low), "ci95_high": _pct(cell.high),
            "correct": "" if cell.correct is None else cell.correct, "n": "" if cell.n is None else cell.n,
            "macro": _pct(100 * run.macro.accuracy if run else None), "run": relative(run.path, base) if run else "",
            "contamination": row.contamination or "",
        }
        for key in subjects:
            score = run.subjects.get(key) if run else None
            line[f"accuracy_{key}"] = _pct(100 * score.accuracy if score else None)
        writer.writerow({field: csv_safe(value) for field, value in line.items()})
    return out.getvalue()


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_safe(value) -> str:
    """A CSV cell a spreadsheet shows as text, never runs: a leading `'` before a formula start;
    real numbers (-1.5) stay numbers."""
    text = str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _subject_order(key: str) -> tuple[int, str]:
    from tasks import devops_subjects

    keys = [s.key for s in devops_subjects()]
    return (keys.index(key) if key in keys else len(keys), key)


def render_json(board: Board, base: Path) -> str:
    """The whole board: sections, tables, rows, cells (with counts and intervals) and runs."""
    doc = {
        "schema": SCHEMA,
        "metric": "micro accuracy, percent",
        "reference_source": board.reference_source,
        "sections": [_section_json(s, base) for s in board.sections],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def _section_json(s: Section, base: Path) -> dict:
    return {
        "protocol": s.protocol, "protocol_version": s.version, "subjects": list(s.subjects), "limit": s.limit,
        "normalize": s.normalize, "data": s.data, "data_label": s.data_label, "questions": s.questions,
        "has_reported_rows": s.reported,
        "tables": [
            {"kind": t.kind, "chat": t.chat, "int4_columns": t.int4, "rows": [_row_json(r, base) for r in t.rows]}
            for t in s.tables
        ],
        "runs": [_run_json(label, run, base) for label, run in s.runs],
    }


def _row_json(row: Row, base: Path) -> dict:
    def cell(c: Cell | None):
        if c is None:
            return None
        d = {"accuracy": round(c.percent, 4)}
        if c.run is not None:
            d |= {"ci95": [round(c.low, 4), round(c.high, 4)], "correct": c.correct, "n": c.n,
                  "run": relative(c.run.path, base)}
        return d

    return {
        "label": row.label, "model": row.model, "source": row.source,
        "parameters": int(row.parameters) if row.parameters is not None else None,
        "highlight": row.highlight, "contamination": row.contamination,
        "zero_shot": cell(row.cell(0)), "five_shot": cell(row.cell(5)),
        "int4_zero_shot": cell(row.cell(0, True)), "int4_five_shot": cell(row.cell(5, True)),
    }


def _run_json(label: str, run: Run, base: Path) -> dict:
    return {
        "label": label, "model": run.model.name, "chat": run.settings.chat, "shots": run.settings.shots,
        "quantization": run.model.quantization or None, "run": relative(run.path, base),
        "micro": run.micro.accuracy, "micro_ci95": [run.micro.low, run.micro.high],
        "macro": run.macro.accuracy, "macro_ci95": [run.macro.low, run.macro.high],
        "subjects": {k: {"n": v.n, "correct": v.correct, "accuracy": v.accuracy, "ci95": [v.low, v.high]}
                     for k, v in run.subjects.items()},
    }


# --- chart ----------------------------------------------------------------------------------

COLOURS = {(False, 0): "#6baed6", (False, 5): "#08519c", (True, 0): "#fd8d3c", (True, 5): "#a63603"}
SLOT_NAMES = {(False, 0): "zero-shot", (False, 5): "five-shot", (True, 0): "Int4 zero-shot", (True, 5): "Int4 five-shot"}


def render_chart(board: Board) -> bytes:
    """Horizontal bars of every table's numbers, one panel per table, as PNG bytes."""
    plt = pyplot()
    from matplotlib.patches import Patch

    panels = [(s, t) for s in board.sections for t in s.tables if t.rows]
    heights = [1.0 + 0.32 * len(t.rows) * (2 if t.int4 else 1) for _, t in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, sum(heights) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (section, table) in zip(axes[:, 0], panels):
        _panel(ax, section, table)
    slots = sorted({k for _, t in panels for r in t.rows for k in r.cells})
    handles = [Patch(facecolor=COLOURS[k], label=SLOT_NAMES[k]) for k in slots]
    handles += [Patch(facecolor="white", edgecolor="#555555", hatch="///", label="reported (model card)"),
                Patch(facecolor="#bbbbbb", edgecolor="black", label="measured (line: 95% interval)")]
    fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.7 / (sum(heights) + 0.8), 1, 1))  # room for the legend
    return png_bytes(fig)


def _panel(ax, section: Section, table: Table) -> None:
    slots = [(False, s) for s in CARD_SHOTS] + ([(True, s) for s in CARD_SHOTS] if table.int4 else [])
    width = 0.8 / len(slots)
    rows = table.rows
    for j, slot in enumerate(slots):
        for i, row in enumerate(rows):
            cell = row.cells.get(slot)
            if cell is None:
                continue
            y = i - 0.4 + width * (j + 0.5)
            reported = cell.run is None
            ax.barh(y, cell.percent, height=width, color="white" if reported else COLOURS[slot],
                    edgecolor=COLOURS[slot] if reported else "black", linewidth=0.6,
                    hatch="///" if reported else None)
            if not reported:
                ax.plot([cell.low, cell.high], [y, y], color="black", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_plain(r.label) for r in rows], fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows):
        tick.set_fontweight("bold" if row.highlight else "normal")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top; a one-row panel keeps thin bars
    ax.set_xlim(0, 100)
    ax.axvline(25, color="#999999", linewidth=0.6, linestyle=":")  # chance with four options
    ax.set_xlabel("accuracy (%)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    title = f"{table.kind} · {section.protocol} v{section.version} · {section.questions} questions"
    if table.chat and table.chat != "chatml":
        title += f" · {CHAT_TEMPLATES.get(table.chat, table.chat)}"
    ax.set_title(_plain(title), fontsize=9)


def _plain(text: str) -> str:
    """Text matplotlib draws as it is: no mathtext (`$...$`), one line."""
    return " ".join(str(text).split()).replace("$", r"\$")
