"""User mistakes end in one line naming the thing, exit code 2, no traceback, nothing left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from harness.cli import main


def _one_line_error(capsys, code, *needles):
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def data_copy(tmp_path, data_dir):
    dst = tmp_path / "data"
    shutil.copytree(data_dir, dst)
    return dst


def _eval(model, data, out, *extra):
    return main(["eval", "--model", str(model), "--data-dir", str(data), "--output", str(out), "--no-progress", *extra])


def test_missing_data_dir(tiny_model, tmp_path, capsys):
    code = _eval(tiny_model, tmp_path / "no-data", tmp_path / "out")
    _one_line_error(capsys, code, "data directory not found", "no-data")
    assert not (tmp_path / "out").exists()


def test_missing_file(tiny_model, data_copy, tmp_path, capsys):
    (data_copy / "cmmlu/dev/computer_security.csv").unlink()
    code = _eval(tiny_model, data_copy, tmp_path / "out")
    _one_line_error(capsys, code, "missing data file", "cmmlu/dev/computer_security.csv")


def test_malformed_csv(tiny_model, data_copy, tmp_path, capsys):
    path = data_copy / "ceval/val/computer_network_val.csv"
    path.write_bytes(path.read_bytes() + b'99,"unterminated,A,B,C,D,A\r\n')
    code = _eval(tiny_model, data_copy, tmp_path / "out")
    _one_line_error(capsys, code, "computer_network_val.csv")


def test_wrong_header(tiny_model, data_copy, tmp_path, capsys):
    path = data_copy / "ceval/dev/computer_network_dev.csv"
    path.write_bytes(path.read_bytes().replace(b"id,question,", b"id,stem,", 1))
    code = _eval(tiny_model, data_copy, tmp_path / "out")
    _one_line_error(capsys, code, "computer_network_dev.csv: unexpected header")


def test_answer_not_a_letter(tiny_model, data_copy, tmp_path, capsys):
    path = data_copy / "cmmlu/test/machine_learning.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[10] = lines[10][: lines[10].rstrip("\n").rfind(",")] + ",b\n"
    path.write_text("".join(lines), encoding="utf-8")
    code = _eval(tiny_model, data_copy, tmp_path / "out")
    _one_line_error(capsys, code, "machine_learning.csv record 9", "answer 'b' is not one of A, B, C, D")


def test_unknown_subject(tiny_model, data_dir, tmp_path, capsys):
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--subjects", "computer_science,devops_culture")
    _one_line_error(capsys, code, "unknown subject or group 'devops_culture'")


def test_unknown_protocol(tiny_model, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _eval(tiny_model, data_dir, tmp_path / "out", "--protocol", "mmlu")
    _one_line_error(capsys, e.value.code, "--protocol", "'mmlu'")


def test_lm_eval_protocol_with_chat(tiny_model, data_dir, tmp_path, capsys):
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--protocol", "lm-eval", "--chat", "--limit", "1")
    _one_line_error(capsys, code, "the lm-eval protocol has no chat form")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shots", ["6", "-1"])
def test_shots_outside_0_to_5(tiny_model, data_dir, tmp_path, capsys, shots):
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--shots", shots)
    _one_line_error(capsys, code, f"--shots {shots} is outside 0..5")


def test_model_directory_that_is_not_a_model(data_dir, tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "README.md").write_text("hello")
    code = _eval(tmp_path / "not-a-model", data_dir, tmp_path / "out")
    _one_line_error(capsys, code, "not-a-model is not a model directory (no config.json)")


def test_model_path_that_does_not_exist(data_dir, tmp_path, capsys):
    code = _eval(tmp_path / "nowhere" / "ckpt", data_dir, tmp_path / "out")
    _one_line_error(capsys, code, "no such model directory or file", "nowhere/ckpt")


def test_model_with_broken_weights(tiny_model, data_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    code = _eval(broken, data_dir, tmp_path / "out")
    _one_line_error(capsys, code, "cannot load model", "broken")
    assert not (tmp_path / "out").exists()


def test_hub_model_while_offline(data_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code = _eval("no-such-org/no-such-model", data_dir, tmp_path / "out")
    _one_line_error(capsys, code, "no-such-org/no-such-model")


def test_tokenizer_that_splits_a_letter(tiny_model, data_dir, tmp_path, capsys):
    # A byte-level BPE with no merges: " A" is two tokens, so lm-eval's " A" continuation is not one.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0, **{ch: i + 1 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model_dir = tmp_path / "bytes-model"
    shutil.copytree(tiny_model, model_dir)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model_dir / f).unlink(missing_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(model_dir)
    code = _eval(model_dir, data_dir, tmp_path / "out", "--protocol", "lm-eval", "--limit", "1")
    _one_line_error(capsys, code, "does not encode the answer ' A'", "exactly one token")
    assert not (tmp_path / "out").exists()


def test_output_directory_that_holds_something_else(tiny_model, data_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1")
    _one_line_error(capsys, code, "is not a run directory of this harness")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("where", ["a-file", "a-file/run"])
def test_output_that_cannot_be_a_directory_is_refused_before_the_model_loads(data_dir, tmp_path, capsys, where):
    (tmp_path / "a-file").write_text("mine")
    # The model does not exist either: the output is checked first, before anything costly.
    code = _eval(tmp_path / "no-model", data_dir, tmp_path / where, "--limit", "1")
    _one_line_error(capsys, code, str(tmp_path / where), "is not a directory")
    assert (tmp_path / "a-file").read_text() == "mine"


def test_corrupt_settings_file(tiny_model, data_dir, tmp_path, capsys):
    assert _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1") == 0
    capsys.readouterr()
    (tmp_path / "out" / "settings.json").write_text("{not json")
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1")
    _one_line_error(capsys, code, "settings.json is corrupt")


def test_corrupt_samples_line(tiny_model, data_dir, tmp_path, capsys):
    assert _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1") == 0
    capsys.readouterr()
    (tmp_path / "out" / "samples.jsonl").write_text('{"subject": 1}\n')
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1")
    _one_line_error(capsys, code, "samples.jsonl line 1: not a sample record")


def test_bad_flag_values(tiny_model, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _eval(tiny_model, data_dir, tmp_path / "out", "--dtype", "int3")
    _one_line_error(capsys, e.value.code, "--dtype")
    _one_line_error(capsys, _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "0"), "--limit")
    with pytest.raises(SystemExit) as e:
        _eval(tiny_model, data_dir, tmp_path / "out", "--shots", "five")
    _one_line_error(capsys, e.value.code, "--shots", "'five'")


def test_the_installed_command_prints_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "eval", "--model", "x", "--data-dir", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"harness eval: error: data directory not found: {tmp_path / 'missing'}"]


def test_a_run_record_that_is_not_one(tmp_path):
    from harness.errors import RunError
    from harness.records import load_run

    with pytest.raises(RunError, match="not a finished run"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(RunError, match="results.json is corrupt"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(RunError, match="not a run record of this harness"):
        load_run(tmp_path)


def test_lm_eval_export_into_a_file_or_an_unwritable_place(data_dir, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    code = main(["tasks", "export-lm-eval", str(a_file), "--data-dir", str(data_dir)])
    _one_line_error(capsys, code, str(a_file), "not a directory")
    assert a_file.read_text() == "keep me"
    blocked = a_file / "tasks"  # its parent is a file: the directory cannot be made
    code = main(["tasks", "export-lm-eval", str(blocked), "--data-dir", str(data_dir)])
    _one_line_error(capsys, code, "cannot write", str(blocked))


@pytest.mark.parametrize(("module", "argv", "hint"), [
    ("harness.commands.evaluate", ["eval", "--model", "m"], True),
    ("harness.commands.leaderboard", ["leaderboard", "runs"], False),
])
def test_ctrl_c_is_one_line_and_offers_resuming_only_where_a_rerun_resumes(monkeypatch, capsys, module, argv, hint):
    import importlib

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), "run", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err == f"harness {argv[0]}: interrupted" + ("; run the same command again to resume" if hint else "") + "\n"


# --- issue 16: hostile or careless input ends in one line too -------------------------------

@pytest.mark.parametrize("device", ["banana", "meta", "mps", "cuda:x", "cpu:0", ""])
@pytest.mark.parametrize("command", ["eval", "chat"])
def test_a_device_the_harness_cannot_run_on_is_refused_before_anything_loads(tiny_model, data_dir, tmp_path, capsys, command, device):
    if command == "eval":
        code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--device", device)
    else:
        code = main(["chat", "--model", str(tiny_model), "--prompt", "hi", "--device", device])
    _one_line_error(capsys, code, f"--device {device}: not a device the harness runs on", "use auto")
    assert not (tmp_path / "out").exists()


def test_a_cuda_device_on_a_machine_without_cuda(tiny_model, data_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--device", "cuda:0")
    _one_line_error(capsys, code, "--device cuda:0: CUDA is not available on this machine")


@pytest.mark.parametrize("content", ["[]", "null", '"text"'])
@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "harness_quantization.json", "quanto_qmap.json"])
@pytest.mark.parametrize("tokenizer", [False, True])
def test_a_model_json_file_that_is_not_an_object(tiny_model, data_dir, tmp_path, capsys, name, content, tokenizer):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / name).write_text(content)
    extra = ["--tokenizer", str(tiny_model)] if tokenizer else []
    code = _eval(broken, data_dir, tmp_path / "out", "--limit", "1", *extra)
    _one_line_error(capsys, code, f"{broken / name} must hold a JSON object, not ")
    assert not (tmp_path / "out").exists()


def test_an_adapter_config_that_is_not_an_object(tiny_model, data_dir, tmp_path, capsys):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("[]")
    _one_line_error(capsys, _eval(adapter, data_dir, tmp_path / "out", "--limit", "1"), f"{adapter / 'adapter_config.json'} must hold a JSON object")
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--adapter", str(adapter))
    _one_line_error(capsys, code, f"{adapter / 'adapter_config.json'} must hold a JSON object, not an array")


def test_a_tokenizer_directory_whose_json_is_not_an_object(tiny_model, data_dir, tmp_path, capsys):
    tok = tmp_path / "tok"
    shutil.copytree(tiny_model, tok)
    (tok / "tokenizer_config.json").write_text("null")
    code = main(["chat", "--model", str(tiny_model), "--tokenizer", str(tok), "--prompt", "hi"])
    _one_line_error(capsys, code, f"{tok / 'tokenizer_config.json'} must hold a JSON object, not null")


def test_quantize_reads_json_objects_only(tiny_model, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text("[]")
    code = main(["quantize", "--model", str(broken), "--method", "bnb-int8", "--output", str(tmp_path / "q")])
    _one_line_error(capsys, code, f"{broken / 'config.json'} must hold a JSON object")
    assert not (tmp_path / "q").exists()
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "harness_quantization.json").write_text("[]")
    code = main(["quantize", "--model", str(tiny_model), "--method", "bnb-int8", "--output", str(tmp_path / "q")])
    _one_line_error(capsys, code, "harness_quantization.json must hold a JSON object")


def test_a_tokenizer_directory_that_does_not_exist(tiny_model, data_dir, tmp_path, capsys):
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--tokenizer", str(tmp_path / "no/such/dir"))
    line = _one_line_error(capsys, code, f"--tokenizer {tmp_path / 'no/such/dir'}: no such directory")
    assert "Repo id" not in line


def test_a_gguf_file_missing_from_a_local_folder(tiny_model, data_dir, tmp_path, capsys):
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--gguf-file", "nope.gguf")
    line = _one_line_error(capsys, code, f"--gguf-file nope.gguf: no such file in {tiny_model}")
    assert "huggingface.co" not in line


@pytest.mark.parametrize("subjects", ["", ",", " , "])
def test_subjects_that_name_no_subject_are_refused_not_read_as_all_six(tiny_model, data_dir, tmp_path, capsys, subjects):
    with pytest.raises(SystemExit) as e:
        _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--subjects", subjects)
    _one_line_error(capsys, e.value.code, "--subjects", "names nothing")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "flag"), [
    (["eval", "--model", "m", "--output", ""], "--output"),
    (["eval", "--model", "m", "--gate-baseline", ""], "--gate-baseline"),
    (["eval", "--model", "m", "--tokenizer", ""], "--tokenizer"),
    (["eval", "--model", "m", "--data-dir", ""], "--data-dir"),
    (["eval", "--model", "", "--output", "x"], "--model"),
    (["report", "run", "--output", ""], "--output"),
    (["report", ""], "RUN_DIR"),
    (["compare", "a", ""], "RUN_B"),
    (["leaderboard", "runs", "--output", ""], "--output"),
    (["leaderboard", "runs", "--readme", " "], "--readme"),
    (["leaderboard", ""], "RUN_DIR"),
    (["leaderboard", "runs", "--highlight", ""], "--highlight"),
    (["gate", "--baseline", "", "--candidate", "b"], "--baseline"),
    (["tasks", "export-lm-eval", ""], "dir"),
    (["contamination", "--files", ""], "--files"),
    (["quantize", "--model", "m", "--method", "bnb-int8", "--output", ""], "--output"),
])
def test_an_empty_path_or_name_is_refused_not_read_as_the_default_or_here(tmp_path, capsys, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    _one_line_error(capsys, e.value.code, f"argument {flag}: must not be empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("size", "needle"), [
    ("0", "--tensor-parallel-size must be at least 1"),
    ("-2", "--tensor-parallel-size must be at least 1"),
    ("2", "--tensor-parallel-size 2 is for --backend vllm"),
])
def test_tensor_parallel_size_is_for_vllm_only(tiny_model, data_dir, tmp_path, capsys, size, needle):
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--tensor-parallel-size", size)
    _one_line_error(capsys, code, needle)
    assert not (tmp_path / "out").exists()


def test_an_empty_option_cell(tiny_model, data_copy, tmp_path, capsys):
    path = data_copy / "cmmlu/test/machine_learning.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    cells = lines[10].split(",")
    cells[-3] = ""  # the C cell of record 9 (no commas inside this row's cells)
    lines[10] = ",".join(cells)
    path.write_text("".join(lines), encoding="utf-8")
    code = _eval(tiny_model, data_copy, tmp_path / "out")
    _one_line_error(capsys, code, "machine_learning.csv record 9", "empty option in column C")


def test_a_path_with_a_newline_is_named_on_one_line(tiny_model, data_dir, tmp_path, capsys):
    out = tmp_path / "run\nname\x1b[2J"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = _one_line_error(capsys, _eval(tiny_model, data_dir, out, "--limit", "1"), "is not a run directory of this harness")
    assert "run\\nname\\x1b[2J" in line and "\x1b" not in line
    line = _one_line_error(capsys, main(["report", str(tmp_path / "no\nrun")]), "no\\nrun")
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "m", "stray\u2028argument"])
    _one_line_error(capsys, e.value.code, "stray\\u2028argument")


def test_one_line_escapes_what_would_break_the_line():
    from harness.errors import one_line

    assert one_line("a\nb\r\tc\x00\u2028d") == "a\\nb\\r\\tc\\x00\\u2028d"
    assert one_line("计算机 网络: 'x'") == "计算机 网络: 'x'"


def test_a_settings_file_that_is_not_an_object(tiny_model, data_dir, tmp_path, capsys):
    assert _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--shots", "0") == 0
    capsys.readouterr()
    (tmp_path / "out" / "settings.json").write_text("[]")
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--shots", "0")
    line = _one_line_error(capsys, code, "settings.json is corrupt (it holds an array, not a JSON object); choose another --output")
    assert len(line) < 200


def test_a_run_of_other_subjects_is_refused_in_a_short_line(tiny_model, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _eval(tiny_model, data_dir, out, "--limit", "1", "--shots", "0", "--subjects", "computer_science") == 0
    capsys.readouterr()
    code = _eval(tiny_model, data_dir, out, "--limit", "1", "--shots", "0")
    line = _one_line_error(capsys, code, f"{out} holds a run with other settings (task.subjects: ", "differ", "choose another --output")
    assert len(line) - len(str(out)) < 220 and "sha256" not in line


@pytest.mark.parametrize(("module", "argv", "hint"), [
    ("harness.commands.evaluate", ["eval", "--model", "m"], True),
    ("harness.commands.leaderboard", ["leaderboard", "runs"], False),
])
def test_sigterm_ends_as_ctrl_c_does_with_exit_code_143(monkeypatch, capsys, module, argv, hint):
    import importlib
    import os
    import signal
    import time

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return 0

    monkeypatch.setattr(importlib.import_module(module), "run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 143
    err = capsys.readouterr().err
    assert err == f"harness {argv[0]}: interrupted" + ("; run the same command again to resume" if hint else "") + "\n"
    assert signal.getsignal(signal.SIGTERM) is before  # main() leaves the process's handler as it was


def test_sigterm_during_a_chat_answer_ends_the_session(tiny_model, monkeypatch, capsys):
    import io
    import os
    import signal

    class Killed(io.StringIO):
        """stdout that is sent SIGTERM once, when the first answer's first token is written."""

        def write(self, text):
            if not self.tell():
                super().write(text)
                os.kill(os.getpid(), signal.SIGTERM)
                return len(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nagain\n"))
    monkeypatch.setattr(sys, "stdout", Killed())
    assert main(["chat", "--model", str(tiny_model), "--max-new-tokens", "4"]) == 143
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "harness chat: interrupted" and "answer stopped" not in err


def test_lm_eval_export_onto_a_full_disk_leaves_no_folder_behind(data_dir, tmp_path, capsys, monkeypatch):
    import errno
    import os

    real_fsync, synced = os.fsync, []

    def full_after_two_files(fd):
        if len(synced) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_after_two_files)
    target = tmp_path / "a" / "b" / "tasks"
    code = main(["tasks", "export-lm-eval", str(target), "--data-dir", str(data_dir)])
    _one_line_error(capsys, code, "cannot write", "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_lm_eval_export_where_files_cannot_be_created_leaves_no_folder_behind(data_dir, tmp_path, capsys, monkeypatch):
    import errno
    import os
    import tempfile

    def read_only(*args, **kwargs):  # what a read-only mount (or, for a non-root user, a 0555 folder) answers
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code = main(["tasks", "export-lm-eval", str(tmp_path / "a" / "tasks"), "--data-dir", str(data_dir)])
    _one_line_error(capsys, code, "cannot write", "Read-only file system")
    assert list(tmp_path.iterdir()) == []


def test_lm_eval_export_into_an_existing_folder_that_fills_keeps_the_folder(data_dir, tmp_path, capsys, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "tasks").mkdir()
    monkeypatch.setattr(os, "fsync", full)
    code = main(["tasks", "export-lm-eval", str(tmp_path / "tasks"), "--data-dir", str(data_dir)])
    _one_line_error(capsys, code, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["tasks"] and not any((tmp_path / "tasks").iterdir())


@pytest.mark.parametrize("device_map", ["banana", "meta", "mps", ""])
def test_a_device_map_accelerate_cannot_place_by_is_refused_before_anything_loads(tiny_model, data_dir, tmp_path, capsys, device_map):
    code = _eval(tiny_model, data_dir, tmp_path / "out", "--limit", "1", "--device-map", device_map)
    _one_line_error(capsys, code, f"--device-map {device_map}: use auto, balanced, balanced_low_0, sequential, or a device")
    assert not (tmp_path / "out").exists()
