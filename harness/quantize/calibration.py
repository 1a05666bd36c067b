"""Calibration text for GPTQ: never the evaluated questions.

`devops-dev` (the default) is the few-shot pool of the six subjects — the dev rows a 5-shot
prompt shows the model anyway, none of them scored — rendered as the devops protocol renders an
answered example. A user corpus (`--calibration FILE`) is better: more text, more like what the
model will serve; it is refused if it holds an evaluated question. "Holds a question" is the one
rule `harness contamination` applies (`tasks.contamination`: n-grams of text normalized for
matching). By that rule the benchmark overlaps itself: machine_learning's dev row 3 is its test
row 120 reworded. That row stays in `devops-dev` — every 5-shot machine_learning prompt shows it
to the model, so calibrating on it reveals nothing the prompt does not — and the overlap is
recorded in the checkpoint's marker (`calibration.overlaps`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.quantize.methods import QuantizeError
from tasks import Question, SubjectData, get_protocol, load_benchmark
from tasks.contamination import TextRecord, scan

DEVOPS_DEV = "devops-dev"


@dataclass(frozen=True)
class Calibration:
    """The calibration texts and where they came from (recorded in the checkpoint's marker)."""

    source: str  # "devops-dev" or the file's path
    texts: tuple[str, ...]
    overlaps: tuple[str, ...] = ()  # devops-dev rows that hold an evaluated question (the benchmark's own)

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for text in self.texts:
            digest.update(text.encode("utf-8") + b"\0")
        return digest.hexdigest()

    def record(self) -> dict:
        overlaps = {"overlaps": list(self.overlaps)} if self.overlaps else {}
        return {"source": self.source, "texts": len(self.texts), "characters": sum(map(len, self.texts)),
                "sha256": self.sha256, **overlaps}


def devops_dev(data: list[SubjectData]) -> Calibration:
    """The subjects' few-shot pools as answered devops-protocol examples, one text each, with the
    rows that hold an evaluated question of `data` named."""
    protocol = get_protocol("devops")
    rows = [(q, protocol.render(d.subject, (), q) + q.answer) for d in data for q in d.shots]
    texts = tuple(text for _, text in rows)
    held = holding(texts, [q for d in data for q in d.questions])
    overlaps = tuple(f"{rows[i][0].subject} dev row {rows[i][0].id} holds {key[0]} row {key[1]}" for i, key in held.items())
    return Calibration(DEVOPS_DEV, texts, overlaps)


def holding(texts: tuple[str, ...], evaluated: list[Question]) -> dict[int, tuple[str, int]]:
    """Text index → the first evaluated question (subject, row) it holds, for the texts that hold one."""
    records = (TextRecord("calibration", i, i + 1, (("text", text),)) for i, text in enumerate(texts))
    found = scan(evaluated, records).found
    held: dict[int, tuple[str, int]] = {}
    for q in evaluated:
        for match in found.get((q.subject, q.id), ()):
            held.setdefault(match.record, (q.subject, q.id))
    return dict(sorted(held.items()))


def from_file(path: str | Path) -> Calibration:
    """A user corpus: `.jsonl` with a "text" field per line, or plain text with blank-line-separated passages."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise QuantizeError(f"--calibration {path}: no such file (give a text or .jsonl file, or devops-dev)")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise QuantizeError(f"--calibration {path}: not UTF-8 text (byte {e.start})") from None
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise QuantizeError(f"--calibration {path} line {number}: not a JSON object with a \"text\" field") from None
            if not isinstance(text, str):
                raise QuantizeError(f"--calibration {path} line {number}: \"text\" is not a string")
            texts.append(text)
    else:
        texts = [p.strip() for p in re.split(r"\n\s*\n", raw)]
    texts = tuple(t for t in texts if t.strip())
    if not texts:
        raise QuantizeError(f"--calibration {path}: no text in it")
    return Calibration(str(path), texts)


def gptq_calibration(source: str | None, data_dir: str | None, normalize: str = "none") -> Calibration:
    """`--calibration` (None: devops-dev); a corpus is checked against all 574 questions (not only
    the subjects evaluated: the checkpoint serves them all); the questions come from `data_dir`, else the Hub."""
    source = source or DEVOPS_DEV
    from_user = from_file(source) if source != DEVOPS_DEV else None  # a bad file refused before the questions load
    data, _ = load_benchmark(data_dir, None, normalize)
    if from_user is None:
        return devops_dev(data)
    check_disjoint(from_user, [q for d in data for q in d.questions])
    return from_user


def check_disjoint(calibration: Calibration, evaluated: list[Question]) -> None:
    """Refuse calibration text that holds an evaluated question, as `harness contamination` finds them."""
    held = holding(calibration.texts, evaluated)
    if held:
        index, (subject, row) = next(iter(held.items()))
        where = f"text {index + 1}" if calibration.source != DEVOPS_DEV else f"dev example {index + 1}"
        raise QuantizeError(
            f"--calibration {calibration.source}: {where} contains evaluated question "
            f"{subject} row {row}; calibration must not see the questions it is scored on"
        )
