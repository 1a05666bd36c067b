"""Are evaluated questions inside training data? The files to scan, the scan, and what it reports.

`corpus` reads training files as a stream of text records; `sources` says which files (and which
of their columns) a registered dataset or a list of paths means, and scans them with the matcher
of `tasks.contamination`; `report` turns the findings into the JSON record and the Markdown report
of `harness contamination`; `before_training` is the same check for `harness train`.
"""

from harness.contamination.before_training import (
    ContaminationFound,
    TrainingDataCheck,
    check_before_training,
    log_check,
    training_summary,
)
from harness.contamination.corpus import KINDS, CorpusError, CorpusFile, corpus_files, read_records
from harness.contamination.report import SCHEMA, findings_record, render_markdown
from harness.contamination.sources import (
    ScanRequest,
    ScanResult,
    all_records,
    dataset_files,
    load_questions,
    scan_training_data,
    training_files,
)

__all__ = [
    "KINDS",
    "SCHEMA",
    "ContaminationFound",
    "CorpusError",
    "CorpusFile",
    "ScanRequest",
    "ScanResult",
    "TrainingDataCheck",
    "all_records",
    "check_before_training",
    "corpus_files",
    "dataset_files",
    "findings_record",
    "load_questions",
    "log_check",
    "read_records",
    "render_markdown",
    "scan_training_data",
    "training_files",
    "training_summary",
]
