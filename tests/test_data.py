"""The six subjects' data: counts, exact text, hashes, and clear errors for broken copies."""

from __future__ import annotations

import csv
import io
import logging
import shutil
import zipfile
from collections import Counter

import pytest

from tasks import TaskError, all_subjects, devops_subjects, load_hub, load_local, select_subjects
from tasks.data import normalize_text, read_archive_member

PUBLISHED_ANSWERS = {  # PROVENANCE.md, evaluation splits
    "computer_science": {"A": 52, "B": 51, "C": 51, "D": 50},
    "computer_security": {"A": 43, "B": 42, "C": 43, "D": 43},
    "machine_learning": {"A": 31, "B": 31, "C": 31, "D": 29},
    "college_programming": {"A": 9, "B": 13, "C": 7, "D": 8},
    "computer_architecture": {"A": 6, "B": 8, "C": 3, "D": 4},
    "computer_network": {"A": 2, "B": 3, "C": 9, "D": 5},
}


def test_the_group_is_574_questions_in_six_subjects(subject_data):
    counts = {k: len(d.questions) for k, d in subject_data.items()}
    assert counts == {
        "computer_science": 204, "computer_security": 171, "machine_learning": 122,
        "college_programming": 37, "computer_architecture": 21, "computer_network": 19,
    }
    assert sum(counts.values()) == 574
    assert all(len(d.shots) == 5 for d in subject_data.values())


def test_answer_distribution_matches_the_published_files(subject_data):
    for key, d in subject_data.items():
        assert Counter(q.answer for q in d.questions) == PUBLISHED_ANSWERS[key]


def test_every_cell_is_the_published_string(subject_data, data_dir):
    # Compare with an independent reading of the files by the standard csv module.
    for key, d in subject_data.items():
        path = data_dir / d.subject.local_file(d.subject.split)
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        qcol = d.subject.benchmark.question_column
        for q, row in zip(d.questions, rows, strict=True):
            assert q.question == row[qcol]
            assert q.options == (row["A"], row["B"], row["C"], row["D"])
            assert all(isinstance(x, str) for x in (q.question, *q.options, q.answer))


def test_data_traps_are_kept_as_published(subject_data):
    cs = subject_data["computer_science"].questions
    radical = [q for q in cs if any(0x2E80 <= ord(c) <= 0x2FDF for c in q.question + "".join(q.options))]
    assert len(radical) == 167  # Kangxi radicals, and in row 184 a CJK radicals supplement one
    assert any(o.endswith(" ") for q in cs for o in q.options)  # trailing spaces (rows 87, 182)
    ml = subject_data["machine_learning"].questions
    assert sum(q.question.endswith(" ") for q in ml) > 0
    prog = subject_data["college_programming"].questions
    assert all("\n" in o for o in prog[6].options)  # multi-line options of row 6
    net = subject_data["computer_network"].questions
    assert net[12].options[1] == net[12].options[2] and net[12].answer == "B"  # identical options
    # numeric-looking options stay strings, exactly as written
    assert all(isinstance(o, str) for q in cs for o in q.options)


def test_line_breaks_inside_cells_keep_their_crlf_or_lf(subject_data, data_dir):
    dev = subject_data["college_programming"].shots
    raw = (data_dir / "ceval/dev/college_programming_dev.csv").read_bytes().decode()
    for q in dev:
        if "\n" in q.question:
            assert q.question in raw  # byte-exact, including any \r\n inside the cell


def test_kangxi_normalization_is_opt_in(data_dir):
    [plain] = load_local(data_dir, select_subjects(["computer_science"]))
    [kangxi] = load_local(data_dir, select_subjects(["computer_science"]), normalize="kangxi")
    assert "⼆维表格" in plain.shots[0].options[1]
    assert kangxi.shots[0].options[1] == "二维表格"
    assert normalize_text("⽹络：ＡＢ", "kangxi") == "网络：ＡＢ"  # full-width letters untouched
    assert normalize_text("⽹络：ＡＢ", "nfkc") == "网络:AB"
    assert normalize_text("⻓度", "kangxi") == "长度"  # a supplement radical NFKC leaves alone
    normalized = load_local(data_dir, select_subjects(["computer_science"]), normalize="kangxi")[0]
    assert not any(0x2E80 <= ord(c) <= 0x2FDF for q in normalized.questions for c in q.question + "".join(q.options))


def test_subject_order_and_selection():
    assert [s.key for s in select_subjects(None)] == [s.key for s in devops_subjects()]
    assert [s.key for s in select_subjects(["computer_network", "computer_science"])] == [
        "computer_science", "computer_network"]
    with pytest.raises(TaskError, match="unknown subject or group 'networking'"):
        select_subjects(["networking"])


# --- broken copies -------------------------------------------------------------------------------


@pytest.fixture
def data_copy(tmp_path, data_dir):
    dst = tmp_path / "data"
    shutil.copytree(data_dir, dst)
    return dst


def _load(path, *keys):
    return load_local(path, select_subjects(list(keys) or None))


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(TaskError, match="data directory not found: .*nowhere"):
        _load(tmp_path / "nowhere")


def test_missing_file_is_named(data_copy):
    (data_copy / "ceval/val/computer_network_val.csv").unlink()
    with pytest.raises(TaskError, match="missing data file: .*computer_network_val.csv"):
        _load(data_copy)


