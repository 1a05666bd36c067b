"""`harness quantize`: int4/int8 checkpoints that reload into the model that was measured, and
what each costs on the real questions.

Tiny real Qwen2 models (conftest) for every method; Gemma 3 270M for GPTQ end to end in the slow
set. A method whose library is not installed is skipped with the pip line that installs it.
"""

from __future__ import annotations

import json
import shutil
import sys
import unicodedata
from pathlib import Path

import pytest
from scipy.stats import binomtest
from transformers import AutoModelForCausalLM

from harness.cli import main
from harness.quantize.methods import METHODS, missing_packages

ALL_METHODS = list(METHODS)
INT8_METHODS = [m for m in ALL_METHODS if METHODS[m].bits == (8,)]
SUBJECTS = ["computer_science", "computer_security", "machine_learning",
            "college_programming", "computer_architecture", "computer_network"]


def available(method: str):
    """The method as a parameter, skipped (with the install line as the reason) when its library is missing."""
    return pytest.param(method, marks=pytest.mark.skipif(bool(missing_packages(method)), reason=missing_packages(method) or ""))


def method_args(method: str, data_dir: Path) -> list[str]:
    # The tiny model's layers are 64 and 128 wide: GPTQ's default groups of 128 do not fit in them.
    return ["--group-size", "32", "--data-dir", str(data_dir)] if method == "gptq" else []


def quantize_cli(model: Path, method: str, out: Path, data_dir: Path, *extra: str) -> int:
    return main(["quantize", "--model", str(model), "--method", method, "--output", str(out), *method_args(method, data_dir), *extra])


