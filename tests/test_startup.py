"""Start-up: a command imports what it uses, and `harness eval` none of the training, quantization,
plotting or lm-eval stacks unless its flags need them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import COMMANDS, build_parser, command_of

ROOT = Path(__file__).resolve().parent.parent

# Imported by a plain `harness eval` they cost seconds of start-up and buy it nothing.
NOT_FOR_EVAL = (
    "deepspeed", "peft", "lm_eval", "bitsandbytes", "gptqmodel", "optimum", "vllm",  # training, quantization, lm-eval
    "matplotlib", "pandas", "datasets", "pyarrow",  # plots, data frames, the Hub loader (the data here is local)
    "training", "leaderboard", "harness.quantize", "harness.contamination", "harness.chat", "harness.gating",
    "harness.vllm_backend", "reports.report", "reports.compare",
)

# Runs the CLI in a fresh interpreter and writes the names of every module it imported.
_PROBE = """
import json, sys
from harness.cli import main
code = main(sys.argv[2:])
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
raise SystemExit(code)
"""


def _modules_imported_by(argv: list[str], tmp_path: Path) -> set[str]:
    listing = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(listing), *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(listing.read_text()))


def _imported(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_eval_imports_no_training_quantization_plotting_or_lm_eval_stack(tiny_model, data_dir, tmp_path):
    argv = ["eval", "--model", str(tiny_model), "--shots", "0", "--shots", "5", "--limit", "1",
            "--data-dir", str(data_dir), "--output", str(tmp_path / "run"), "--no-progress"]
    modules = _modules_imported_by(argv, tmp_path)
    assert _imported(modules, "transformers") and _imported(modules, "harness.evaluate")  # it did score
    assert [name for name in NOT_FOR_EVAL if _imported(modules, name)] == []


def test_only_the_named_command_is_registered_and_every_command_has_its_module():
    everything = build_parser()._subparsers._group_actions[0].choices
    assert sorted(everything) == sorted(COMMANDS)
    for name in COMMANDS:
        assert list(build_parser(name)._subparsers._group_actions[0].choices) == [
            n for n, module in COMMANDS.items() if module == COMMANDS[name]
        ]


def test_the_command_is_the_first_word_that_is_not_an_option():
    assert command_of(["-v", "eval", "--model", "m"]) == "eval"
    assert command_of(["--version"]) is None
    assert command_of([]) is None


def test_a_converted_tokenizer_is_rewritten_to_load_from_its_file_with_the_same_ids(tiny_tokenizer_dir, tmp_path, monkeypatch):
    # What the named model's cached copy gets (harness.models._tokenizer_loads_from_its_file), on a small tokenizer.
    import json
    import shutil

    from transformers import AutoTokenizer

    from harness import models
    from harness.errors import HarnessError

    copy = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, copy)
    before = AutoTokenizer.from_pretrained(copy)
    config_file = copy / "tokenizer_config.json"
    with monkeypatch.context() as m:  # a cache this user cannot write: left as it is, no error
        m.setattr(models, "write_json", lambda path, obj: (_ for _ in ()).throw(HarnessError(f"cannot write {path}")))
        unchanged = config_file.read_bytes()
        models._tokenizer_loads_from_its_file(copy)
        assert config_file.read_bytes() == unchanged
    models._tokenizer_loads_from_its_file(copy)
    config = json.loads(config_file.read_text())
    assert config["tokenizer_class"] == models.FAST_TOKENIZER_CLASS and "added_tokens_decoder" in config
    after = AutoTokenizer.from_pretrained(copy)
    text = ["以下是关于计算机网络的单项选择题\n答案：A", "plain text  with  spaces"]
    assert after(text).input_ids == before(text).input_ids and after.padding_side == before.padding_side
    assert after.added_tokens_decoder == before.added_tokens_decoder
    written = config_file.stat().st_mtime_ns
    models._tokenizer_loads_from_its_file(copy)  # already done: not rewritten
    assert config_file.stat().st_mtime_ns == written


def test_python_m_harness_eval_ends_without_teardown_with_every_file_and_line_written(tiny_model, data_dir, tmp_path):
    # The quick exit (os._exit after the atexit handlers) must not lose a record file or a line of output.
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "harness", "eval", "--model", str(tiny_model), "--shots", "0", "--shots", "5",
            "--limit", "1", "--data-dir", str(data_dir), "--output", str(out), "--no-progress"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for shots in (0, 5):
        results = json.loads((out / f"shots-{shots}" / "results.json").read_text())
        assert results["overall"]["n"] == 6
        assert len((out / f"shots-{shots}" / "samples.jsonl").read_text().splitlines()) == 6
    assert done.stdout.count("overall") >= 2 and done.stdout.endswith("\n")  # both runs' summaries, to the last line
    refused = subprocess.run([*argv[:5], str(tmp_path / "no-such-model"), *argv[6:-3], "--output", str(tmp_path / "x")],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "no-such-model" in refused.stderr


def _gguf_file(path: Path, endianess) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "gemma3", endianess=endianess)
    writer.add_uint32("test.count", 7)
    writer.add_float32("test.scale", 0.25)
    writer.add_bool("test.flag", True)
    writer.add_string("test.name", "tiny ✓")
    writer.add_array("tokenizer.ggml.tokens", ["<pad>", "", "A", "问题", "▁B", "\n"])  # strings, one empty
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.25, 3.0, -0.0, 1e-8])
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1, 1, 6])
    writer.add_array("test.flags", [True, False, True])
    writer.add_array("test.empty", [])
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _fields(reader) -> list:
    return [(name, f.offset, [int(t) for t in f.types], list(f.data),
             [(p.dtype.str, p.shape, p.tobytes()) for p in f.parts]) for name, f in reader.fields.items()]


def _values(reader, parse) -> dict:
    def value(f, i):
        try:
            return parse(f.parts[i], f.types)
        except ValueError as e:
            return f"ValueError: {e}"
    return {name: [value(f, i) for i in f.data] for name, f in reader.fields.items()}


@pytest.mark.parametrize("endian", ["LITTLE", "BIG"])
def test_the_one_pass_gguf_reader_reads_every_kind_of_field_as_gguf_s_own_reader_does(tmp_path, endian):
    # harness.models.gguf_read_once reads arrays of strings and of scalars in one pass and decodes
    # values at once (the first run of the main job: 262,144-entry vocabulary); the fields it builds
    # and the values transformers parses from them must be gguf's and transformers' own, every kind
    # of field included (empty and nested arrays, a big-endian file go gguf's own way).
    import gguf
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from harness.models import gguf_read_once

    path = _gguf_file(tmp_path / "tiny.gguf", getattr(gguf.GGUFEndian, endian))
    plain = gguf.GGUFReader(path)
    parse = gguf_utils._gguf_parse_value
    plain_values = _values(plain, parse)
    with gguf_read_once(path):
        once = gguf.GGUFReader(path)
        assert type(once) is not type(plain) and gguf.GGUFReader(path) is once
        assert _fields(once) == _fields(plain)
        fast = gguf_utils._gguf_parse_value
        assert fast is not parse
        values = _values(once, fast)
        assert values == plain_values
        assert [type(v) for vs in values.values() for v in vs] == [type(v) for vs in plain_values.values() for v in vs]
        assert values["test.nested"][0].startswith("ValueError")  # transformers cannot parse it either way
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 2)
        other = gguf.GGUFReader(_gguf_file(tmp_path / "other.gguf", gguf.GGUFEndian.LITTLE))
        assert type(other) is type(plain)  # another file: an ordinary reader
    assert plain_values["tokenizer.ggml.tokens"] == ["<pad>", "", "A", "问题", "▁B", "\n"]
    assert gguf.GGUFReader is type(plain) and gguf_utils._gguf_parse_value is parse  # put back
    assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 2) is not gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 2)
