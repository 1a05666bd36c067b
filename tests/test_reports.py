"""`harness report` and `harness compare` on real runs of tiny models."""

from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest

from harness.cli import main
from harness.records import load_run
from harness.stats import mcnemar_exact
from reports.calibration import calibration, confidence
from reports.compare import compare
from reports.output import PNG_SIGNATURE

LIMIT = "20"  # the first 20 questions of each subject (computer_network has 19): enough for every table and plot
QUESTIONS = 5 * 20 + 19


def _eval(model, out, data_dir, *extra):
    code = main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 "--limit", LIMIT, *extra])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def runs(tiny_model_factory, data_dir, tmp_path_factory):
    """a, b: two tiny models, 5-shot; zero: a 0-shot; cmmlu: a on another protocol; other_data:
    a on a data copy where one few-shot question differs by one digit (all with --limit 20)."""
    root = tmp_path_factory.mktemp("reports")
    a, b = tiny_model_factory("qwen2", 0), tiny_model_factory("llama", 1)
    data_copy = root / "data"
    shutil.copytree(data_dir, data_copy)
    dev = data_copy / "cmmlu/dev/computer_security.csv"
    dev.write_bytes(dev.read_bytes().replace(b"\n0,2003", b"\n0,2004", 1))
    return {
        "a": _eval(a, root / "a", data_dir, "--shots", "5"),
        "b": _eval(b, root / "b", data_dir, "--shots", "5"),
        "zero": _eval(a, root / "zero", data_dir, "--shots", "0"),
        "cmmlu": _eval(a, root / "cmmlu", data_dir, "--shots", "5", "--protocol", "cmmlu"),
        "other_data": _eval(a, root / "other-data", data_copy, "--shots", "5"),
    }


def _samples(run_dir):
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def _is_png(path):
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 5000


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


# --- harness report -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.md"
    assert main(["report", str(runs["a"]), "--output", str(out)]) == 0
    return out


def test_report_writes_markdown_and_a_calibration_png_linked_from_it(report):
    image = report.with_name("report-calibration.png")
    assert _is_png(image)
    assert "](report-calibration.png)" in report.read_text(encoding="utf-8")


def test_report_per_subject_accuracy_and_intervals_are_the_records(report, runs):
    r = json.loads((runs["a"] / "results.json").read_text())
    rows = _table_rows(report.read_text(encoding="utf-8"), "| subject | questions |")
    for row, s in zip(rows, r["subjects"].values()):
        assert row[1:5] == [str(s["n"]), str(s["correct"]), f"{100 * s['accuracy']:.2f}",
                            f"[{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]"]
    assert rows[6][3] == f"**{100 * r['overall']['micro']:.2f}**"


def test_report_sets_predicted_letters_against_gold_letters(report, runs):
    samples = _samples(runs["a"])
    rows = _table_rows(report.read_text(encoding="utf-8"), "| letter | predicted |")
    assert [row[0] for row in rows] == ["A", "B", "C", "D"]
    for row in rows:
        assert int(row[1]) == sum(s["pred"] == row[0] for s in samples)
        assert int(row[3]) == sum(s["gold"] == row[0] for s in samples)


def test_report_lists_the_most_confidently_wrong_by_subject_and_row_only(report, runs, subject_data):
    samples = _samples(runs["a"])
    wrong = sorted((s for s in samples if not s["correct"]), key=lambda s: -_softmax(s["logits"])["ABCD".index(s["pred"])])
    rows = _table_rows(report.read_text(encoding="utf-8"), "| # | subject | row |")
    assert len(rows) == 10
    assert [(r[1].replace("\\_", "_"), int(r[2]), r[3], r[4]) for r in rows] == \
        [(s["subject"], s["id"], s["gold"], s["pred"]) for s in wrong[:10]]
    text = report.read_text(encoding="utf-8")
    for s in wrong[:10]:  # licensed data: the question text never appears
        q = subject_data[s["subject"]].questions[s["id"]]
        assert q.question.strip() not in text


def test_calibration_bins_count_every_question_and_ece_is_the_weighted_gap(runs):
    samples = load_run(runs["a"]).samples
    cal = calibration(samples)
    assert sum(b.count for b in cal.bins) == len(samples) == QUESTIONS
    conf = np.array([confidence(s) for s in samples])
    assert all(0.25 <= c <= 1 for c in conf)
    gaps = sum(b.count * abs(b.accuracy - b.confidence) for b in cal.bins if b.count)
    assert cal.ece == pytest.approx(gaps / len(samples))
    assert cal.mean_confidence == pytest.approx(conf.mean())


def test_report_reproduce_command_makes_the_same_predictions(report, runs, tmp_path):
    command = next(line for line in report.read_text(encoding="utf-8").splitlines() if line.startswith("harness eval "))
    args = shlex.split(command)[1:] + ["--output", str(tmp_path / "again"), "--no-progress"]
    assert main(args) == 0
    again = {(s["subject"], s["id"]): s["pred"] for s in _samples(tmp_path / "again")}
    assert again == {(s["subject"], s["id"]): s["pred"] for s in _samples(runs["a"])}


