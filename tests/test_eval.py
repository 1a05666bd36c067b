"""`harness eval` end to end on tiny real models: run records, resume, determinism, layouts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from harness.cli import main
from harness.records import load_run

COUNTS = {"computer_science": 204, "computer_security": 171, "machine_learning": 122,
          "college_programming": 37, "computer_architecture": 21, "computer_network": 19}


def _eval(model, out, data_dir, *extra):
    return main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out),
                 "--no-progress", *extra])


def _lines(path):
    return [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def five_shot_run(tiny_model, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "five"
    assert _eval(tiny_model, out, data_dir, "--shots", "5") == 0
    return out


def test_five_shot_run_scores_all_574_questions(five_shot_run):
    lines = _lines(five_shot_run)
    assert len(lines) == 574
    assert Counter(line["subject"] for line in lines) == COUNTS
    assert len({(line["subject"], line["id"]) for line in lines}) == 574
    for line in lines:
        assert set(line) >= {"subject", "id", "gold", "pred", "logits", "correct"}
        assert len(line["logits"]) == 4 and line["pred"] in "ABCD" and line["gold"] in "ABCD"
        assert line["pred"] == "ABCD"[int(np.argmax(line["logits"]))]
        assert line["correct"] == (line["pred"] == line["gold"])


def test_summary_counts_are_the_sample_lines(five_shot_run):
    results = json.loads((five_shot_run / "results.json").read_text())
    lines = _lines(five_shot_run)
    assert results["overall"]["n"] == 574
    assert results["overall"]["correct"] == sum(line["correct"] for line in lines)
    assert results["overall"]["micro"] == pytest.approx(results["overall"]["correct"] / 574)
    for key, n in COUNTS.items():
        s = results["subjects"][key]
        assert s["n"] == n
        assert s["correct"] == sum(line["correct"] for line in lines if line["subject"] == key)
        assert s["ci95"][0] <= s["accuracy"] <= s["ci95"][1]
    macro = np.mean([results["subjects"][k]["accuracy"] for k in COUNTS])
    assert results["overall"]["macro"] == pytest.approx(macro)


def test_record_holds_what_reproduces_the_run(five_shot_run, tiny_model):
    r = json.loads((five_shot_run / "results.json").read_text())
    assert r["harness"]["version"] and "git_commit" in r["harness"]
    assert r["protocol"]["name"] == "devops" and r["protocol"]["version"] == "1" and r["protocol"]["shots"] == 5
    assert r["model"]["path"] == str(tiny_model) and r["model"]["dtype"] == "float32"
    assert r["model"]["adapter"] is None and r["runtime"]["device"] == "cpu"
    files = r["task"]["data"]["computer_science"]
    assert files["test"] == {"file": "cmmlu/test/computer_science.csv",
                             "sha256": "5a0ba2cf68147a330ac37a34cf4c68bd4590d9f5dd7e5ea5eee7b49fbe9ded6b",
                             "content_sha256": "8055e65b01bc85d0c97018c34ef315bb0251011b3555bb7684517669b9a3eaa3"}
    assert r["runtime"]["timings"]["scored_questions"] == 574
    assert r["runtime"]["seed"] == 0 and r["runtime"]["prefix_cache"] is True
    assert r["runtime"]["kernels"] == []  # float32: torch's own linear layers
    assert load_run(five_shot_run).shots == 5


def test_a_bfloat16_run_records_its_cpu_kernels(tiny_model, data_dir, tmp_path, packed_linear):
    assert _eval(tiny_model, tmp_path / "bf16", data_dir, "--shots", "0", "--dtype", "bfloat16", "--limit", "2") == 0
    r = json.loads((tmp_path / "bf16" / "results.json").read_text())
    assert r["model"]["dtype"] == "bfloat16"
    assert r["runtime"]["kernels"] == packed_linear + ["table-activation-mul", "rotary-in-one-pass"]  # a Qwen2 model
    t = r["runtime"]["timings"]
    assert t["startup_seconds"] >= t["load_seconds"] + t["prepare_seconds"]  # since the (test) process started


def test_running_again_over_a_finished_run_verifies_it_and_changes_no_byte(five_shot_run, tiny_model, data_dir, capsys):
    files = ("samples.jsonl", "results.json", "settings.json")
    before = {name: (five_shot_run / name).read_bytes() for name in files}
    capsys.readouterr()
    assert _eval(tiny_model, five_shot_run, data_dir, "--shots", "5", "--batch-size", "3") == 0
    assert {name: (five_shot_run / name).read_bytes() for name in files} == before
    assert sorted(p.name for p in five_shot_run.iterdir()) == sorted(files)  # no lock left behind
    out, err = capsys.readouterr()
    assert "overall (micro)" in out and "finished already" in err


def test_same_model_and_settings_give_the_same_predictions(five_shot_run, tiny_model, data_dir, tmp_path):
    assert _eval(tiny_model, tmp_path / "again", data_dir, "--shots", "5", "--batch-size", "3") == 0
    first = {(x["subject"], x["id"]): x["pred"] for x in _lines(five_shot_run)}
    second = {(x["subject"], x["id"]): x["pred"] for x in _lines(tmp_path / "again")}
    assert first == second


def test_a_killed_run_resumes_where_it_stopped(tiny_model, data_dir, tmp_path, five_shot_run):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "harness", "eval", "--model", str(tiny_model), "--data-dir", str(data_dir),
           "--output", str(out), "--shots", "5", "--batch-size", "1", "--no-prefix-cache", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    samples = out / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if samples.is_file() and samples.read_bytes().count(b"\n") >= 40:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = samples.read_bytes().count(b"\n")
    assert 40 <= done_before < 574 and not (out / "results.json").exists()
    assert _eval(tiny_model, out, data_dir, "--shots", "5", "--batch-size", "1", "--no-prefix-cache") == 0
    r = json.loads((out / "results.json").read_text())
    assert r["runtime"]["timings"]["scored_questions"] == 574 - done_before
    lines = _lines(out)
    assert len(lines) == 574
    assert {(x["subject"], x["id"]): x["pred"] for x in lines} == {
        (x["subject"], x["id"]): x["pred"] for x in _lines(five_shot_run)}


def test_torn_last_line_is_rescored(five_shot_run, tiny_model, data_dir, tmp_path):
    out = tmp_path / "torn"
    shutil.copytree(five_shot_run, out)
    (out / "results.json").unlink()
    raw = (out / "samples.jsonl").read_bytes()
    cut = raw.index(b"\n", len(raw) // 2) + 30  # mid-line
    (out / "samples.jsonl").write_bytes(raw[:cut])
    assert _eval(tiny_model, out, data_dir, "--shots", "5") == 0
    assert len(_lines(out)) == 574


def test_zero_and_five_shot_in_one_command_write_one_sub_run_each(tiny_model, data_dir, tmp_path):
    assert _eval(tiny_model, tmp_path / "both", data_dir, "--shots", "0", "--shots", "5", "--limit", "3") == 0
    for k in (0, 5):
        run = load_run(tmp_path / "both" / f"shots-{k}")
        assert run.shots == k and len(run.samples) == 18
        assert run.results["task"]["limit"] == 3


def test_other_settings_in_the_same_directory_are_refused_and_nothing_is_overwritten(five_shot_run, tiny_model, data_dir, capsys):
    before = (five_shot_run / "results.json").read_bytes()
    assert _eval(tiny_model, five_shot_run, data_dir, "--shots", "0") == 2
    err = capsys.readouterr().err.strip()
    assert "holds a run with other settings (protocol.shots: 5 there, 0 now)" in err
    assert (five_shot_run / "results.json").read_bytes() == before


def test_other_settings_are_refused_before_the_model_loads(five_shot_run, data_dir, tmp_path, capsys):
    # The model does not exist: the refusal must come from the run directory, before any loading.
    assert _eval(tmp_path / "no-model", five_shot_run, data_dir, "--shots", "0") == 2
    assert "holds a run with other settings (protocol.shots: 5 there, 0 now)" in capsys.readouterr().err


def test_a_model_retrained_in_place_does_not_resume_the_old_models_run(tiny_model, data_dir, tmp_path, capsys):
    model = shutil.copytree(tiny_model, tmp_path / "ckpt")
    out = tmp_path / "run"
    assert _eval(model, out, data_dir, "--shots", "0", "--limit", "1") == 0
    weights = model / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # new files at the same path
    before = (out / "results.json").read_bytes()
    assert _eval(model, out, data_dir, "--shots", "0", "--limit", "1") == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings (model.weights:" in err and "the model's files changed since that run" in err
    assert (out / "results.json").read_bytes() == before


def test_several_shots_into_a_single_run_directory_are_refused(tiny_model, data_dir, tmp_path, capsys):
    assert _eval(tiny_model, tmp_path / "one", data_dir, "--shots", "0", "--limit", "1") == 0
    assert _eval(tiny_model, tmp_path / "one", data_dir, "--shots", "0", "--shots", "5", "--limit", "1") == 2
    assert "holds a run of one setting; several --shots need a directory of their own" in capsys.readouterr().err
    assert not (tmp_path / "one" / "shots-0").exists()


def test_a_run_that_fails_before_scoring_leaves_an_empty_output_directory_empty(tiny_model, data_dir, tmp_path, monkeypatch):
    import harness.evaluate

    def broken(loaded):
        raise RuntimeError("scorer failed")

    monkeypatch.setattr(harness.evaluate, "letter_scorer", broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="scorer failed"):
        _eval(tiny_model, tmp_path / "empty", data_dir, "--shots", "0", "--limit", "1")
    assert list((tmp_path / "empty").iterdir()) == []
    with pytest.raises(RuntimeError, match="scorer failed"):
        _eval(tiny_model, tmp_path / "new", data_dir, "--shots", "0", "--limit", "1")
    assert not (tmp_path / "new").exists()


def test_chat_prompts_are_scored_after_the_assistant_header(tiny_model, data_dir, tmp_path):
    assert _eval(tiny_model, tmp_path / "chat", data_dir, "--chat", "--shots", "0", "--limit", "2") == 0
    run = load_run(tmp_path / "chat")
    assert run.results["protocol"]["chat"] == "chatml" and len(run.samples) == 12


def test_tokenizer_chat_template_is_used_when_asked(tiny_model, data_dir, tmp_path, capsys):
    model = tmp_path / "with-template"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
        "{{ '<|im_start|>assistant\\n' }}"
    )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert main(["prompt", "--subject", "computer_network", "--row", "0", "--shots", "0", "--chat-template", "tokenizer",
                 "--model", str(model), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<|im_start|>user\n以下是关于开发运维领域") and out.endswith("答案：<|im_end|>\n<|im_start|>assistant\n")
    assert _eval(model, tmp_path / "tpl", data_dir, "--chat-template", "tokenizer", "--shots", "1", "--limit", "2") == 0
    assert _eval(tiny_model, tmp_path / "tpl2", data_dir, "--chat-template", "tokenizer", "--limit", "2") == 2
    assert "has no chat template" in capsys.readouterr().err


def test_lora_adapter_is_applied_and_recorded(tiny_model, data_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(1)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    assert _eval(tiny_model, tmp_path / "base", data_dir, "--limit", "4") == 0
    assert _eval(tiny_model, tmp_path / "lora", data_dir, "--limit", "4", "--adapter", str(adapter)) == 0
    # an adapter directory given as the model resolves its base from adapter_config.json
    assert _eval(adapter, tmp_path / "lora-dir", data_dir, "--limit", "4") == 0
    base_run, lora_run, dir_run = (load_run(tmp_path / n) for n in ("base", "lora", "lora-dir"))
    assert lora_run.results["model"]["adapter"] == str(adapter)
    assert dir_run.results["model"]["adapter"] == str(adapter)
    def logits(run):
        return np.array([s.logits for s in sorted(run.samples, key=lambda s: s.key)])

    assert not np.allclose(logits(lora_run), logits(base_run))
    np.testing.assert_allclose(logits(dir_run), logits(lora_run), rtol=1e-5)
    # stdout holds the summary only: peft's import of GPT-QModel prints a banner, sent to stderr
    done = subprocess.run(
        [sys.executable, "-m", "harness", "eval", "--model", str(adapter), "--data-dir", str(data_dir), "--limit", "1",
         "--subjects", "computer_network", "--output", str(tmp_path / "fresh"), "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(tmp_path / "fresh") + "  ("), done.stdout[:500]
    # --revision names a Hub commit: for a local model it would be recorded but never used
    assert _eval(tiny_model, tmp_path / "rev", data_dir, "--limit", "1", "--revision", "v1.0") == 2


def test_a_bfloat16_run_on_a_cpu_without_bfloat16_matrix_instructions_says_float32_is_faster(
        tiny_model, data_dir, tmp_path, capsys, cpu_has):
    cpu_has(bf16=False)
    capsys.readouterr()
    assert _eval(tiny_model, tmp_path / "bf16", data_dir, "--shots", "0", "--dtype", "bfloat16", "--limit", "1") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "matrix instructions" in line]
    assert notes == ["harness eval: note: this CPU has no bfloat16 matrix instructions (AVX-512 BF16 or AMX), so the "
                     "bfloat16 model's matrix products run several times slower than float32's; --dtype float32 is "
                     "faster here (a run of its own: its predictions can differ on near-ties)"]
    assert (tmp_path / "bf16" / "results.json").is_file()  # a note, not a refusal


@pytest.mark.parametrize("dtype, bf16, fp16, said", [
    ("bfloat16", True, False, False),  # AVX-512 BF16 or AMX: nothing to say
    ("bfloat16", False, True, True),
    ("float16", False, False, True),
    ("float16", True, True, False),
    ("float32", False, False, False),
])
def test_the_cpu_dtype_note_speaks_only_where_the_cpu_lacks_the_model_s_matrix_instructions(
        cpu_has, dtype, bf16, fp16, said):
    from harness.models import cpu_dtype_note
    from harness.records import ModelInfo

    cpu_has(bf16, fp16)
    note = cpu_dtype_note(ModelInfo(name="m", dtype=dtype, device="cpu"))
    assert (note is not None) == said
    if said:
        assert note.startswith(f"note: this CPU has no {dtype} matrix instructions")
    assert cpu_dtype_note(ModelInfo(name="m", dtype=dtype, device="cuda:0")) is None  # about CPUs only
    assert cpu_dtype_note(ModelInfo(name="m", dtype=dtype, device="cpu", quantization={"method": "quanto"})) is None
