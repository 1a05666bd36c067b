"""Run records under forged or edited input: refused in one line, never believed; finished runs
never rewritten; a full disk, an interrupt or a second writer leave nothing half-made."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest

import harness.records
from harness.cli import main
from harness.records import LETTERS, load_run

LIMIT = "2"  # 12 questions: every subject, seconds per run


def _eval(model, out, data_dir, *extra) -> int:
    return main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 "--limit", LIMIT, "--shots", "0", *extra])


def _one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def finished(tiny_model, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "run"
    assert _eval(tiny_model, out, data_dir) == 0
    return out


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "copy"))


def _rewrite_samples(run: Path, edit) -> None:
    lines = [json.loads(x) for x in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    out = []
    for x in lines:
        out += edit(x)
    (run / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in out), encoding="utf-8")


def _forge_all_right(x: dict) -> list[dict]:
    return [{**x, "pred": x["gold"], "correct": True}]


def test_forged_samples_whose_letters_are_not_their_logits_choice_are_refused_by_resume_and_gate(copy, tiny_model, data_dir, capsys):
    (copy / "results.json").unlink()  # an unfinished run, as the forger leaves it for `harness eval` to "resume"
    assert any(not json.loads(x)["correct"] for x in (copy / "samples.jsonl").read_text().splitlines())
    _rewrite_samples(copy, _forge_all_right)
    assert _eval(tiny_model, copy, data_dir) == 2
    _one_line(capsys, "samples.jsonl line", "its logits choose", "ties to the earlier letter")
    assert not (copy / "results.json").exists()


def test_a_question_scored_twice_is_refused_not_silently_replaced(copy, capsys):
    _rewrite_samples(copy, lambda x: [x, x] if (x["subject"], x["id"]) == ("computer_network", 0) else [x])
    assert main(["report", str(copy)]) == 2
    _one_line(capsys, "samples.jsonl line", "computer_network #0 was scored already on line")


def test_a_gold_letter_that_is_not_the_datas_answer_is_refused_on_resume(copy, tiny_model, data_dir, capsys):
    (copy / "results.json").unlink()

    def other_gold(x: dict) -> list[dict]:
        if (x["subject"], x["id"]) != ("computer_network", 1):
            return [x]
        gold = next(letter for letter in LETTERS if letter != x["gold"])
        return [{**x, "gold": gold, "correct": x["pred"] == gold}]

    _rewrite_samples(copy, other_gold)
    assert _eval(tiny_model, copy, data_dir) == 2
    _one_line(capsys, "computer_network #1 is recorded with gold", "but the data's answer is")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda r: r["overall"].update(macro=0.99), "overall.macro is 0.99 but samples.jsonl gives"),
        (lambda r: r["overall"].update(macro_ci95=[0.0, 1.0]), "overall.macro_ci95 is [0.0, 1.0] but samples.jsonl gives"),
        (lambda r: r["overall"].update(micro_ci95=[0.5, 0.6]), "overall.micro_ci95 is [0.5, 0.6] but samples.jsonl gives"),
        (lambda r: r["subjects"]["computer_network"].update(ci95=[0.1, 0.2]), "subjects.computer_network.ci95 is"),
        (lambda r: r["protocol"].update(shots=5), "results.json was changed after the run wrote it"),
        (lambda r: r["model"].update(name="DevOps-Model-14B-Base"), "results.json was changed after the run wrote it"),
    ],
)
def test_every_summary_number_and_setting_of_results_json_is_checked(copy, edit, needle, capsys):
    results = json.loads((copy / "results.json").read_text(encoding="utf-8"))
    edit(results)
    (copy / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    for command in (["report", str(copy)], ["gate", "--baseline", str(copy), "--candidate", str(copy)],
                    ["leaderboard", str(copy)]):
        assert main(command) == 2
        _one_line(capsys, needle)


def test_edited_settings_and_reordered_samples_are_seen(copy, capsys):
    settings = json.loads((copy / "settings.json").read_text(encoding="utf-8"))
    settings["protocol"]["shots"] = 5
    (copy / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    assert main(["report", str(copy)]) == 2
    _one_line(capsys, "settings.json was changed after the run wrote it")
    lines = (copy / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    (copy / "samples.jsonl").write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    (copy / "settings.json").unlink()  # the samples' digest is checked whatever settings.json says
    assert main(["report", str(copy)]) == 2
    _one_line(capsys, "samples.jsonl was changed after the run wrote it")


def test_a_record_without_digests_written_before_they_were_still_reads(copy):
    results = json.loads((copy / "results.json").read_text(encoding="utf-8"))
    del results["integrity"]
    (copy / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert load_run(copy).micro.n == 12


def test_a_second_writer_of_one_run_directory_is_refused_naming_the_holder(tiny_model, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("4242")
    held = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _eval(tiny_model, out, data_dir) == 2
        _one_line(capsys, "is being written by another harness eval right now (pid 4242)")
    finally:
        os.close(held)
    assert _eval(tiny_model, out, data_dir) == 0  # once it is free, the run goes on
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "samples.jsonl", "settings.json"]


def test_a_disk_that_fills_mid_run_is_one_line_and_the_run_resumes(tiny_model, data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    fsync = os.fsync

    def full_after_one_batch(fd):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(harness.records.os, "fsync", full_after_one_batch)
    assert _eval(tiny_model, out, data_dir, "--batch-size", "2") == 2
    _one_line(capsys, "cannot append to", "No space left on device", "run the same command again to resume")
    monkeypatch.setattr(harness.records.os, "fsync", fsync)
    assert _eval(tiny_model, out, data_dir, "--batch-size", "2") == 0
    assert load_run(out).micro.n == 12


def test_a_merge_interrupted_before_it_tidied_up_resumes(copy, tiny_model, data_dir, capsys):
    (copy / "results.json").unlink()
    shutil.copy(copy / "samples.jsonl", copy / "samples.rank1.jsonl")  # merged, rank file not yet removed
    assert _eval(tiny_model, copy, data_dir) == 0
    assert sorted(p.name for p in copy.iterdir()) == ["results.json", "samples.jsonl", "settings.json"]
    lines = (copy / "samples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    gold = first["gold"]
    other = next(letter for letter in LETTERS if letter != gold)
    logits = [0.0] * 4
    logits[LETTERS.index(other)] = 9.0
    (copy / "results.json").unlink()
    (copy / "samples.rank1.jsonl").write_text(json.dumps({**first, "pred": other, "logits": logits, "correct": False}) + "\n")
    assert _eval(tiny_model, copy, data_dir) == 2  # the same question answered otherwise: refused
    _one_line(capsys, "was scored already, otherwise, in samples.jsonl")


def test_an_interrupt_before_the_first_answer_removes_every_directory_it_made(tiny_model, data_dir, tmp_path, capsys, monkeypatch):
    from harness.scoring import LetterScorer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LetterScorer, "score", interrupted)
    assert _eval(tiny_model, tmp_path / "a" / "b" / "c", data_dir) == 130
    assert not (tmp_path / "a").exists()


def test_a_full_disk_at_settings_json_leaves_no_empty_directories(tiny_model, data_dir, tmp_path, capsys, monkeypatch):
    import harness.evaluate
    from harness.errors import HarnessError

    def no_space(path, obj):
        raise HarnessError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(harness.evaluate, "write_json", no_space)
    assert _eval(tiny_model, tmp_path / "a" / "b", data_dir) == 2
    _one_line(capsys, "settings.json: No space left on device")
    assert not (tmp_path / "a").exists()
