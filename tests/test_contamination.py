"""`harness contamination`: evaluated questions planted in generated corpora are found, in every
disguise the issue names, with their record and span; unrelated DevOps text, exam boilerplate and
the benchmark's own different-but-similar questions are not. Corpora are generated here, in tmp
directories, from the staged questions: no benchmark text is kept in the repository.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import harness.contamination.corpus
import tasks.contamination
from harness.cli import main
from harness.contamination.corpus import CorpusFile, corpus_files, read_records
from tasks.contamination import TextRecord, match_tokens, scan
from tasks.data import normalize_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "training" / "data"

# What is planted, and how it is disguised. Chosen for their shapes (asserted below), and because
# none of them has a near-duplicate elsewhere in the benchmark.
VERBATIM = ("computer_architecture", 2)
RESPACED = ("computer_security", 0)  # whitespace and punctuation changed
KANGXI = ("computer_science", 37)  # the benchmark has Kangxi look-alikes; the corpus ordinary ideographs
REORDERED = ("machine_learning", 5)  # options D, C, B, A under the letters A..D
SHORT_STEM = ("computer_science", 165)  # a stem of 4 tokens: found through its options
LINE_BREAKS = ("college_programming", 6)  # multi-line code options, flattened to one line
SHARED_OPTIONS = ("computer_security", 66)  # 22 and 162 share its four options under other stems
PLANTED = (VERBATIM, RESPACED, KANGXI, REORDERED, SHORT_STEM, LINE_BREAKS, SHARED_OPTIONS)


@pytest.fixture(scope="module")
def questions(subject_data):
    return {(q.subject, q.id): q for d in subject_data.values() for q in d.questions}


def exam(q, order=(0, 1, 2, 3), sep="\n") -> str:
    """A question as exam text: the stem, then lettered options in `order`."""
    return q.question + sep + sep.join(f"{letter}. {q.options[i]}" for letter, i in zip("ABCD", order))


def respaced(text: str) -> str:
    """Other whitespace and punctuation: spaces between ideographs, ASCII punctuation, line breaks."""
    text = text.translate(str.maketrans({"，": ",", "。": ".", "：": ":", "（": "(", "）": ")", "？": "?", "、": "/"}))
    text = re.sub(r"(?<=[\u4e00-\u9fff])(?=[\u4e00-\u9fff])", lambda m: " " if m.start() % 3 else "\n\t", text)
    return "  " + text.replace(" ", "   ") + " ;"


def disguised(key, q) -> str:
    if key == RESPACED:
        return respaced(exam(q))
    if key == KANGXI:
        return normalize_text(exam(q), "kangxi")
    if key == REORDERED:
        return exam(q, order=(3, 2, 1, 0))
    if key == LINE_BREAKS:
        return exam(q, sep=" ").replace("\r\n", " ").replace("\n", " ")
    return "问题：" + exam(q) + "\n答案：" + q.answer


def devops_text(rng: random.Random) -> str:
    """Unrelated DevOps text: the repository's own example data, recombined, with commands and ideographs."""
    pool = [json.loads(line)["text"] for line in (EXAMPLES / "devops_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    pool += [r["output"] for r in json.loads((EXAMPLES / "devops_qa.json").read_text(encoding="utf-8"))]
    parts = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
    parts.append(f" kubectl rollout undo deployment/web --to-revision={rng.randint(1, 99)} ")
    parts.append("".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(0, 30))))
    return "".join(parts)


