"""The report of one run: its settings, per-subject accuracy, letter bias, calibration and the
questions it was most confidently wrong on (by subject and row: the question text is licensed
data and stays out of reports).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.records import LETTERS
from reports.calibration import Calibration, calibration, confidence, plot_calibration
from reports.facts import RunFacts, probabilities, subject_title
from reports.markdown import Raw, environment, md_fence, md_url

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
    facts: RunFacts
    letters: list[LetterCount]
    bias: float  # total variation distance between predicted and gold letter distributions
    calibration: Calibration
    wrong: list[Wrong]
    reproduce: str


def build_report(run: RunFacts, top: int = MOST_CONFIDENTLY_WRONG) -> RunReport:
    samples = run.samples()
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
            p = probabilities(s)
            wrong.append(Wrong(s.subject, s.id, s.gold, s.pred, float(p[LETTERS.index(s.pred)]), float(p[LETTERS.index(s.gold)])))
    wrong.sort(key=lambda w: -w.p_pred)  # stable: ties keep the canonical (subject, row) order
    return RunReport(run, letters, bias, calibration(samples), wrong[:top], reproduce_command(run))


def reproduce_command(run: RunFacts) -> str:
    """The `harness eval` command that makes this run again, rebuilt from its record."""
    r = run.run.results
    m, p, t = r["model"], r["protocol"], r["task"]
    name = m["name"]
    args = ["harness", "eval", "--model", name]
    if m.get("revision"):
        args += ["--revision", m["revision"]]
    if m.get("adapter") and Path(m["adapter"]) != Path(name).expanduser():
        args += ["--adapter", m["adapter"]]
    if m.get("gguf_file") and not name.endswith(".gguf"):
        args += ["--gguf-file", m["gguf_file"]]
    if m.get("tokenizer") and m["tokenizer"] not in (name, m.get("path"), m.get("adapter")):
        args += ["--tokenizer", m["tokenizer"]]
    if m.get("requested_dtype", "auto") != "auto":
        args += ["--dtype", m["requested_dtype"]]
    if m.get("trust_remote_code"):
        args.append("--trust-remote-code")
    args += ["--protocol", p["name"], "--shots", str(p["shots"])]
    if p.get("chat") == "chatml":
        args.append("--chat")
    elif p.get("chat"):
        args += ["--chat-template", p["chat"]]
    source = t.get("data_source", {})
    if source.get("source") == "local" and source.get("dir"):
        args += ["--data-dir", source["dir"]]
    from tasks import all_subjects

    if list(t["subjects"]) != [s.key for s in all_subjects()]:
        args += ["--subjects", ",".join(t["subjects"])]
    if t.get("normalize", "none") != "none":
        args += ["--normalize", t["normalize"]]
    if t.get("limit") is not None:
        args += ["--limit", str(t["limit"])]
    seed = r.get("runtime", {}).get("seed", 0)
    if seed:
        args += ["--seed", str(seed)]
    return " ".join(shlex.quote(a) for a in args)


def settings_rows(run: RunFacts) -> list[tuple[str, str]]:
    """Every reproduction field of the record (model, protocol, task, harness, runtime), flattened."""
    r = run.run.results
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


def data_files(run: RunFacts) -> list[tuple[str, str, str, str]]:
    """(subject, split, where it was read, sha256) for every data file of the run."""
    out = []
    for subject, splits in run.run.results["task"]["data"].items():
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
    return plot_calibration(report.calibration, f"{run.model.short_name()} · {run.setting.describe()}")
