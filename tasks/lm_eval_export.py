"""Subjects as lm-evaluation-harness task YAMLs, built from the `lm-eval` protocol.

lm-eval users then run `lm_eval --include_path DIR --tasks devops` (or the group they exported)
on the very files this harness reads (CSV, or a tasks file's JSONL). Paths are absolute: lm-eval resolves relative `data_files` against the working
directory, not the YAML's folder.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tasks.data import SubjectData
from tasks.errors import TaskError
from tasks.protocols import Protocol
from tasks.registry import GROUP, LETTERS

TASK_PREFIX = "devops_"
# lm-eval's own joins: example + target_delimiter + answer, examples joined by fewshot_delimiter.
LM_EVAL_TARGET_DELIMITER = " "
LM_EVAL_FEWSHOT_DELIMITER = "\n\n"


def task_name(subject_key: str) -> str:
    return TASK_PREFIX + subject_key


def task_config(d: SubjectData, protocol: Protocol, data_dir: Path) -> dict:
    """One subject's lm-eval task, equivalent to `protocol` on the same CSV files."""
    if protocol.shot_answer != LM_EVAL_TARGET_DELIMITER + "{answer}" or protocol.separator != LM_EVAL_FEWSHOT_DELIMITER:
        raise TaskError(f"protocol {protocol.name} does not join examples the way lm-eval does; export the lm-eval protocol")
    s, bench = d.subject, d.subject.benchmark
    question = "{{" + bench.question_column + (".strip()" if protocol.strip_question else "") + "}}"
    doc_to_text = protocol.block.format(question=question, **{x: "{{" + _option(bench, i) + "}}" for i, x in enumerate(LETTERS)})
    files = {split: str((data_dir / s.local_file(split)).resolve()) for split in (s.split, s.fewshot_split)}
    return {
        "task": task_name(s.key),
        "tag": [f"{GROUP}_{bench.key}"],
        "dataset_path": "json" if bench.layout == "jsonl" else "csv",
        "dataset_kwargs": dataset_kwargs(d, files),
        "test_split": s.split,
        "fewshot_split": s.fewshot_split,
        "fewshot_config": {"sampler": "first_n"},
        "output_type": "multiple_choice",
        "description": protocol.header_for(s),
        "doc_to_text": doc_to_text,
        "doc_to_choice": list(LETTERS),
        "doc_to_target": "{{" + repr(list(LETTERS)) + ".index(" + bench.answer_column + ")}}",
        "target_delimiter": LM_EVAL_TARGET_DELIMITER,
        "fewshot_delimiter": LM_EVAL_FEWSHOT_DELIMITER,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": float(protocol.version), "harness_protocol": protocol.id},
    }


def dataset_kwargs(d: SubjectData, files: dict[str, str]) -> dict:
    """How lm-eval's `datasets.load_dataset("csv", ...)` must read the files to see our cells."""
    if d.subject.benchmark.layout == "jsonl":
        return {"data_files": files}
    kwargs = {"data_files": files, "keep_default_na": False, "na_filter": False}  # "None" stays "None"
    if d.subject.benchmark.optional_columns:
        # C-Eval's dev split has an extra `explanation` column; one csv load needs equal columns.
        kwargs["usecols"] = list(d.subject.benchmark.header)
    return kwargs


def check_lm_eval_reads_the_same_cells(d: SubjectData, kwargs: dict) -> None:
    """Load the files as lm-eval will and compare every rendered cell with the harness's own."""
    import datasets

    bench = d.subject.benchmark
    loaded = datasets.load_dataset("json" if bench.layout == "jsonl" else "csv", **kwargs)
    for split, questions in ((d.subject.split, d.questions), (d.subject.fewshot_split, d.shots)):
        rows = loaded[split]
        if len(rows) != len(questions):
            raise TaskError(f"lm-eval would read {len(rows)} rows from {kwargs['data_files'][split]}, not {len(questions)}")
        for q, row in zip(questions, rows):
            ours = {bench.question_column: q.question, bench.answer_column: q.answer,
                    **{_option(bench, i): o for i, o in enumerate(q.options)}}
            for column, text in ours.items():
                cell = _cell(row, column)
                if str(cell) != text:
                    raise TaskError(
                        f"lm-eval would read {kwargs['data_files'][split]} record {q.id} column {column} "
                        f"as {cell!r}, not {text!r}"
                    )


def _option(bench, index: int) -> str:
    """The lm-eval expression of option `index`: its column, or an item of the options list field."""
    return f"{bench.options_field}[{index}]" if bench.options_field else LETTERS[index]


def _cell(row, expression: str):
    if expression.endswith("]"):
        name, index = expression[:-1].split("[")
        return row[name][int(index)]
    return row[expression]


def group_config(data: list[SubjectData], group: str | None = None) -> dict:
    """The group (default `devops`): accuracy over all questions (subjects weighted by size)."""
    return {
        "group": group or GROUP,
        "task": [task_name(d.subject.key) for d in data],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
        "metadata": {"version": 1.0},
    }


def task_files(data: list[SubjectData], protocol: Protocol, data_dir: Path, group: str | None = None) -> dict[str, str]:
    """One YAML per subject and the group YAML (default `devops`), by file name; every subject is checked first."""
    configs = [task_config(d, protocol, data_dir) for d in data]
    for d, config in zip(data, configs):
        check_lm_eval_reads_the_same_cells(d, config["dataset_kwargs"])
    files = {f"{config['task']}.yaml": _yaml(config) for config in configs}
    files[f"_{group or GROUP}.yaml"] = _yaml(group_config(data, group))
    return files


class _Dumper(yaml.SafeDumper):
    """Strings with line breaks as one double-quoted line with \\n escapes: the text reads as written."""


_Dumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style='"' if "\n" in s else None),
)


def _yaml(obj: dict) -> str:
    return yaml.dump(obj, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1000)