def test_report_without_output_prints_markdown_and_writes_nothing(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in runs["a"].iterdir())
    assert main(["report", str(runs["a"])]) == 0
    assert capsys.readouterr().out.startswith("# Run report: ")
    assert not list(tmp_path.iterdir()) and sorted(p.name for p in runs["a"].iterdir()) == before


def test_report_renders_identical_bytes_twice(runs, tmp_path):
    for name in ("one", "two"):
        assert main(["report", str(runs["b"]), "--output", str(tmp_path / f"{name}.md")]) == 0
    assert (tmp_path / "one-calibration.png").read_bytes() == (tmp_path / "two-calibration.png").read_bytes()
    one = (tmp_path / "one.md").read_text().replace("one-calibration", "two-calibration")
    assert one == (tmp_path / "two.md").read_text()


def _softmax(logits):
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


# --- harness compare ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def comparison(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "a-vs-b.md"
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--output", str(out)]) == 0
    return out


def _flips(runs):
    a = {(s["subject"], s["id"]): s for s in _samples(runs["a"])}
    b = {(s["subject"], s["id"]): s for s in _samples(runs["b"])}
    rw = sorted(k for k in a if a[k]["correct"] and not b[k]["correct"])
    wr = sorted(k for k in a if b[k]["correct"] and not a[k]["correct"])
    return rw, wr


def test_compare_writes_markdown_and_a_per_subject_png(comparison):
    assert _is_png(comparison.with_name("a-vs-b-subjects.png"))
    assert "](a-vs-b-subjects.png)" in comparison.read_text(encoding="utf-8")


def test_compare_lists_exactly_the_questions_that_flipped(comparison, runs):
    rw, wr = _flips(runs)
    text = comparison.read_text(encoding="utf-8")
    order = {k: i for i, k in enumerate(json.loads((runs["a"] / "results.json").read_text())["task"]["subjects"])}
    for title, flips in (("## Right → wrong", rw), ("## Wrong → right", wr)):
        assert f"{title} (A right, B wrong): {len(flips)}" in text or f"{title} (A wrong, B right): {len(flips)}" in text
        section = text.split(title)[1]
        rows = _table_rows(section, "| subject | row |") if flips else []
        assert [(r[0].replace("\\_", "_"), int(r[1])) for r in rows] == sorted(flips, key=lambda k: (order[k[0]], k[1]))


def test_compare_p_value_is_the_exact_mcnemar_on_the_flips(comparison, runs):
    rw, wr = _flips(runs)
    c = compare(load_run(runs["a"]), load_run(runs["b"]))
    assert (c.overall.right_to_wrong, c.overall.wrong_to_right) == (len(rw), len(wr))
    assert c.overall.p_value == mcnemar_exact(len(rw), len(wr))
    total = sum(d.right_to_wrong for d in c.subjects), sum(d.wrong_to_right for d in c.subjects)
    assert total == (len(rw), len(wr))
    overall = _table_rows(comparison.read_text(encoding="utf-8"), "| subject | questions | A (%)")[-1]
    assert overall[5:7] == [f"**{len(rw)}**", f"**{len(wr)}**"]


def test_a_run_compared_with_itself_has_no_flips(runs):
    c = compare(load_run(runs["a"]), load_run(runs["a"]))
    assert c.right_to_wrong == c.wrong_to_right == [] and c.overall.p_value == 1.0
    assert c.same_prediction == QUESTIONS


# --- bad input: one line, exit 2, nothing written -------------------------------------------

def _one_line_error(capsys, code, *needles):
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err


@pytest.mark.parametrize(
    "other, needle",
    [("zero", "protocol.shots differs (5 in RUN_A, 0 in RUN_B)"),
     ("cmmlu", "protocol.name differs (devops in RUN_A, cmmlu in RUN_B)"),
     ("other_data", "scored on different data: the content of computer_security/dev")],
)
def test_compare_refuses_runs_made_differently(runs, tmp_path, capsys, other, needle):
    out = tmp_path / "cmp.md"
    _one_line_error(capsys, main(["compare", str(runs["a"]), str(runs[other]), "--output", str(out)]), "cannot compare", needle)
    assert not list(tmp_path.iterdir())


def test_report_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    _one_line_error(capsys, main(["report", str(tmp_path)]), "is not a finished run: no results.json")


def test_report_on_a_directory_holding_runs_names_them(runs, tmp_path, capsys):
    shutil.copytree(runs["a"], tmp_path / "shots-5")
    _one_line_error(capsys, main(["report", str(tmp_path)]), "holds runs (shots-5)", "pass one of them")


def test_report_on_a_corrupt_results_json(runs, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(runs["a"], bad)
    (bad / "results.json").write_text(json.dumps({"schema": "devops-eval/run/1", "overall": {"n": QUESTIONS}}))
    _one_line_error(capsys, main(["report", str(bad), "--output", str(tmp_path / "r.md")]), "results.json", "'model' is missing")
    assert not (tmp_path / "r.md").exists()


def test_report_output_in_a_missing_directory(runs, tmp_path, capsys):
    _one_line_error(capsys, main(["report", str(runs["a"]), "--output", str(tmp_path / "no/r.md")]), "does not exist")