def write_corpus(path: Path, questions, planted=PLANTED, records=400, seed=0) -> dict:
    """A JSON Lines corpus of unrelated text with `planted` questions inside some records; where each went."""
    rng = random.Random(seed)
    slots = dict(zip(planted, sorted(rng.sample(range(records), len(planted)))))
    where = {}
    with path.open("w", encoding="utf-8") as f:
        for i in range(records):
            text = devops_text(rng)
            for key, slot in slots.items():
                if slot == i:
                    text = text[: len(text) // 2] + "\n" + disguised(key, questions[key]) + "\n" + text[len(text) // 2 :]
                    where[key] = i
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    return where


def contamination(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(["contamination", *map(str, argv)])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --- matching text -------------------------------------------------------------------------------


def test_matching_tokens_drop_punctuation_and_spacing_fold_width_case_and_kangxi():
    assert match_tokens("⽹络 ＴＣＰ/IP，\n协议（ ）") == ["网", "络", "tcp", "ip", "协", "议"]
    assert match_tokens("⻓度") == match_tokens("长度")  # a CJK radical supplement look-alike NFKC leaves alone
    assert match_tokens("ip access-group 101") == ["ip", "access", "group", "101"]  # an English word is one token


def test_planted_questions_have_the_shapes_they_stand_for(questions):
    def has_kangxi(q):
        return any(0x2F00 <= ord(c) <= 0x2FDF for c in q.question + "".join(q.options))

    assert has_kangxi(questions[KANGXI]) and normalize_text(questions[KANGXI].question, "kangxi") != questions[KANGXI].question
    assert len(match_tokens(questions[SHORT_STEM].question)) < tasks.contamination.DEFAULT_NGRAM
    assert any("\n" in o for o in questions[LINE_BREAKS].options)
    shared = set(questions[SHARED_OPTIONS].options) & set(questions[("computer_security", 22)].options)
    assert len(shared) >= 3 and questions[SHARED_OPTIONS].question != questions[("computer_security", 22)].question


# --- the planted-question test -------------------------------------------------------------------


def test_planted_questions_are_all_found_with_their_record_and_nothing_else(questions, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    where = write_corpus(corpus, questions)
    findings = scan(questions.values(), (r for f in corpus_files([str(corpus)]) for r in read_records(f)))
    assert set(findings.found) == set(PLANTED)
    for key, record in where.items():
        (match,) = findings.found[key]
        assert (match.file, match.record, match.line) == (str(corpus), record, record + 1)
        assert match.stem_coverage == 1.0 and match.coverage >= 0.9, key
        assert match.fields == ("text",)
    assert findings.records == 400


def test_the_span_is_where_the_question_sits_in_the_record(questions):
    q = questions[VERBATIM]
    before, text = "持续集成要求频繁合并。", exam(questions[VERBATIM])
    record = TextRecord("corpus.txt", 7, 8, (("text", before + text + "\n以上。"),))
    (match,) = scan(questions.values(), [record]).found[VERBATIM]
    assert (match.start, match.end) == (len(before), len(before) + len(text))
    assert match.excerpt.startswith(q.question[:10])


def test_a_clean_corpus_reports_clean_and_exits_0(questions, data_dir, tmp_path, capsys):
    corpus = tmp_path / "clean.jsonl"
    write_corpus(corpus, questions, planted=())
    code, out, err = contamination(capsys, "--files", corpus, "--data-dir", data_dir, "--json", tmp_path / "c.json")
    assert code == 0
    assert "None of the 574 evaluated questions" in out
    record = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert record["contaminated"] is False and record["found"] == [] and record["scanned"]["records"] == 400
    assert "MB/s" in err


def test_the_report_names_each_planted_question_and_its_record(questions, data_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    where = write_corpus(corpus, questions)
    code, out, _ = contamination(capsys, "--files", corpus, "--data-dir", data_dir,
                                 "--report", tmp_path / "r.md", "--json", tmp_path / "r.json")
    assert code == 1
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == out
    assert f"{len(PLANTED)} of 574 evaluated questions found" in out
    for (subject, row), record in where.items():
        assert f"**{subject.replace('_', chr(92) + '_')} row {row}**" in out
        assert f"record {record} (line {record + 1}, text)" in out
    found = {(q["subject"], q["id"]): q for q in json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["found"]}
    assert set(found) == set(PLANTED)
    assert all(q["matches"][0]["record"] == where[k] for k, q in found.items())


# --- what must not be found ----------------------------------------------------------------------


def test_unrelated_devops_text_and_exam_boilerplate_are_not_found(questions, subject_data):
    from tasks import get_protocol

    # the instruction line, 问题：/答案：, option letters, around a question of the few-shot pool
    boilerplate = [get_protocol(p).render(d.subject, (), d.shots[0]) for d in subject_data.values() for p in ("devops", "cmmlu")]
    boilerplate += ["下列说法正确的是\nA. 是\nB. 否\nC. 以上都对\nD. 以上都不对", "以下关于计算机网络的叙述中，不正确的是（ ）A.B.C.D."]
    rng = random.Random(1)
    records = [TextRecord("x", i, i + 1, (("text", t),)) for i, t in enumerate(boilerplate + [devops_text(rng) for _ in range(300)])]
    records.append(TextRecord("examples", 0, 1, tuple(("text", r) for r in (EXAMPLES / "devops_corpus.jsonl").read_text(encoding="utf-8").splitlines())))
    assert scan(questions.values(), records).found == {}


def test_the_benchmarks_own_similar_questions_are_told_apart(questions):
    """Each question as a training record, against all: repeated questions are found, different ones are not."""
    records = [TextRecord(k[0], k[1], 1, (("text", exam(q)),)) for k, q in questions.items()]
    findings = scan(questions.values(), records)
    found_in = {k: {(m.file, m.record) for m in ms} - {k} for k, ms in findings.found.items()}
    sec = "computer_security"
    # the same question: reworded options, typos, spacing, options shuffled
    assert (sec, 145) in found_in[(sec, 106)] and (sec, 86) in found_in[(sec, 17)] and (sec, 96) in found_in[(sec, 72)]
    # different questions sharing their four options, a long preamble, or an option list and topic
    for a, b in [((sec, 22), (sec, 66)), ((sec, 75), (sec, 149)), (("machine_learning", 43), ("machine_learning", 100)),
                 ((sec, 56), (sec, 79)), ((sec, 15), (sec, 95))]:
        assert b not in found_in.get(a, set()) and a not in found_in.get(b, set()), (a, b)


def test_a_few_shot_row_that_is_a_test_question_is_the_only_dev_row_found(questions, subject_data):
    dev = [TextRecord(f"dev/{d.subject.key}", q.id, 1, (("text", exam(q)),)) for d in subject_data.values() for q in d.shots]
    findings = scan(questions.values(), dev)
    # CMMLU machine_learning dev row 3 is test row 120 without its first character and with options reordered
    assert {k: [(m.file, m.record) for m in ms] for k, ms in findings.found.items()} == {
        ("machine_learning", 120): [("dev/machine_learning", 3)]
    }


def test_a_long_stem_alone_is_found_a_short_one_is_not(questions):
    long_stem, short_stem = questions[RESPACED], questions[SHORT_STEM]
    records = [TextRecord("q", 0, 1, (("instruction", long_stem.question), ("output", "见教材。"))),
               TextRecord("q", 1, 2, (("instruction", short_stem.question + "？请解释。"),))]
    findings = scan(questions.values(), records)
    assert set(findings.found) == {RESPACED}


def test_a_question_made_only_of_short_pieces_is_found_in_any_option_order(questions):
    """Stem and options all shorter than n: only n-grams across them find it, so every order is indexed."""
    keys = [("computer_science", 63), ("computer_network", 10)]
    for key in keys:
        assert all(len(match_tokens(t)) < tasks.contamination.DEFAULT_NGRAM for t in (questions[key].question, *questions[key].options))
    orders = [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)]
    records = [TextRecord("x", i, 1, (("text", exam(questions[k], o)),)) for i, (k, o) in enumerate((k, o) for k in keys for o in orders)]
    findings = scan(questions.values(), records)
    assert {k: len(ms) for k, ms in findings.found.items()} == {k: len(orders) for k in keys}


# --- input: streaming, formats, registry ---------------------------------------------------------


def test_records_stream_through_buffers_far_smaller_than_the_file(questions, tmp_path, monkeypatch):
    monkeypatch.setattr(harness.contamination.corpus, "CHUNK", 64)  # JSON array: read 64 characters at a time
    monkeypatch.setattr(harness.contamination.corpus, "WINDOW", 256)  # a txt line: 256 characters at a time
    monkeypatch.setattr(harness.contamination.corpus, "OVERLAP", 128)
    monkeypatch.setattr(tasks.contamination, "BATCH_CHARS", 500)
    rng = random.Random(2)
    array = [{"instruction": devops_text(rng), "output": devops_text(rng)} for _ in range(40)]
    array[17]["instruction"] = exam(questions[VERBATIM])
    (tmp_path / "qa.json").write_text(json.dumps(array, ensure_ascii=False, indent=2), encoding="utf-8")
    line = "".join(devops_text(rng) for _ in range(20))
    text = line + exam(questions[REORDERED], sep=" ") + line  # one line of several windows
    (tmp_path / "book.txt").write_text("第一行\n" + text + "\n最后一行\n", encoding="utf-8")
    assert (tmp_path / "qa.json").stat().st_size > 50 * harness.contamination.corpus.CHUNK and len(text) > 10 * harness.contamination.corpus.WINDOW

    findings = scan(questions.values(), (r for f in corpus_files([str(tmp_path)]) for r in read_records(f)))
    (in_array,), (in_line,) = findings.found[VERBATIM], findings.found[REORDERED]
    assert (Path(in_array.file).name, in_array.record, in_array.fields) == ("qa.json", 17, ("instruction",))
    assert in_array.line == 2 + 4 * 17  # indent=2: four lines per record after the [
    assert (Path(in_line.file).name, in_line.record, in_line.line) == ("book.txt", 1, 2)
    assert in_line.start == len(line) and in_line.excerpt.startswith(questions[REORDERED].question[:10])
    assert findings.sources[str(tmp_path / "book.txt")].records == 3  # its windows are one record


def test_csv_and_multiline_cells_are_records(questions, tmp_path):
    import csv

    q = questions[LINE_BREAKS]
    with (tmp_path / "bank.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["题目", "A", "B", "C", "D", "备注"])
        w.writerow(["无关的问题", "1", "2", "3", "4", ""])
        w.writerow([q.question, *q.options, "多行\n备注"])
    findings = scan(questions.values(), read_records(CorpusFile(tmp_path / "bank.csv", "csv")))
    (match,) = findings.found[LINE_BREAKS]
    assert (match.record, match.line) == (1, 3)


def test_registry_datasets_are_read_through_the_columns_training_uses(questions, data_dir, tmp_path, capsys):
    sft = [{"question": "什么是蓝绿部署？", "options": "", "answer": "两套环境轮流上线。", "notes": exam(questions[REORDERED])}
           for _ in range(3)]
    sft.append({"question": questions[VERBATIM].question, "options": "\n".join(questions[VERBATIM].options), "answer": "B"})
    (tmp_path / "qa.json").write_text(json.dumps(sft, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "docs.txt").write_text("发布前先跑冒烟测试。\n" + respaced(exam(questions[RESPACED])) .replace("\n", " ") + "\n", encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "my_qa": {"file_name": "qa.json", "stage": "sft", "columns": {"prompt": "question", "query": "options", "response": "answer"}},
        "my_docs": {"file_name": "docs.txt", "stage": "pt"},
    }), encoding="utf-8")
    code, out, _ = contamination(capsys, "--dataset", "my_qa,my_docs", "--dataset_dir", tmp_path,
                                 "--data-dir", data_dir, "--json", tmp_path / "r.json")
    assert code == 1
    found = {(q["subject"], q["id"]): q["matches"][0] for q in json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["found"]}
    # `notes` is no column training reads: the question in it is not training data
    assert set(found) == {VERBATIM, RESPACED}
    assert (found[VERBATIM]["dataset"], found[VERBATIM]["record"], found[VERBATIM]["fields"]) == ("my_qa", 3, ["question", "options"])
    assert (found[RESPACED]["dataset"], found[RESPACED]["line"]) == ("my_docs", 2)
    assert "datasets my_docs, my_qa" in out


def test_a_csv_dataset_needs_only_the_columns_training_reads(questions, data_dir, tmp_path, capsys):
    import csv

    with (tmp_path / "corpus.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])  # no `instruction`/`input`/`output`: the registry maps only the prompt
        w.writerow(["发布前先跑冒烟测试。"])
        w.writerow([exam(questions[VERBATIM])])
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "corp": {"file_name": "corpus.csv", "columns": {"prompt": "text"}, "stage": "pt"},
        "corp_ctx": {"file_name": "corpus.csv", "columns": {"prompt": "text", "query": "context"}, "stage": "pt"},
    }), encoding="utf-8")
    code, out, err = contamination(capsys, "--dataset", "corp", "--dataset_dir", tmp_path, "--data-dir", data_dir)
    assert code == 1, err
    assert "1 of " in out and "corpus.csv" in out
    # a column the registry maps itself must be there, as training requires it
    code, out, err = contamination(capsys, "--dataset", "corp_ctx", "--dataset_dir", tmp_path, "--data-dir", data_dir)
    assert code == 2 and "no column 'context'" in err and len(err.strip().splitlines()) == 1, err


# --- bad input: one line, exit 2 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "setup, argv, message",
    [
        (None, ["--files", "{tmp}/missing.jsonl"], "no such file or directory"),
        ("notes.md", ["--files", "{tmp}/notes.md"], "give txt, json, jsonl or csv"),
        ("bad.jsonl", ["--files", "{tmp}/bad.jsonl"], "bad.jsonl line 2: not JSON"),
        ("bad.json", ["--files", "{tmp}/bad.json"], "bad.json line 3: not JSON"),
        (None, ["--files", "x.txt", "--ngram", "2"], "--ngram 2"),
        (None, ["--files", "x.txt", "--threshold", "1.5"], "--threshold 1.5"),
        ("dataset_info.json", ["--dataset", "nope", "--dataset_dir", "{tmp}"], "unknown dataset 'nope'"),
        (None, ["--files", "x.txt", "--dataset_dir", "{tmp}"], "--dataset_dir"),
        (None, ["--dataset", "a", "--files", "x.txt"], "not allowed with argument"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(setup, argv, message, data_dir, tmp_path, capsys):
    contents = {"notes.md": "# hi\n", "bad.jsonl": '{"text": "ok"}\n{"text": oops}\n',
                "bad.json": '[\n {"text": "ok"},\n {"text" "x"}\n]', "dataset_info.json": '{"a": {"file_name": "a.txt"}}'}
    if setup:
        (tmp_path / setup).write_text(contents[setup], encoding="utf-8")
    code, out, err = contamination(capsys, *(a.format(tmp=tmp_path) for a in argv), "--data-dir", data_dir)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_found_questions_exit_1_from_a_fresh_process(questions, data_dir, tmp_path):
    import subprocess
    import sys

    (tmp_path / "dirty.txt").write_text("前言\n" + exam(questions[VERBATIM]).replace("\n", " ") + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "harness", "contamination", "--files", str(tmp_path / "dirty.txt"), "--data-dir", str(data_dir)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    assert "1 of 574 evaluated questions found" in done.stdout


# --- harness train runs the check; the gate and the leaderboard flag what it found ---------------


def contaminated_registry(root: Path, questions) -> Path:
    """A dataset registry whose sft dataset holds one evaluated question among ordinary QA."""
    rows = [{"instruction": f"请解释第{i}条部署规范。", "input": "", "output": "先灰度，再全量。"} for i in range(7)]
    rows.insert(3, {"instruction": exam(questions[VERBATIM]), "input": "", "output": questions[VERBATIM].answer})
    root.mkdir(parents=True, exist_ok=True)
    (root / "qa.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (root / "dataset_info.json").write_text(json.dumps({"leaky_qa": {"file_name": "qa.json", "stage": "sft"}}), encoding="utf-8")
    return root


def train_argv(model, registry: Path, out: Path, *extra) -> list[str]:
    return ["train", "--stage", "sft", "--model_name_or_path", str(model), "--dataset", "leaky_qa",
            "--dataset_dir", str(registry), "--template", "chatml", "--finetuning_type", "lora", "--output_dir", str(out),
            "--cache_dir", str(out.parent / "hf-cache"), "--report_to", "none", "--per_device_train_batch_size", "2",
            "--max_steps", "1", "--save_steps", "1", "--seed", "0", *extra]


def test_train_refuses_contaminated_data_before_writing_anything(tiny_model, questions, data_dir, tmp_path, capsys):
    registry = contaminated_registry(tmp_path / "data", questions)
    out = tmp_path / "out"
    code = main(train_argv(tiny_model, registry, out, "--refuse_contaminated", "--eval_devops_data_dir", str(data_dir)))
    err = capsys.readouterr().err
    assert code == 1
    assert "refusing to train" in err and "computer_architecture row 2" in err and "harness contamination" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_train_without_local_benchmark_data_skips_the_check_and_says_so(tiny_model, questions, tmp_path, monkeypatch, caplog):
    from harness.commands.train import training_data_check
    from harness.contamination import check_before_training, log_check
    from training.args import parse_train_args

    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    registry = contaminated_registry(tmp_path / "data", questions)
    result = check_before_training(training_data_check(parse_train_args(train_argv(tiny_model, registry, tmp_path / "out")[1:])))
    assert result == {"checked": False, "reason": "no local benchmark data (--eval_devops_data_dir or $HARNESS_DATA_DIR)"}
    assert caplog.text == ""  # silent before training: a later training error stays one line
    log_check(result)
    assert "contamination check skipped" in caplog.text


@pytest.fixture(scope="module")
def leaky_training(tiny_model_factory, tmp_path_factory, subject_data, data_dir):
    """A LoRA adapter trained (one step) on data holding an evaluated question, and 0-shot runs of it and of its base."""
    questions = {(q.subject, q.id): q for d in subject_data.values() for q in d.questions}
    root = tmp_path_factory.mktemp("leaky")
    base = tiny_model_factory("qwen2")
    out = root / "sft"
    assert main(train_argv(base, contaminated_registry(root / "data", questions), out, "--eval_devops_data_dir", str(data_dir))) == 0
    for name, model in (("base-run", base), ("leaky-run", out / "checkpoint-1")):
        assert main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(root / name),
                     "--shots", "0", "--limit", "2", "--no-progress"]) == 0
    return root


def test_train_warns_and_keeps_the_finding_in_its_training_record(leaky_training):
    record = json.loads((leaky_training / "sft" / "harness_train.json").read_text(encoding="utf-8"))
    c = record["contamination"]
    assert c["checked"] and c["contaminated"] and c["questions"] == 1
    assert c["datasets"] == {"leaky_qa": {"questions": 1}}
    assert (c["found"][0]["subject"], c["found"][0]["id"], c["found"][0]["record"]) == (*VERBATIM, 3)


def test_the_gate_flags_a_candidate_trained_on_contaminated_data(leaky_training, tmp_path, capsys):
    code = main(["gate", "--baseline", str(leaky_training / "base-run"), "--candidate", str(leaky_training / "leaky-run"),
                 "--json", str(tmp_path / "verdict.json")])
    out = capsys.readouterr().out
    assert code in (0, 1)  # the flag is shown; it does not decide
    assert "⚠️ **Contamination**: the candidate model was trained on data holding 1 evaluated question(s) (leaky\\_qa)" in out  # Markdown-escaped: renders as leaky_qa
    assert "the baseline model was" not in out
    (verdict,) = json.loads((tmp_path / "verdict.json").read_text(encoding="utf-8"))["verdicts"]
    assert "harness_train.json" in verdict["candidate"]["contamination"] and verdict["baseline"]["contamination"] is None


def test_the_leaderboard_marks_the_row_and_says_why(leaky_training, capsys):
    assert main(["leaderboard", str(leaky_training / "base-run"), str(leaky_training / "leaky-run")]) == 0
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if line.startswith("| ") and "⚠️" in line]
    assert len(flagged) == 1 and "checkpoint-1" in flagged[0]
    assert "⚠️ contamination (`harness contamination`): checkpoint-1" in out
    assert main(["leaderboard", str(leaky_training / "leaky-run"), "--format", "json"]) == 0
    rows = [r for s in json.loads(capsys.readouterr().out)["sections"] for t in s["tables"] for r in t["rows"]]
    assert [r["label"] for r in rows if r["contamination"]] == ["checkpoint-1"]


def test_a_checkpoint_is_traced_to_its_training_record_and_an_unreadable_one_is_said(tmp_path):
    from harness.lineage import contamination_flag
    from harness.records import ModelInfo

    out = tmp_path / "out"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "harness_train.json").write_text(json.dumps({"contamination": {"contaminated": True, "questions": 2,
                                                                          "datasets": {"a": {"questions": 2}, "b": {"questions": 0}}}}))
    flag = contamination_flag(ModelInfo(name=str(out / "checkpoint-3"), path="Qwen/Qwen-7B"))
    assert flag.startswith("trained on data holding 2 evaluated question(s) (a); see ")
    assert contamination_flag(ModelInfo(name="Qwen/Qwen-7B", path="Qwen/Qwen-7B")) is None
    (out / "harness_train.json").write_text("{", encoding="utf-8")
    assert "cannot be read" in contamination_flag(ModelInfo(name=str(out)))
