"""`harness leaderboard` on real runs of tiny models: the model card's tables, the README block,
the chart, the other formats, and bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil

import pytest

from harness.cli import main
from harness.records import seal_run
from leaderboard.readme import END, START, with_block
from leaderboard.references import references
from reports.markdown import md_escape
from reports.output import PNG_SIGNATURE

EVIL = "evil|`x`<script>*y*[a](b)\nz"  # a legal directory name that would break a naive table


def _eval(model, out, data_dir, *extra):
    code = main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out), "--no-progress", *extra])
    assert code == 0


@pytest.fixture(scope="module")
def runs(tiny_model_factory, data_dir, tmp_path_factory):
    """runs/alpha/shots-{0,5}, runs/beta/shots-{0,5}, runs/alpha-chat (0-shot), runs/alpha-int4
    (0-shot, a checkpoint whose quantization marker says 4 bits, made from alpha), runs/evil
    (cmmlu protocol, --limit 2: a section of its own). Zero-shot where five is not needed: faster."""
    root = tmp_path_factory.mktemp("leaderboard")
    models = root / "models"
    models.mkdir()
    alpha, beta, evil = models / "alpha", models / "beta", models / EVIL
    alpha.symlink_to(tiny_model_factory("qwen2", 0))
    beta.symlink_to(tiny_model_factory("llama", 1))
    evil.symlink_to(tiny_model_factory("qwen2", 0))
    int4 = models / "alpha-int4"
    shutil.copytree(tiny_model_factory("qwen2", 0), int4)
    (int4 / "harness_quantization.json").write_text(json.dumps({"method": "marker", "bits": 4, "source": str(alpha)}))

    runs = root / "runs"
    _eval(alpha, runs / "alpha", data_dir, "--shots", "0", "--shots", "5")
    _eval(beta, runs / "beta", data_dir, "--shots", "0", "--shots", "5")
    _eval(alpha, runs / "alpha-chat", data_dir, "--shots", "0", "--chat")
    _eval(int4, runs / "alpha-int4", data_dir, "--shots", "0")
    _eval(evil, runs / "evil", data_dir, "--shots", "0", "--protocol", "cmmlu", "--limit", "2")
    return runs


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def _measured(run_dir) -> str:
    o = _results(run_dir)["overall"]
    lo, hi = o["micro_ci95"]
    return f"{100 * o['micro']:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _leaderboard(*args) -> int:
    return main(["leaderboard", *map(str, args)])


@pytest.fixture(scope="module")
def readme(runs, tmp_path_factory):
    """A README with text around the markers, after `harness leaderboard runs/* --readme README.md`."""
    path = tmp_path_factory.mktemp("readme") / "README.md"
    path.write_text(f"# My models\n\nIntro.\n\n{START}\nold block\n{END}\n\nFooter.\n", encoding="utf-8")
    assert _leaderboard(*sorted(runs.glob("*")), "--readme", path, "--highlight", "alpha") == 0
    return path


def _table(text: str, title: str, section: int = 0) -> list[str]:
    """The lines of the `section`-th table whose header starts with `|{title}|`."""
    blocks = [b for b in text.split("\n\n") if b.startswith(f"|{title}|")]
    return blocks[section].splitlines()


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


# --- the model card's tables ----------------------------------------------------------------

def test_every_reported_row_of_the_model_card_is_in_the_readme(readme):
    text = readme.read_text(encoding="utf-8")
    assert "| Qwen-7B-Base | 55.75 | 56.00 |" in text
    for ref in references():
        assert f"| {ref.name} | {ref.zero_shot:.2f} | {ref.five_shot:.2f} |" in text


def test_base_and_chat_tables_have_the_model_cards_shape(readme):
    text = readme.read_text(encoding="utf-8")
    base, chat = _table(text, "Base 模型"), _table(text, "Chat 模型")
    assert _cells(base[0])[:3] == ["Base 模型", "Zero-shot 得分", "Five-shot 得分"]
    assert _cells(chat[0])[:3] == ["Chat 模型", "Zero-shot 得分", "Five-shot 得分"]
    assert {_cells(line)[0] for line in base[2:]} >= {r.name for r in references() if r.kind == "Base"}
    assert not {_cells(line)[0] for line in chat[2:]} & {r.name for r in references() if r.kind == "Base"}


def test_measured_rows_carry_their_interval_and_are_labelled(readme, runs):
    base = _table(readme.read_text(encoding="utf-8"), "Base 模型")
    beta = next(_cells(line) for line in base if _cells(line)[0] == "beta")
    assert beta[1:3] == [_measured(runs / "beta/shots-0"), _measured(runs / "beta/shots-5")]
    assert beta[-1] == "measured"
    assert all(_cells(line)[-1] == "reported" for line in base[2:] if _cells(line)[0] in {r.name for r in references()})


def test_a_chat_run_is_a_row_of_the_chat_table(readme, runs):
    chat = _table(readme.read_text(encoding="utf-8"), "Chat 模型")
    row = next(_cells(line) for line in chat if "alpha" in line)
    assert row[0] == "**alpha**" and row[2] == "–"
    assert row[1] == f"**{_measured(runs / 'alpha-chat').replace(' [', '** [')}"


def test_rows_are_sorted_by_size_group_then_score(readme):
    base = [_cells(line)[0].strip("*") for line in _table(readme.read_text(encoding="utf-8"), "Base 模型")[2:]]
    assert base[:7] == ["DevOps-Model-14B-Base", "Qwen-14B-Base", "Baichuan2-13B-Base",  # 13-14B, by score
                        "DevOps-Model-7B-Base", "Qwen-7B-Base", "Baichuan2-7B-Base", "Internlm-7B-Base"]
    assert set(base[7:]) == {"alpha", "beta"}  # tiny models: the smallest size group, last


def test_highlight_bolds_matching_rows_only(readme):
    base = _table(readme.read_text(encoding="utf-8"), "Base 模型")
    assert any(line.startswith("| **alpha** | **") for line in base)
    assert not any("**" in line for line in base if "beta" in line or "Qwen" in line)


def test_int4_columns_hold_the_4bit_run_of_the_model_it_was_made_from(readme, runs):
    base = _table(readme.read_text(encoding="utf-8"), "Base 模型")
    assert _cells(base[0]) == ["Base 模型", "Zero-shot 得分", "Five-shot 得分", "Int4 Zero-shot", "Int4 Five-shot", "Source"]
    alpha = next(_cells(line) for line in base if "alpha" in line)
    assert alpha[3] == f"**{_measured(runs / 'alpha-int4').replace(' [', '** [')}" and alpha[4] == "–"
    qwen = next(_cells(line) for line in base if "Qwen-7B-Base" in line)
    assert qwen[3:5] == ["–", "–"]
    chat = _table(readme.read_text(encoding="utf-8"), "Chat 模型")
    assert "Int4" not in chat[0]  # no 4-bit chat run: the card's three columns


def test_per_subject_table_lists_every_run_with_six_subjects_micro_and_macro(readme, runs):
    text = readme.read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| Model | Kind | Shots |"))
    assert _cells(header)[3:] == ["Computer Science (204)", "Computer Security (171)", "Machine Learning (122)",
                                 "College Programming (37)", "Computer Architecture (21)", "Computer Network (19)",
                                 "Micro", "Macro", "Run"]
    r = _results(runs / "beta/shots-5")
    row = next(_cells(line) for line in text.splitlines() if line.startswith("| beta | Base | 5 |"))
    assert row[3:9] == [f"{100 * s['accuracy']:.2f}" for s in r["subjects"].values()]
    assert row[9:11] == [f"{100 * r['overall']['micro']:.2f}", f"{100 * r['overall']['macro']:.2f}"]
    rel = os.path.relpath(runs / "beta/shots-5", readme.parent)
    assert row[11] == f"[{rel}]({rel})"  # the run, relative to the README


def test_a_run_of_another_protocol_is_a_section_of_its_own(readme):
    text = readme.read_text(encoding="utf-8")
    sections = re.findall(r"^### (.*)$", text, re.MULTILINE)
    assert sections == ["Protocol `devops` v1 · 574 questions · data: the published files",
                        "Protocol `cmmlu` v1 · 12 questions · data: the published files"]
    devops, cmmlu = text.split("### Protocol `cmmlu`")
    assert "evil" not in devops and "Qwen-7B-Base" not in cmmlu
    assert "a smoke test, not a score" in cmmlu


def test_the_cards_numbers_are_never_ranked_beside_runs_on_other_data(runs, tmp_path, capsys):
    other = shutil.copytree(runs / "beta" / "shots-0", tmp_path / "other-data")
    results = json.loads((other / "results.json").read_text(encoding="utf-8"))
    results["task"]["data"]["computer_network"]["val"]["content_sha256"] = "0" * 64
    (other / "results.json").write_text(json.dumps(results), encoding="utf-8")
    seal_run(other)  # as a run on other data would be
    assert _leaderboard(other, "--output", tmp_path / "board.md") == 0
    text = (tmp_path / "board.md").read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    assert len(sections) == 2
    theirs, card = sorted(sections, key=lambda sec: "Qwen-7B-Base" in sec)
    assert "differs from the published files" in theirs and "beta" in theirs and "| reported |" not in theirs
    assert "Qwen-7B-Base" in card and "beta" not in card


def test_a_model_name_cannot_break_the_table_or_inject_markup(readme):
    text = readme.read_text(encoding="utf-8")
    line = next(line for line in _table(text, "Base 模型", section=1) if "evil" in line)
    assert _cells(line)[0] == r"evil\|\`x\`&lt;script&gt;\*y\*\[a\](b) z"
    assert len(_cells(line)) == 4  # the pipe in the name did not add a column
    assert "<script>" not in text and "\nz" not in text


def test_markdown_escaping_neutralises_markup():
    assert md_escape("a|b") == r"a\|b"
    assert md_escape("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert md_escape("`code` *em* _em_ [l](u) ~s~ $x$ \\") == r"\`code\` \*em\* \_em\_ \[l\](u) \~s\~ \$x\$ \\"
    assert md_escape("line\r\nbreak\u2028here") == "line break here"


# --- the README block -----------------------------------------------------------------------

def test_text_outside_the_markers_is_untouched(readme):
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"# My models\n\nIntro.\n\n{START}\n")
    assert text.endswith(f"\n{END}\n\nFooter.\n")
    assert "old block" not in text


def test_a_second_run_changes_nothing(readme, runs, capsys):
    chart = readme.with_name("README-leaderboard.png")
    before = readme.read_bytes(), chart.read_bytes()
    capsys.readouterr()
    assert _leaderboard(*sorted(runs.glob("*")), "--readme", readme, "--highlight", "alpha") == 0
    assert "already up to date" in capsys.readouterr().out
    assert (readme.read_bytes(), chart.read_bytes()) == before


def test_the_chart_is_a_png_beside_the_readme_and_linked_from_it(readme):
    chart = readme.with_name("README-leaderboard.png")
    data = chart.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    assert "](README-leaderboard.png)" in readme.read_text(encoding="utf-8")


def test_crlf_bom_and_no_final_newline_are_kept(runs, tmp_path):
    path = tmp_path / "README.md"
    before, after = b"\xef\xbb\xbfTitle\r\n\r\n", b"\r\nLast line, no newline"
    path.write_bytes(before + f"{START}\r\nold\r\n{END}".encode() + after)
    assert _leaderboard(runs / "beta", "--readme", path) == 0
    data = path.read_bytes()
    assert data.startswith(before + START.encode() + b"\r\n") and data.endswith(END.encode() + after)
    assert b"\n" not in data.replace(b"\r\n", b"")  # the block took the file's line endings
    assert _leaderboard(runs / "beta", "--readme", path) == 0
    assert path.read_bytes() == data


def test_markers_are_appended_when_absent(runs, tmp_path):
    path = tmp_path / "README.md"
    original = "# Project\n\nNo markers here, `<!-- leaderboard:start -->` only mentioned."
    path.write_text(original, encoding="utf-8")
    assert _leaderboard(runs / "beta", "--readme", path) == 0
    text = path.read_text(encoding="utf-8")
    assert text.startswith(original + "\n\n## Leaderboard\n\n" + START + "\n")
    assert text.endswith(END)  # the file had no final newline; it still has none
    assert "| Qwen-7B-Base | 55.75 | 56.00 |" in text


def test_a_missing_readme_is_created(runs, tmp_path):
    path = tmp_path / "NEW.md"
    assert _leaderboard(runs / "beta", "--readme", path) == 0
    assert path.read_text(encoding="utf-8").startswith("## Leaderboard\n\n" + START)


def test_markers_shown_in_a_code_block_are_not_the_block():
    doc = f"# Docs\n\n```markdown\n{START}\n{END}\n```\n\n~~~\n{START}\n~~~\n\n{START}\nold\n{END}\n"
    assert with_block(doc, "new") == f"# Docs\n\n```markdown\n{START}\n{END}\n```\n\n~~~\n{START}\n~~~\n\n{START}\nnew\n{END}\n"
    only_shown = f"Use:\n\n````\n```\n{START}\n{END}\n```\n````\n"
    assert with_block(only_shown, "new").startswith(only_shown) and with_block(only_shown, "new").count(START) == 2


def test_with_block_is_idempotent_and_ignores_markers_that_are_not_alone_on_their_line():
    text = f"a `{START}` b\n{START}\nx\n  {END}\nc\n"
    once = with_block(text, "new")
    assert once == f"a `{START}` b\n{START}\nnew\n  {END}\nc\n"
    assert with_block(once, "new") == once


# --- other inputs and formats ---------------------------------------------------------------

def test_a_parent_directory_and_a_quoted_glob_find_the_same_runs(runs, tmp_path, capsys):
    outputs = []
    for args in ([runs], [runs / "*"], sorted(runs.glob("*"))):
        assert _leaderboard(*args, "--format", "json") == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2]


def test_csv_has_one_line_per_number_with_its_source(runs, capsys):
    assert _leaderboard(runs / "alpha", runs / "beta", "--format", "csv") == 0
    lines = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    qwen = [r for r in lines if r["model"] == "Qwen-7B-Base"]
    assert [(r["shots"], r["accuracy"], r["source"], r["ci95_low"]) for r in qwen] == [
        ("0", "55.75", "reported", ""), ("5", "56.00", "reported", "")]
    beta5 = next(r for r in lines if r["label"] == "beta" and r["shots"] == "5")
    o = _results(runs / "beta/shots-5")["overall"]
    assert (beta5["source"], int(beta5["correct"]), int(beta5["n"])) == ("measured", o["correct"], 574)
    assert beta5["protocol"] == "devops" and beta5["run"].endswith("runs/beta/shots-5")


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised_and_numbers_stay_numbers():
    from leaderboard.render import csv_safe

    for formula in ('=HYPERLINK("http:x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\tx", "\rx"):
        assert csv_safe(formula) == "'" + formula
    for number in ("-1.5", "+2", "-0.25e3", "56.00", "5", 3, ""):
        assert csv_safe(number) == str(number)
    assert csv_safe("alpha=1") == "alpha=1"  # only the first character makes a formula


def test_a_model_named_like_a_formula_is_text_in_the_csv(tiny_model, data_dir, tmp_path, capsys):
    name = '=HYPERLINK("http:x","y")'
    (tmp_path / name).symlink_to(tiny_model)
    _eval(tmp_path / name, tmp_path / "runs" / "formula", data_dir, "--shots", "0", "--limit", "1")
    capsys.readouterr()
    assert _leaderboard(tmp_path / "runs" / "formula", "--format", "csv") == 0
    out = capsys.readouterr().out
    lines = list(csv.DictReader(io.StringIO(out)))
    measured = next(r for r in lines if r["source"] == "measured")
    assert measured["label"] == "'" + name
    assert not any(cell.startswith(("=", "@")) for r in lines for cell in r.values())
    assert float(measured["accuracy"]) >= 0  # numbers are written as numbers


def test_json_states_protocol_interval_and_run_of_every_number(runs, tmp_path):
    out = tmp_path / "board.json"
    assert _leaderboard(runs / "alpha", runs / "beta", "--format", "json", "--output", out) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    (section,) = doc["sections"]
    assert (section["protocol"], section["protocol_version"], section["questions"]) == ("devops", "1", 574)
    base = next(t for t in section["tables"] if t["kind"] == "Base")
    alpha = next(r for r in base["rows"] if r["label"] == "alpha")
    o = _results(runs / "alpha/shots-0")["overall"]
    assert alpha["zero_shot"]["correct"] == o["correct"]
    assert alpha["zero_shot"]["run"] == os.path.relpath(runs / "alpha/shots-0", tmp_path)
    assert alpha["zero_shot"]["ci95"] == [round(100 * x, 4) for x in o["micro_ci95"]]
    assert not list(tmp_path.glob("*.png"))  # a chart only goes with Markdown


def test_markdown_output_file_gets_its_chart(runs, tmp_path):
    out = tmp_path / "board.md"
    assert _leaderboard(runs / "beta", "--output", out) == 0
    assert "](board-leaderboard.png)" in out.read_text(encoding="utf-8")
    assert (tmp_path / "board-leaderboard.png").read_bytes().startswith(PNG_SIGNATURE)


# --- bad input: one line, exit 2, nothing written -------------------------------------------

def _one_line_error(capsys, code, *needles):
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err
    return err


def test_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, _leaderboard(tmp_path / "empty"), "is not a run directory", "holds no runs")


def test_a_corrupt_results_json(runs, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(runs / "beta/shots-0", bad)
    (bad / "results.json").write_text("{not json")
    readme = tmp_path / "README.md"
    readme.write_text("keep me\n")
    _one_line_error(capsys, _leaderboard(runs / "alpha", bad, "--readme", readme), "results.json is corrupt")
    assert readme.read_text() == "keep me\n" and not (tmp_path / "README-leaderboard.png").exists()


def test_an_unfinished_run_is_not_skipped_silently(runs, tmp_path, capsys):
    part = tmp_path / "runs" / "partial"
    shutil.copytree(runs / "beta/shots-0", part)
    (part / "results.json").unlink()
    _one_line_error(capsys, _leaderboard(tmp_path / "runs"), "not a finished run", "partial")


def test_two_runs_of_the_same_model_and_settings_are_refused(runs, tmp_path, capsys):
    shutil.copytree(runs / "beta/shots-0", tmp_path / "again")
    _one_line_error(capsys, _leaderboard(runs / "beta", tmp_path / "again"), "same model and settings", "pass only one")


def test_a_readme_in_a_missing_directory(runs, tmp_path, capsys):
    _one_line_error(capsys, _leaderboard(runs / "beta", "--readme", tmp_path / "no/README.md"), "does not exist")
    assert not (tmp_path / "no").exists()


def test_a_readme_with_one_marker_only_is_left_alone(runs, tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text(f"x\n{START}\ny\n")
    _one_line_error(capsys, _leaderboard(runs / "beta", "--readme", path), "no '<!-- leaderboard:end -->' line")
    assert path.read_text() == f"x\n{START}\ny\n"


def test_a_glob_that_matches_nothing(tmp_path, capsys):
    _one_line_error(capsys, _leaderboard(tmp_path / "nothing-*"), "no runs match")


def test_a_highlight_that_is_not_a_pattern(runs, capsys):
    _one_line_error(capsys, _leaderboard(runs / "beta", "--highlight", "(unclosed"), "--highlight")