def one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("harness quantize: error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def checkpoints(tiny_model, data_dir, tmp_path_factory):
    """`make(method)` → the tiny model quantized by `harness quantize` (once per method)."""
    made: dict[str, Path] = {}

    def make(method: str) -> Path:
        if method not in made:
            out = tmp_path_factory.mktemp(f"q-{method}") / "ckpt"
            assert quantize_cli(tiny_model, method, out, data_dir) == 0
            made[method] = out
        return made[method]

    return make


def letter_logits(model, tokenizer, subject_data, limit: int):
    """The four letter logits the harness scores, for the first `limit` questions of each subject, 5-shot."""
    import numpy as np

    from harness.evaluate import EvalSettings, prepare
    from harness.models import LoadedModel
    from harness.prompts import PromptFormat
    from harness.records import ModelInfo
    from harness.scoring import LetterScorer, plan_batches
    from tasks import get_protocol

    loaded = LoadedModel(model, tokenizer, ModelInfo(name="tiny", tokenizer="tiny"), 0.0)
    prepared = prepare(loaded, list(subject_data.values()), EvalSettings(PromptFormat(get_protocol("devops"), 5), limit=limit))
    scorer = LetterScorer(model, pad_id=tokenizer.pad_token_id)
    plan = plan_batches(prepared.encoded, batch_size=4, max_batch_tokens=16384, prefix_cache=True)
    rows = {}
    for batch in plan:
        for i, row in zip(batch.items, scorer.score(batch, prepared.encoded[batch.group])):
            rows[(batch.group, i)] = row
    return np.stack([rows[k] for k in sorted(rows)])


# --- each method: quantize, save, reload, score ------------------------------------------------


@pytest.mark.parametrize("method", [available(m) for m in ALL_METHODS])
def test_reloaded_checkpoint_scores_exactly_like_the_in_memory_quantized_model(method, tiny_model, subject_data, tmp_path):
    import numpy as np

    from harness.models import ModelSpec, load_model
    from harness.quantize.calibration import devops_dev
    from harness.quantize.checkpoint import quantize_model, save_quantized
    from harness.quantize.methods import resolve_request

    request = resolve_request(method, None, 32 if method == "gptq" else None)
    calibration = devops_dev(list(subject_data.values())) if method == "gptq" else None
    spec = ModelSpec(model=str(tiny_model), device="cpu")
    model, tokenizer = quantize_model(spec, request, calibration, tmp_path / "cache")
    save_quantized(method, model, tokenizer, tmp_path / "ckpt")

    in_memory = letter_logits(model.eval(), tokenizer, subject_data, limit=3)
    reloaded = load_model(ModelSpec(model=str(tmp_path / "ckpt"), device="cpu"), tmp_path / "cache")
    again = letter_logits(reloaded.model, reloaded.tokenizer, subject_data, limit=3)
    assert in_memory.shape == (18, 4)
    np.testing.assert_array_equal(again, in_memory)


@pytest.mark.parametrize("method", [available(m) for m in ALL_METHODS])
def test_quantized_checkpoint_is_marked_and_harness_eval_records_its_method_and_bits(method, checkpoints, tiny_model, data_dir, tmp_path):
    ckpt = checkpoints(method)
    marker = json.loads((ckpt / "harness_quantization.json").read_text(encoding="utf-8"))
    assert (marker["method"], marker["bits"]) == (method, METHODS[method].bits[0])
    assert marker["source"] == str(tiny_model)  # the leaderboard puts Int4 runs in this model's row
    assert marker["verified_reload"]["max_abs_logit_difference"] == 0.0
    assert marker["float_layers"] == ["lm_head"] and marker["quantized_layers"] == 14  # 2 layers × 7 projections
    assert marker["libraries"]["transformers"] and all(marker["libraries"].values())
    if method == "gptq":
        assert marker["group_size"] == 32
        assert marker["calibration"]["source"] == "devops-dev" and marker["calibration"]["texts"] == 30
        assert marker["calibration"]["overlaps"] == ["machine_learning dev row 3 holds machine_learning row 120"]
        assert len(marker["calibration"]["sha256"]) == 64
        config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
        assert config["quantization_config"]["dataset"] is None  # the texts stay out of the checkpoint
    else:
        assert marker["calibration"] is None

    run = tmp_path / "run"
    args = ["eval", "--model", str(ckpt), "--data-dir", str(data_dir), "--shots", "0", "--limit", "2", "--output", str(run), "--no-progress"]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert results["model"]["quantization"]["method"] == method
    assert results["model"]["quantization"]["bits"] == METHODS[method].bits[0]
    assert results["overall"]["n"] == 12
    # The size the leaderboard groups by is the original model's, not the packed storage's.
    original = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
    assert results["model"]["parameters"] == original


@pytest.mark.parametrize("method", [available(m) for m in INT8_METHODS])
def test_int8_predictions_agree_with_float32_on_a_real_slice(method, tiny_model, data_dir, tmp_path, capsys):
    root = tmp_path / "eval"
    code = quantize_cli(tiny_model, method, tmp_path / "ckpt", data_dir,
                        "--eval", "--shots", "0", "--data-dir", str(data_dir), "--eval-output", str(root), "--no-progress")
    assert code == 0
    out = capsys.readouterr().out
    comparison = json.loads((root / "comparison.json").read_text(encoding="utf-8"))["comparisons"][0]
    n = comparison["overall"]["n"]
    assert n == 574
    assert comparison["agreement"] >= 0.95, f"{method} agrees with float32 on {comparison['same_prediction']} of {n}"
    assert out == (root / "comparison.md").read_text(encoding="utf-8")
    assert f"| same prediction | | | {comparison['same_prediction']} of {n}" in out


def test_comparison_numbers_come_from_the_two_runs(checkpoints, tiny_model, data_dir, tmp_path, capsys):
    method = next((m for m in ("quanto-int4", "bnb-nf4", "gptq") if not missing_packages(m)), None)
    if method is None:
        pytest.skip(missing_packages("quanto-int4"))
    root = tmp_path / "eval"
    code = quantize_cli(tiny_model, method, tmp_path / "ckpt", data_dir,
                        "--eval", "--shots", "0", "--limit", "10", "--data-dir", str(data_dir), "--eval-output", str(root), "--no-progress")
    assert code == 0
    capsys.readouterr()
    from harness.records import load_run

    original, quantized = load_run(root / "original" / "shots-0"), load_run(root / "quantized" / "shots-0")
    theirs = {s.key: s for s in quantized.samples}
    rw = sum(s.correct and not theirs[s.key].correct for s in original.samples)
    wr = sum(theirs[s.key].correct and not s.correct for s in original.samples)
    same = sum(s.pred == theirs[s.key].pred for s in original.samples)
    c = json.loads((root / "comparison.json").read_text(encoding="utf-8"))["comparisons"][0]
    assert (c["overall"]["right_to_wrong"], c["overall"]["wrong_to_right"], c["same_prediction"]) == (rw, wr, same)
    expected_p = 1.0 if rw + wr == 0 else binomtest(min(rw, wr), rw + wr, 0.5).pvalue
    assert c["overall"]["p_value"] == pytest.approx(expected_p)
    assert c["quantized"]["load_seconds"] == quantized.results["runtime"]["timings"]["load_seconds"]
    assert c["quantized"]["weights_bytes"] == (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    assert c["original"]["weights_bytes"] == (tiny_model / "model.safetensors").stat().st_size


def test_a_4bit_run_fills_the_int4_column_of_its_original_on_the_leaderboard(tiny_model, data_dir, tmp_path, capsys):
    method = next((m for m in ("quanto-int4", "bnb-nf4", "gptq") if not missing_packages(m)), None)
    if method is None:
        pytest.skip(missing_packages("quanto-int4"))
    root = tmp_path / "eval"
    assert quantize_cli(tiny_model, method, tmp_path / "ckpt", data_dir,
                        "--eval", "--shots", "0", "--limit", "4", "--data-dir", str(data_dir), "--eval-output", str(root), "--no-progress") == 0
    capsys.readouterr()
    board = tmp_path / "board.json"
    assert main(["leaderboard", str(root), "--format", "json", "--output", str(board)]) == 0
    text = board.read_text(encoding="utf-8")
    quantized = json.loads((root / "quantized" / "shots-0" / "results.json").read_text(encoding="utf-8"))
    rows = [row for section in json.loads(text)["sections"] for table in section["tables"] for row in table["rows"]
            if row["source"] == "measured"]
    assert len(rows) == 1, "the 4-bit run shares its original's row"
    assert rows[0]["model"] == str(tiny_model)
    assert rows[0]["int4_zero_shot"] is not None
    assert rows[0]["int4_zero_shot"]["accuracy"] == pytest.approx(100 * quantized["overall"]["micro"], abs=0.01)


# --- calibration -------------------------------------------------------------------------------


def test_devops_dev_calibration_is_the_30_answered_dev_rows_with_the_benchmarks_own_overlap_named(subject_data):
    from harness.quantize.calibration import Calibration, check_disjoint, devops_dev
    from harness.quantize.methods import QuantizeError

    data = list(subject_data.values())
    calibration = devops_dev(data)
    assert len(calibration.texts) == 30
    assert all(t.endswith(q.answer) for t, q in zip(calibration.texts, [q for d in data for q in d.shots]))
    # machine_learning's dev row 3 is test row 120 reworded (stem 95%, options reordered): the
    # contamination matcher finds it, the 5-shot prompt shows it anyway, and the marker says so.
    assert calibration.overlaps == ("machine_learning dev row 3 holds machine_learning row 120",)
    assert calibration.record()["overlaps"] == list(calibration.overlaps)
    questions = [q for d in data for q in d.questions]
    rows = [q for d in data for q in d.shots]
    held = calibration.texts[next(i for i, q in enumerate(rows) if (q.subject, q.id) == ("machine_learning", 3))]
    with pytest.raises(QuantizeError, match="text 2 contains evaluated question machine_learning row 120"):
        check_disjoint(Calibration("corpus.txt", ("无关的文本。", held)), questions)  # the same text from a user corpus
    check_disjoint(Calibration("corpus.txt", tuple(t for t in calibration.texts if t != held)), questions)


def test_calibration_holding_an_evaluated_question_is_refused(subject_data):
    from harness.quantize.calibration import Calibration, check_disjoint
    from harness.quantize.methods import QuantizeError

    questions = [q for d in subject_data.values() for q in d.questions]
    q = next(q for q in questions if len(q.question) >= 16 and any("\u2f00" <= ch <= "\u2fdf" for ch in q.question))
    # The stem as a user corpus would have it: Kangxi look-alikes folded to ordinary characters.
    leaked = Calibration("corpus.txt", ("无关的文本。", "前文 " + unicodedata.normalize("NFKC", q.question) + " 后文"))
    with pytest.raises(QuantizeError, match=rf"text 2 contains evaluated question {q.subject} row {q.id}"):
        check_disjoint(leaked, questions)


def test_a_short_generic_stem_counts_only_with_its_options(subject_data):
    from harness.quantize.calibration import Calibration, check_disjoint
    from harness.quantize.methods import QuantizeError

    questions = [q for d in subject_data.values() for q in d.questions]
    stems = [q.question for q in questions]
    q = next(q for q in questions if len(q.question.strip()) < 10 and stems.count(q.question) == 1)
    check_disjoint(Calibration("corpus.txt", (f"前文{q.question}后文",)), questions)
    with pytest.raises(QuantizeError, match=f"row {q.id}"):
        check_disjoint(Calibration("corpus.txt", ("\n".join([q.question, *q.options]),)), questions)


def test_calibration_file_formats(tmp_path):
    from harness.quantize.calibration import from_file
    from harness.quantize.methods import QuantizeError

    (tmp_path / "c.txt").write_text("第一段\n继续\n\n  \n第二段\n", encoding="utf-8")
    assert from_file(tmp_path / "c.txt").texts == ("第一段\n继续", "第二段")
    (tmp_path / "c.jsonl").write_text('{"text": "一"}\n\n{"text": "二"}\n', encoding="utf-8")
    assert from_file(tmp_path / "c.jsonl").texts == ("一", "二")
    (tmp_path / "bad.jsonl").write_text('{"text": "一"}\n{"body": "二"}\n', encoding="utf-8")
    with pytest.raises(QuantizeError, match=r"bad.jsonl line 2: not a JSON object with a \"text\" field"):
        from_file(tmp_path / "bad.jsonl")


@pytest.mark.skipif(bool(missing_packages("gptq")), reason=missing_packages("gptq") or "")
def test_gptq_refuses_a_calibration_file_with_an_evaluated_question_and_writes_nothing(tiny_model, subject_data, data_dir, tmp_path, capsys):
    q = subject_data["machine_learning"].questions[7]
    corpus = tmp_path / "corpus.jsonl"  # in the test's temporary directory, never the repository
    corpus.write_text(json.dumps({"text": "运维手册。"}) + "\n" + json.dumps({"text": q.question + "\n" + "\n".join(q.options)}) + "\n",
                      encoding="utf-8")
    out = tmp_path / "out" / "ckpt"
    code = quantize_cli(tiny_model, "gptq", out, data_dir, "--calibration", str(corpus))
    one_line_error(capsys, code, "text 2 contains evaluated question machine_learning row 7")
    assert not out.exists()


# --- bad input: one line, exit 2, nothing written ----------------------------------------------


@pytest.mark.skipif(bool(missing_packages("gptq")), reason=missing_packages("gptq") or "")
def test_gptq_group_size_that_does_not_divide_a_layer_is_refused_before_quantizing(tiny_model, tmp_path, capsys, monkeypatch):
    import harness.quantize.calibration

    def no_data(*args):
        raise AssertionError("the questions were loaded before the model was checked")

    monkeypatch.setattr(harness.quantize.calibration, "load_benchmark", no_data)
    out = tmp_path / "ckpt"
    code = main(["quantize", "--model", str(tiny_model), "--method", "gptq", "--output", str(out)])  # default groups of 128
    one_line_error(capsys, code, "--group-size 128: does not divide the input width 64 of model.layers.0.self_attn.q_proj",
                   "give --group-size 64 or -1")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(bool(missing_packages("gptq")), reason=missing_packages("gptq") or "")
def test_a_missing_calibration_file_is_refused_before_the_questions_load(tiny_model, tmp_path, capsys, monkeypatch):
    import harness.quantize.calibration

    def no_data(*args):
        raise AssertionError("the questions were loaded before the calibration file was checked")

    monkeypatch.setattr(harness.quantize.calibration, "load_benchmark", no_data)
    code = main(["quantize", "--model", str(tiny_model), "--method", "gptq", "--group-size", "32",
                 "--output", str(tmp_path / "ckpt"), "--calibration", str(tmp_path / "nope")])
    one_line_error(capsys, code, f"--calibration {tmp_path / 'nope'}: no such file")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("method", [available("quanto-int8")])
def test_a_quantized_model_that_fails_to_run_is_one_line_and_leaves_nothing(method, tiny_model, data_dir, tmp_path, capsys, monkeypatch):
    import harness.quantize.checkpoint

    def broken_kernel(model, ids):
        raise RuntimeError("_weight_int4pack_mm_cpu: expect K to be divisible by qGroupSize\nmore detail")

    monkeypatch.setattr(harness.quantize.checkpoint, "probe_logits", broken_kernel)
    code = quantize_cli(tiny_model, method, tmp_path / "out" / "ckpt", data_dir)
    one_line_error(capsys, code, "the quantized model fails to run (_weight_int4pack_mm_cpu: expect K to be divisible")
    assert list((tmp_path / "out").iterdir()) == []


def test_unknown_method(tiny_model, data_dir, tmp_path, capsys):
    code = quantize_cli(tiny_model, "awq", tmp_path / "ckpt", data_dir)
    one_line_error(capsys, code, "--method awq: unknown method", "gptq, bnb-int8, bnb-nf4, quanto-int8, quanto-int4")


@pytest.mark.parametrize("method, bits, needle", [
    ("bnb-int8", "4", "--bits 4: bnb-int8 makes 8-bit weights only"),
    ("quanto-int4", "8", "--bits 8: quanto-int4 makes 4-bit weights only"),
    ("gptq", "3", "--bits 3: gptq makes 4 or 8-bit weights only"),
])
def test_bits_the_method_does_not_make(method, bits, needle, tiny_model, data_dir, tmp_path, capsys):
    code = quantize_cli(tiny_model, method, tmp_path / "ckpt", data_dir, "--bits", bits)
    one_line_error(capsys, code, needle)
    assert not (tmp_path / "ckpt").exists()


def test_group_size_and_calibration_are_gptq_only(tiny_model, data_dir, tmp_path, capsys):
    code = quantize_cli(tiny_model, "bnb-nf4", tmp_path / "ckpt", data_dir, "--group-size", "64")
    one_line_error(capsys, code, "--group-size: bnb-nf4 sets its grouping itself")
    code = quantize_cli(tiny_model, "quanto-int8", tmp_path / "ckpt", data_dir, "--calibration", "devops-dev")
    one_line_error(capsys, code, "--calibration: quanto-int8 rounds the weights as they are")


@pytest.mark.parametrize("method, module", [("bnb-int8", "bitsandbytes"), ("quanto-int4", "optimum.quanto"), ("gptq", "gptqmodel")])
def test_missing_package_names_the_extra_to_install(method, module, tiny_model, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import of it fails, as when it is not installed
    code = quantize_cli(tiny_model, method, tmp_path / "ckpt", data_dir)
    extra = METHODS[method].extra
    one_line_error(capsys, code, f"--method {method} needs {module}", f"pip install -c constraints.txt -e '.[{extra}]'")
    assert not (tmp_path / "ckpt").exists()


def test_output_directory_that_is_not_empty(tiny_model, data_dir, tmp_path, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code = quantize_cli(tiny_model, "bnb-int8", out, data_dir)
    one_line_error(capsys, code, f"--output {out} exists and is not empty")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(bool(missing_packages("quanto-int8")), reason=missing_packages("quanto-int8") or "")
def test_output_holding_another_quantization_is_refused_and_the_same_one_reused(checkpoints, tiny_model, data_dir, capsys):
    ckpt = checkpoints("quanto-int8")
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    capsys.readouterr()
    assert quantize_cli(tiny_model, "quanto-int8", ckpt, data_dir) == 0
    assert "already holds this quantization" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == before
    code = quantize_cli(tiny_model, "quanto-int4", ckpt, data_dir)
    one_line_error(capsys, code, f"--output {ckpt} holds another quantization (method: 'quanto-int8' there, 'quanto-int4' now)")


@pytest.mark.skipif(bool(missing_packages("quanto-int8")), reason=missing_packages("quanto-int8") or "")
def test_reuse_knows_the_source_directory_by_its_path_not_the_working_directory(checkpoints, tiny_model, data_dir, capsys, monkeypatch):
    ckpt = checkpoints("quanto-int8")  # made from the absolute path of tiny_model
    marker = json.loads((ckpt / "harness_quantization.json").read_text(encoding="utf-8"))
    assert marker["source_path"] == str(tiny_model.resolve())
    monkeypatch.chdir(tiny_model.parent)
    capsys.readouterr()
    assert quantize_cli(Path(tiny_model.name), "quanto-int8", ckpt, data_dir) == 0
    assert "already holds this quantization" in capsys.readouterr().out
    monkeypatch.chdir(tiny_model)
    assert quantize_cli(Path("."), "quanto-int8", ckpt, data_dir) == 0
    assert "already holds this quantization" in capsys.readouterr().out


@pytest.mark.skipif(bool(missing_packages("quanto-int8")), reason=missing_packages("quanto-int8") or "")
def test_an_already_quantized_model_is_not_quantized_again(checkpoints, data_dir, tmp_path, capsys):
    code = quantize_cli(checkpoints("quanto-int8"), "quanto-int4", tmp_path / "again", data_dir)
    one_line_error(capsys, code, "is already quantized; quantize its floating-point original")


@pytest.mark.parametrize("method", [available(m) for m in ("bnb-nf4", "quanto-int8")])
def test_a_model_that_fails_to_quantize_leaves_nothing_behind(method, tiny_model, data_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    code = quantize_cli(broken, method, tmp_path / "out" / "ckpt", data_dir)
    one_line_error(capsys, code, str(broken))
    assert list((tmp_path / "out").iterdir()) == []  # neither the checkpoint nor its temporary directory


def test_evaluation_flags_need_eval(tiny_model, data_dir, tmp_path, capsys):
    code = quantize_cli(tiny_model, "bnb-int8", tmp_path / "ckpt", data_dir, "--shots", "0")
    one_line_error(capsys, code, "--shots applies to the evaluation: add --eval")


# --- Gemma 3 270M ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_packages("gptq")), reason=missing_packages("gptq") or "")
def test_gemma_gptq_int4_end_to_end(gemma_dir, data_dir, tmp_path, capsys):
    """GPTQ 4-bit Gemma 3 270M, quantized on the CPU and scored 5-shot beside its original on two subjects."""
    root = tmp_path / "eval"
    code = main(["quantize", "--model", "gemma-3-270m", "--method", "gptq", "--output", str(tmp_path / "gemma-gptq"),
                 "--data-dir", str(data_dir), "--eval", "--shots", "5", "--subjects", "computer_network,computer_architecture",
                 "--eval-output", str(root), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    c = json.loads((root / "comparison.json").read_text(encoding="utf-8"))["comparisons"][0]
    assert c["overall"]["n"] == 40
    assert c["quantized"]["weights_bytes"] < 0.75 * c["original"]["weights_bytes"]
    marker = json.loads((tmp_path / "gemma-gptq" / "harness_quantization.json").read_text(encoding="utf-8"))
    assert (marker["method"], marker["bits"], marker["group_size"], marker["source"]) == ("gptq", 4, 128, "gemma-3-270m")
    assert marker["quantized_layers"] == 18 * 7
    with capsys.disabled():
        print(f"\nGemma 3 270M gptq 4-bit vs float32, 5-shot, {c['overall']['n']} questions: same prediction on "
              f"{c['same_prediction']} ({100 * c['agreement']:.1f}%); accuracy {c['overall']['baseline_score']:.2f} → "
              f"{c['overall']['candidate_score']:.2f} (McNemar p = {c['overall']['p_value']:.3g}); weights "
              f"{c['original']['weights_bytes'] / 1e6:.0f} MB → {c['quantized']['weights_bytes'] / 1e6:.0f} MB")
    assert c["agreement"] >= 0.6
    assert "same prediction" in out
