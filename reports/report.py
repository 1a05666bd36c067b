"""The report of one run: its settings, per-subject accuracy, letter bias, calibration and the
questions it was most confidently wrong on (by subject and row: the question text is licensed
data and stays out of reports).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.records import LETTERS, Run
from reports.calibration import Calibration, calibration, confidence, plot_calibration
from reports.markdown import Raw, environment, md_fence, md_url
from tasks.registry import subject_title

MOST_CONFIDENTLY_WRONG = 10


@dataclass(frozen=True)
class LetterCount:
    letter: str
    predicted: int
    gold: int
    correct: int  # questions whose gold is this letter, answered correctly


@dataclass(frozen=True)
class Wrong:
    subject: str
    id: int
    gold: str
    pred: str
    p_pred: float
    p_gold: float


@dataclass
class RunReport:
    facts: Run
    letters: list[LetterCount]
    bias: float  # total variation distance between predicted and gold letter distributions
    calibration: Calibration
    wrong: list[Wrong]
    reproduce: str


def build_report(run: Run, top: int = MOST_CONFIDENTLY_WRONG) -> RunReport:
    samples = run.samples
    n = len(samples)
    letters = [
        LetterCount(
            letter,
            sum(s.pred == letter for s in samples),
            sum(s.gold == letter for s in samples),
            sum(s.gold == letter and s.correct for s in samples),
        )
        for letter in LETTERS
    ]
    bias = 0.5 * sum(abs(c.predicted - c.gold) for c in letters) / n if n else 0.0
    wrong = []
    for s in samples:
        if not s.correct:
            wrong.append(Wrong(s.subject, s.id, s.gold, s.pred, s.probability(s.pred), s.probability(s.gold)))
    wrong.sort(key=lambda w: -w.p_pred)  # stable: ties keep the canonical (subject, row) order
    return RunReport(run, letters, bias, calibration(samples), wrong[:top], reproduce_command(run))


def reproduce_command(run: Run) -> str:
    """The `harness eval` command that makes this run again, rebuilt from its record."""
    m, st = run.model, run.settings
    name = m.name
    args = ["harness", "eval", "--model", name]
    if m.revision:
        args += ["--revision", m.revision]
    if m.adapter and not _same_directory(m.adapter, name):  # not the LoRA output directory given as --model
        args += ["--adapter", m.adapter]
    if m.gguf_file and not name.endswith(".gguf"):
        args += ["--gguf-file", m.gguf_file]
    if m.tokenizer and m.tokenizer not in (name, m.path, m.adapter):
        args += ["--tokenizer", m.tokenizer]
    if (m.requested_dtype or "auto") != "auto":
        args += ["--dtype", m.requested_dtype]
    if m.trust_remote_code:
        args.append("--trust-remote-code")
    args += ["--protocol", st.protocol, "--shots", str(st.shots)]
    if st.chat == "chatml":
        args.append("--chat")
    elif st.chat:
        args += ["--chat-template", st.chat]
    source = run.record.data_source
    if source.get("source") == "local" and source.get("dir"):
        args += ["--data-dir", source["dir"]]
    from tasks import GROUP, devops_subjects

    if st.tasks_file and st.tasks_file.get("path"):
        args += ["--tasks-file", st.tasks_file["path"]]
    if st.group and st.group != GROUP and not (st.tasks_file and st.group == st.tasks_file.get("group")):
        args += ["--subjects", st.group]  # the groups and subjects as given (--subjects takes both)
    elif st.group == GROUP and list(st.subjects) != [s.key for s in devops_subjects()]:
        args += ["--subjects", ",".join(st.subjects)]
    elif st.group is None:
        args += ["--subjects", ",".join(st.subjects)]
    if st.normalize != "none":
        args += ["--normalize", st.normalize]
    if st.limit is not None:
        args += ["--limit", str(st.limit)]
    seed = run.record.runtime.get("seed", 0)
    if seed:
        args += ["--seed", str(seed)]
    return " ".join(shlex.quote(a) for a in args)


def _same_directory(recorded: str, given: str) -> bool:
    """Whether a recorded (absolute) directory is the one a user gave, relative or not (not a
    filesystem check: the report must not depend on where it is made)."""
    ours = [p for p in Path(recorded).parts if p != "."]
    theirs = [p for p in Path(given).expanduser().parts if p != "."]
    return bool(theirs) and ours[-len(theirs):] == theirs


def settings_rows(run: Run) -> list[tuple[str, str]]:
    """Every reproduction field of the record (model, protocol, task, harness, runtime), flattened."""
    r = run.results
    rows = []
    for section in ("model", "protocol", "task", "harness", "runtime"):
        rows += _flatten(section, r.get(section, {}), skip={"task.data"})
    return rows


def _flatten(prefix: str, value, skip: set[str]) -> list[tuple[str, str]]:
    if prefix in skip:
        return []
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(f"{prefix}.{k}", v, skip)]
    if isinstance(value, str):
        return [(prefix, value)]
    return [(prefix, json.dumps(value, ensure_ascii=False))]


def data_files(run: Run) -> list[tuple[str, str, str, str]]:
    """(subject, split, where it was read, sha256) for every data file of the run."""
    out = []
    for subject, splits in (run.settings.sources or {}).items():
        for split, src in splits.items():
            where = src.get("file") or f"{src.get('hub', '?')}@{str(src.get('revision', ''))[:12]}"
            out.append((subject, split, where, src.get("sha256") or src["content_sha256"]))
    return out


def render_report(report: RunReport, image: str | None) -> str:
    """The Markdown report; `image` is the calibration plot's path relative to it (None: no plot)."""
    run = report.facts
    return environment("reports").get_template("report.md.j2").render(
        report=report,
        run=run,
        settings=settings_rows(run),
        data_files=data_files(run),
        reproduce=md_fence(report.reproduce, "bash"),
        image=md_url(image) if image else None,
        pct=lambda x: Raw(f"{100 * x:.2f}"),
        interval=lambda s: Raw(f"[{100 * s.low:.1f}, {100 * s.high:.1f}]"),
        share=lambda k, n: Raw(f"{100 * k / n:.1f}%" if n else "–"),
        prob=lambda x: Raw(f"{x:.3f}"),
        subject_title=subject_title,
        chosen_confidence=confidence,
    )


def calibration_png(report: RunReport) -> bytes:
    run = report.facts
    return plot_calibration(report.calibration, f"{run.model.short_name()} · {run.settings.describe()}")
