"""Calibration text for GPTQ: never the evaluated questions.

`devops-dev` (the default) is the few-shot pool of the six subjects — the dev rows a 5-shot
prompt shows the model anyway, none of them scored — rendered as the devops protocol renders an
answered example. A user corpus (`--calibration FILE`) is better: more text, more like what the
model will serve. Either way every text is checked against the evaluated questions before use.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from harness.quantize.methods import QuantizeError
from tasks import Question, SubjectData, get_protocol, load_benchmark

DEVOPS_DEV = "devops-dev"
# A stem this long is specific to its question; shorter ones ("下列说法正确的是") are generic
# phrases, which count as the question only together with its four options.
SPECIFIC_STEM_CHARS = 16


@dataclass(frozen=True)
class Calibration:
    """The calibration texts and where they came from (recorded in the checkpoint's marker)."""

    source: str  # "devops-dev" or the file's path
    texts: tuple[str, ...]

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for text in self.texts:
            digest.update(text.encode("utf-8") + b"\0")
        return digest.hexdigest()

    def record(self) -> dict:
        return {"source": self.source, "texts": len(self.texts), "characters": sum(map(len, self.texts)), "sha256": self.sha256}


def devops_dev(data: list[SubjectData]) -> Calibration:
    """The subjects' few-shot pools as answered devops-protocol examples, one text each."""
    protocol = get_protocol("devops")
    texts = tuple(protocol.render(d.subject, (), q) + q.answer for d in data for q in d.shots)
    return Calibration(DEVOPS_DEV, texts)


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
    """`--calibration` (None: devops-dev), checked against all 574 questions (not only the subjects
    evaluated: the checkpoint serves them all); the questions come from `data_dir`, else the Hub."""
    source = source or DEVOPS_DEV
    from_user = from_file(source) if source != DEVOPS_DEV else None  # a bad file refused before the questions load
    data, _ = load_benchmark(data_dir, None, normalize)
    calibration = from_user or devops_dev(data)
    check_disjoint(calibration, [q for d in data for q in d.questions])
    return calibration


def check_disjoint(calibration: Calibration, evaluated: list[Question]) -> None:
    """Refuse calibration text that contains an evaluated question (its stem, or a short stem with its options)."""
    flat = [_plain(t) for t in calibration.texts]
    for q in evaluated:
        stem = _plain(q.question)
        if not stem:
            continue
        options = [_plain(o) for o in q.options]
        for index, text in enumerate(flat):
            if stem in text and (len(stem) >= SPECIFIC_STEM_CHARS or all(o in text for o in options)):
                where = f"text {index + 1}" if calibration.source != DEVOPS_DEV else f"dev example {index + 1}"
                raise QuantizeError(
                    f"--calibration {calibration.source}: {where} contains evaluated question "
                    f"{q.subject} row {q.id}; calibration must not see the questions it is scored on"
                )


def _plain(text: str) -> str:
    # NFKC folds the Kangxi-radical look-alikes of the published text; whitespace is not content.
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))