def test_malformed_csv_names_file_and_record(data_copy):
    path = data_copy / "cmmlu/test/machine_learning.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3].rstrip("\n") + ",extra\n"
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(TaskError, match=r"machine_learning.csv record 2 \(line 4\): 8 fields, expected 7"):
        _load(data_copy, "machine_learning")


def test_wrong_header_is_named(data_copy):
    path = data_copy / "cmmlu/test/computer_security.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(",Question,", ",Stem,", 1), encoding="utf-8")
    with pytest.raises(TaskError, match="computer_security.csv: unexpected header"):
        _load(data_copy, "computer_security")


def test_answer_outside_a_to_d_is_named(data_copy):
    path = data_copy / "ceval/val/computer_architecture_val.csv"
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[5][-1] = "E"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    with pytest.raises(TaskError, match="computer_architecture_val.csv record 4 .*answer 'E' is not one of A, B, C, D"):
        _load(data_copy, "computer_architecture")


def test_wrong_count_is_an_error(data_copy):
    path = data_copy / "cmmlu/test/computer_science.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(TaskError, match="203 questions, expected 204"):
        _load(data_copy, "computer_science")


def _blank_option(path, record: int, letter: str) -> None:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[record + 1][rows[0].index(letter)] = ""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def test_no_published_file_has_an_empty_option_cell(subject_data):
    assert not any(s.empty_options for s in all_subjects())
    assert all(o.strip() for d in subject_data.values() for q in d.questions + d.shots for o in q.options)


def test_an_empty_option_cell_is_an_error_naming_file_record_and_column(data_copy):
    _blank_option(data_copy / "ceval/val/computer_network_val.csv", 3, "C")
    with pytest.raises(TaskError, match=r"computer_network_val.csv record 3 \(line \d+\): empty option in column C"):
        _load(data_copy, "computer_network")


def test_an_empty_option_cell_the_subject_declares_is_kept(data_copy):
    from dataclasses import replace

    from tasks.data import parse_csv

    path = data_copy / "cmmlu/dev/computer_science.csv"
    _blank_option(path, 1, "D")
    subject = replace(select_subjects(["computer_science"])[0], empty_options=frozenset({("dev", 1, "D")}))
    assert parse_csv(path.read_bytes(), str(path), subject, "dev")[1].options[3] == ""
    with pytest.raises(TaskError, match="record 1 .*empty option in column D"):
        parse_csv(path.read_bytes(), str(path), subject, "test")  # declared for the dev split only


def test_a_copy_with_another_hash_is_a_warning_not_an_error(data_copy, caplog):
    path = data_copy / "ceval/dev/computer_network_dev.csv"
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))  # same rows, other bytes
    with caplog.at_level(logging.WARNING, logger="harness"):
        [d] = _load(data_copy, "computer_network")
    assert len(d.shots) == 5
    assert "computer_network_dev.csv differs from the published file" in caplog.text


def test_non_utf8_file_is_named(data_copy):
    path = data_copy / "cmmlu/dev/computer_science.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("gb18030"))
    with pytest.raises(TaskError, match="computer_science.csv: not UTF-8"):
        _load(data_copy, "computer_science")


# --- Hub formats, parsed from files built here -----------------------------------------------------


def test_cmmlu_archive_members_parse_like_the_csv_files(tmp_path, data_dir, subject_data):
    archive = tmp_path / "cmmlu_v1_0_1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("test", "dev"):
            for key in ("computer_science", "computer_security", "machine_learning"):
                zf.write(data_dir / f"cmmlu/{split}/{key}.csv", f"{split}/{key}.csv")
    subjects = select_subjects(["computer_science", "computer_security", "machine_learning"])
    raw, member = read_archive_member(archive, subjects[0], "test")
    assert member == "test/computer_science.csv"
    loaded = load_hub(subjects, repos={"cmmlu": str(tmp_path)})
    for d in loaded:
        assert d.questions == subject_data[d.subject.key].questions
        assert d.shots == subject_data[d.subject.key].shots
        assert d.sources["test"]["sha256"] == d.subject.sha256["test"]


def test_ceval_parquet_configs_parse_like_the_csv_files(tmp_path, subject_data):
    import pandas as pd

    keys = ["college_programming", "computer_architecture", "computer_network"]
    configs = []
    for key in keys:
        d = subject_data[key]
        for split, qs in (("val", d.questions), ("dev", d.shots)):
            frame = pd.DataFrame(
                [{"id": q.id, "question": q.question, "A": q.options[0], "B": q.options[1], "C": q.options[2],
                  "D": q.options[3], "answer": q.answer, "explanation": ""} for q in qs]
            )
            (tmp_path / key).mkdir(exist_ok=True)
            frame.to_parquet(tmp_path / key / f"{split}-00000-of-00001.parquet")
        configs.append(
            f"  - config_name: {key}\n    data_files:\n      - split: val\n        path: {key}/val-*\n"
            f"      - split: dev\n        path: {key}/dev-*\n"
        )
    (tmp_path / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n", encoding="utf-8")
    loaded = load_hub(select_subjects(keys), repos={"ceval": str(tmp_path)})
    for d in loaded:
        assert d.questions == subject_data[d.subject.key].questions
        assert d.shots == subject_data[d.subject.key].shots
