"""The typed run record and the one comparability rule, on real runs of a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import RunError
from harness.records import ModelInfo, RunRecord, RunSettings, load_run

LIMIT = "4"


@pytest.fixture(scope="module")
def run_dir(tiny_model, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("records") / "run"
    assert main(["eval", "--model", str(tiny_model), "--data-dir", str(data_dir), "--output", str(out),
                 "--no-progress", "--limit", LIMIT, "--shots", "0"]) == 0
    return out


def test_the_record_reads_back_to_exactly_what_was_written(run_dir):
    written = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    record = RunRecord.from_json(written, run_dir / "results.json")
    assert record.to_json() == written
    assert list(record.to_json()) == list(written)  # the same fields, in the same order


def test_a_local_model_is_recorded_by_absolute_path_and_labelled_by_the_name_given(tiny_model, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_model.parent)
    out = tmp_path / "run"
    assert main(["eval", "--model", tiny_model.name, "--data-dir", str(data_dir), "--output", str(out),
                 "--no-progress", "--limit", "1", "--shots", "0"]) == 0
    model = load_run(out).model
    assert model.name == tiny_model.name and model.short_name() == tiny_model.name
    assert model.path == str(tiny_model) and Path(model.path).is_absolute()


def test_an_unknown_model_field_is_kept_and_a_wrong_type_is_refused(run_dir, tmp_path):
    written = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    written["model"]["training_step"] = 7
    assert RunRecord.from_json(written, tmp_path / "r.json").model.extra == {"training_step": 7}
    written["model"]["dtype"] = 16
    with pytest.raises(RunError, match="model.dtype must be text"):
        RunRecord.from_json(written, tmp_path / "r.json")


def test_runs_differing_only_in_how_they_ran_are_comparable_and_a_setting_or_data_split_is_named(run_dir):
    settings = load_run(run_dir).settings
    assert settings.comparison_difference(replace(settings, group="other", sources={})) is None
    shots = settings.comparison_difference(replace(settings, shots=5))
    assert (shots.field, shots.ours, shots.theirs) == ("protocol.shots", 0, 5)
    subject, splits = settings.content[0]
    edited = ((subject, ((splits[0][0], "0" * 64), *splits[1:])), *settings.content[1:])
    data = settings.comparison_difference(replace(settings, content=edited))
    assert data.is_data and data.split == f"{subject}/{splits[0][0]}"


def test_settings_whose_data_is_not_read_yet_compare_on_the_prompts_and_questions_alone(run_dir):
    settings = load_run(run_dir).settings
    planned = RunSettings.of(settings.protocol, settings.version, settings.shots, settings.chat, settings.subjects,
                             settings.limit, settings.normalize)
    assert planned.content is None and settings.comparison_difference(planned) is None
    assert settings.comparison_difference(replace(planned, normalize="nfkc")).field == "task.normalize"


def test_resuming_needs_the_same_model_files_and_the_same_data_sources(run_dir):
    run = load_run(run_dir)
    recorded = json.loads((run_dir / "settings.json").read_text(encoding="utf-8"))
    assert run.settings.resume_difference(recorded, run.model) is None
    other_weights = replace(run.model, weights="0" * 16)
    assert run.settings.resume_difference(recorded, other_weights).field == "model.weights"
    sources = json.loads(json.dumps(run.settings.sources))
    subject = next(iter(sources))
    split = next(iter(sources[subject]))
    sources[subject][split]["sha256"] = "f" * 64
    moved = replace(run.settings, sources=sources)
    assert run.settings.comparison_difference(moved) is None  # the same questions, comparable
    assert moved.resume_difference(recorded, run.model).field == f"task.data.{subject}.{split}.sha256"  # not resumable


def test_the_contamination_flag_does_not_depend_on_the_directory_a_reader_runs_in(tmp_path, monkeypatch):
    trained = tmp_path / "out"
    trained.mkdir()
    (trained / "harness_train.json").write_text(json.dumps({"contamination": {"contaminated": True, "questions": 1}}))
    monkeypatch.chdir(tmp_path)
    from harness.lineage import contamination_flag

    # The name as typed is a label: not looked up, whatever the directory holds.
    assert contamination_flag(ModelInfo(name="out", path=str(tmp_path / "elsewhere"))) is None
    assert contamination_flag(ModelInfo(name="out", path=str(trained))).startswith("trained on data holding 1")
    # A relative path is what an older harness recorded: taken from here, as it took it, and said so.
    old = contamination_flag(ModelInfo(name="out", path="out"))
    assert old.startswith("trained on data holding 1") and "by a relative path" in old
    monkeypatch.chdir(Path(os.sep))
    assert contamination_flag(ModelInfo(name="out", path=str(trained))).startswith("trained on data holding 1")


def test_the_floors_point_one_way():
    """import-linter's contracts (pyproject.toml): CLI > features > analysis > engine > records > tasks."""
    root = Path(__file__).resolve().parent.parent
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert linter, "import-linter is part of the [dev] extra"
    done = subprocess.run([linter, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]


def test_a_run_an_older_harness_recorded_with_a_relative_adapter_still_resumes(run_dir, tmp_path, monkeypatch):
    run = load_run(run_dir)
    recorded = json.loads((run_dir / "settings.json").read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    recorded["model"]["adapter"] = "lora"  # as the older harness wrote `--adapter lora`
    assert run.settings.resume_difference(recorded, replace(run.model, adapter=str(tmp_path / "lora"))) is None
    assert run.settings.resume_difference(recorded, replace(run.model, adapter=str(tmp_path / "other"))).field == "model.adapter"


@pytest.mark.parametrize("edit", [
    lambda r: r["protocol"].update(continuations=5),
    lambda r: r["protocol"].update(chat=["chatml"]),
    lambda r: r["task"].update(limit="3"),
    lambda r: r["task"]["data"]["computer_network"].update(val=None),
])
def test_a_malformed_field_of_a_sealed_record_is_one_line_not_a_traceback(run_dir, tmp_path, edit, capsys):
    from harness.records import seal_run

    copy = shutil.copytree(run_dir, tmp_path / "copy")
    results = json.loads((copy / "results.json").read_text(encoding="utf-8"))
    edit(results)
    (copy / "results.json").write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(RunError, match="lacks a field the reports need"):
        seal_run(copy)
    for command in (["report", str(copy)], ["leaderboard", str(copy)]):
        assert main(command) == 2
        assert capsys.readouterr().err.count("\n") == 1
