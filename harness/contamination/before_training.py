"""The check `harness train` runs on its datasets before training starts, and what its record keeps."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from harness.contamination.corpus import CorpusFile
from harness.contamination.sources import all_records, load_questions, training_files
from harness.errors import HarnessError
from tasks.contamination import METHOD, Findings, scan

log = logging.getLogger("harness")


class ContaminationFound(HarnessError):
    """`harness train --refuse_contaminated` on data that holds evaluated questions."""

    exit_code = 1


@dataclass(frozen=True)
class TrainingDataCheck:
    """What `harness train` is about to read, and how the check before it behaves."""

    dataset: str  # --dataset as given: comma-separated names (messages repeat it as typed)
    dataset_dir: str
    stage: str  # pt or sft: which columns training reads
    data_dir: str | None  # the benchmark's local copy; None: skip the check, or read the Hub to refuse
    refuse: bool  # --refuse_contaminated
    is_main: bool  # the main process (the only one that writes the training record)


def check_before_training(check: TrainingDataCheck) -> dict | None:
    """Scan the datasets about to be trained on: warns, or refuses when `check.refuse`
    (ContaminationFound, exit 1). Returns what the training record keeps.

    Without local benchmark data the check is skipped, unless refusing asks for a verdict (then it
    reads the Hub). Silent unless it finds something: a later training error stays the one line it
    is; `log_check` tells the rest once training is done."""
    from training import registry

    if not (check.is_main or check.refuse):
        return None  # only the main process writes the record; the others need the answer only to refuse
    names = [n.strip() for n in check.dataset.split(",") if n.strip()]
    specs = registry.resolve(check.dataset_dir, names, check.stage)
    if not check.data_dir and not check.refuse:
        return {"checked": False, "reason": "no local benchmark data (--eval_devops_data_dir or $HARNESS_DATA_DIR)"}
    questions, benchmark = load_questions(check.data_dir, None)
    files = [f for spec in specs for f in training_files(spec, check.stage)]
    summary = training_summary(scan(questions, all_records(files)), benchmark, files)
    if summary["contaminated"]:
        first = summary["found"][0]
        message = (
            f"--dataset {check.dataset} holds {summary['questions']} of the {len(questions)} evaluated questions "
            f"(e.g. {first['subject']} row {first['id']} in {first['file']} record {first['record']}); "
            f"`harness contamination --dataset {check.dataset} --dataset_dir {check.dataset_dir}` reports them all"
        )
        if check.refuse:
            raise ContaminationFound(f"refusing to train (--refuse_contaminated): {message}")
        # not refusing, so this is the main process
        log.warning("contamination: %s; scores of this model on them will not mean much", message)
    return summary


def log_check(result: dict | None) -> None:
    """What the check before training found, in a line, for the end of `harness train`."""
    if result is None:
        return
    if not result["checked"]:
        log.warning("contamination check skipped: %s; run `harness contamination --dataset ...` on the training data", result["reason"])
    elif result["contaminated"]:
        log.warning("contamination: trained on %d evaluated question(s); see contamination in harness_train.json", result["questions"])
    else:
        logging.getLogger("harness.training").info("contamination check: none of the evaluated questions in the training data")


def training_summary(f: Findings, benchmark: dict, files: list[CorpusFile]) -> dict:
    """The training record's `contamination`: enough for the gate and the leaderboard to flag a model."""
    per_dataset: dict[str, set] = {x.dataset: set() for x in files}
    found = []
    for key in sorted(f.found):
        for m in f.found[key]:
            per_dataset.setdefault(m.dataset, set()).add(key)
        m = f.found[key][0]
        found.append({"subject": key[0], "id": key[1], "dataset": m.dataset, "file": m.file, "record": m.record,
                      "line": m.line, "stem_coverage": m.stem_coverage, "coverage": m.coverage})
    return {
        "checked": True,
        "contaminated": f.contaminated,
        "questions": len(f.found),
        "method": METHOD,
        "ngram": f.ngram,
        "threshold": f.threshold,
        "benchmark": benchmark,
        "datasets": {name: {"questions": len(keys)} for name, keys in per_dataset.items()},
        "found": found,
    }
