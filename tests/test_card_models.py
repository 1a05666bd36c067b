"""The model card's own checkpoints load natively: Qwen-1 (DevOps-Model, Qwen-7B/14B), InternLM-7B, Baichuan2-7B.

Compared against tests/fixtures/card_models/{qwen1,internlm,baichuan2}.json, written by make_fixtures.py
with the original remote code in its reference environment (transformers 4.33.3): the original
tokenizer's ids on every prompt the harness builds, model.chat's contexts, and the original
model's float32 logits on a tiny checkpoint that tiny_<family>.py draws from a seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.families import baichuan2, internlm, qwen1
from harness.prompts import CARD_EVAL_SYSTEM, PromptFormat, subject_prompts
from tasks import get_protocol, protocols

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "card_models"
MODELS = ROOT.parent / "shared" / "models"
QWEN1_FILES = MODELS / "qwen1"
INTERNLM_FILES = MODELS / "internlm-7b"
EXPECTED = json.loads((FIXTURES / "qwen1.json").read_text(encoding="utf-8"))
INTERNLM_EXPECTED = json.loads((FIXTURES / "internlm.json").read_text(encoding="utf-8"))
BAICHUAN2_FILES = MODELS / "baichuan2-7b"
BAICHUAN2_EXPECTED = json.loads((FIXTURES / "baichuan2.json").read_text(encoding="utf-8"))
BAICHUAN2_13B_FILES = MODELS / "baichuan2-13b"
BAICHUAN2_13B_EXPECTED = json.loads((FIXTURES / "baichuan2-13b.json").read_text(encoding="utf-8"))
_FAMILY = {
    "qwen1": (EXPECTED, QWEN1_FILES),
    "internlm": (INTERNLM_EXPECTED, INTERNLM_FILES),
    "baichuan2": (BAICHUAN2_EXPECTED, BAICHUAN2_FILES),
    "baichuan2-13b": (BAICHUAN2_13B_EXPECTED, BAICHUAN2_13B_FILES),
}


def _tiny_module(family: str = "qwen1"):
    spec = importlib.util.spec_from_file_location(f"tiny_{family}", FIXTURES / f"tiny_{family}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(id_lists) -> str:
    return hashlib.sha256(json.dumps([list(map(int, ids)) for ids in id_lists], separators=(",", ":")).encode()).hexdigest()


def _settings():
    for name in protocols():
        protocol = get_protocol(name)
        for shots in (0, 5):
            for chat in (None, "chatml"):
                if not (chat and protocol.move_trailing_whitespace):
                    yield PromptFormat(protocol, shots, chat)


def _key(fmt: PromptFormat) -> str:
    return f"{fmt.protocol.name}/{fmt.shots}-shot/{fmt.chat or 'plain'}"


@pytest.fixture(scope="module")
def vocab_file() -> Path:
    path = QWEN1_FILES / qwen1.VOCAB_FILE
    if not path.is_file():
        pytest.fail(f"Qwen-1's {qwen1.VOCAB_FILE} not found at {path}")
    return path


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    return qwen1.fast_tokenizer(vocab_file)


@pytest.fixture(scope="module")
def internlm_tokenizer():
    path = INTERNLM_FILES / internlm.VOCAB_FILE
    if not path.is_file():
        pytest.fail(f"InternLM's {internlm.VOCAB_FILE} not found at {path}")
    return internlm.fast_tokenizer(path)


@pytest.fixture(scope="module")
def all_prompts(subject_data):
    return {_key(fmt): (fmt, [p for d in subject_data.values() for _, p in subject_prompts(d, fmt)]) for fmt in _settings()}


# --- tokenizer --------------------------------------------------------------------------------


def test_qwen1_special_tokens_sit_at_their_original_ids(tokenizer):
    assert len(tokenizer) == 151851
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|extra_0|>", "<|extra_204|>"]) == [
        151643, 151644, 151645, 151646, 151850,
    ]
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 151643
    assert tokenizer.bos_token_id is None
    assert tokenizer("答案：A")["input_ids"] == [102349, 5122, 32]  # no BOS; PROVENANCE's measured ids
    ids = tokenizer("<|im_start|>user\n问<|im_end|>")["input_ids"]
    assert (ids[0], ids[-1]) == (151644, 151645)


def test_the_fixtures_cover_every_prompt_setting_the_harness_builds(all_prompts):
    assert sorted(EXPECTED["tokenizer"]) == sorted(all_prompts)
    assert {v["prompts"] for v in EXPECTED["tokenizer"].values()} == {574}


def _assert_ids_equal(tokenizer, all_prompts, setting, expected):
    fmt, prompts = all_prompts[setting]
    conts = fmt.protocol.continuations()
    contexts = [p.rstrip() if fmt.protocol.move_trailing_whitespace else p for p in prompts]
    joined = [c + p[len(c):] + cont for c, p in zip(contexts, prompts) for cont in conts]
    ctx_ids = tokenizer(contexts, add_special_tokens=fmt.add_special_tokens)["input_ids"]
    assert ctx_ids[0] == expected["first_ids"]
    assert sum(map(len, ctx_ids)) == expected["tokens"]
    assert _digest(ctx_ids) == expected["contexts_sha256"]
    assert _digest(tokenizer(joined, add_special_tokens=fmt.add_special_tokens)["input_ids"]) == expected["joined_sha256"]


@pytest.mark.parametrize("setting", sorted(EXPECTED["tokenizer"]))
def test_qwen1_tokenizer_ids_equal_the_original_on_all_574_prompts(tokenizer, all_prompts, setting):
    _assert_ids_equal(tokenizer, all_prompts, setting, EXPECTED["tokenizer"][setting])


@pytest.mark.parametrize("setting", sorted(INTERNLM_EXPECTED["tokenizer"]))
def test_internlm_tokenizer_ids_equal_the_original_on_all_574_prompts(internlm_tokenizer, all_prompts, setting):
    _assert_ids_equal(internlm_tokenizer, all_prompts, setting, INTERNLM_EXPECTED["tokenizer"][setting])


@pytest.mark.parametrize("protocol", ["devops", "cmmlu", "ceval"])
def test_harness_chat_prompts_are_model_chat_contexts_with_the_cards_system_text(tokenizer, all_prompts, protocol):
    for shots in (0, 5):
        _, chat_prompts = all_prompts[f"{protocol}/{shots}-shot/chatml"]
        expected = EXPECTED["make_context"][f"{protocol}/{shots}-shot/plain/{CARD_EVAL_SYSTEM}"]
        assert _digest(tokenizer(chat_prompts)["input_ids"]) == expected["sha256"]


def test_the_tokenizers_chat_template_is_model_chat_with_qwens_default_system(tokenizer, all_prompts):
    _, prompts = all_prompts["devops/0-shot/plain"]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    expected = EXPECTED["make_context"]["devops/0-shot/plain/You are a helpful assistant."]
    assert _digest(tokenizer(texts, add_special_tokens=False)["input_ids"]) == expected["sha256"]


def _conversations(prompts: list[str]) -> list[tuple[list[tuple[str, str]], str]]:
    # make_fixtures.conversations: two answered turns, then a question
    return [([(prompts[i], "A"), (prompts[i + 1], "答案是 B。")], prompts[i + 2]) for i in range(20)]


def test_chat_with_the_chatml_template_lays_out_turns_as_model_chat_does(tokenizer, all_prompts):
    from harness.conversation import get_template

    _, prompts = all_prompts["devops/0-shot/plain"]
    expected = EXPECTED["make_context_history"]
    chatml = get_template("chatml")
    assert chatml.system == expected["system"]
    texts = [chatml.render(query, history, eos_token=tokenizer.eos_token) for history, query in _conversations(prompts)]
    assert _digest(tokenizer(texts)["input_ids"]) == expected["sha256"]


def test_the_tokenizers_chat_template_lays_out_turns_as_model_chat_does(tokenizer, all_prompts):
    _, prompts = all_prompts["devops/0-shot/plain"]
    texts = []
    for history, query in _conversations(prompts):
        messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        messages.append({"role": "user", "content": query})
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    assert _digest(tokenizer(texts, add_special_tokens=False)["input_ids"]) == EXPECTED["make_context_history"]["sha256"]


def test_the_real_qwen_7b_config_maps_to_qwen2_in_bf16():
    config = qwen1.qwen2_config(json.loads((QWEN1_FILES / "reference" / "Qwen-7B.config.json").read_text()))
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (4096, 11008, 32)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (32, 32, 151936)
    assert config.rope_parameters["rope_theta"] == 10000.0 and config.rms_norm_eps == 1e-6
    assert config.max_position_embeddings == 8192 and config.tie_word_embeddings is False
    assert str(config.dtype).removeprefix("torch.") == "bfloat16"  # no precision flag set: Qwen-1 runs in bf16


def test_a_qwen1_config_the_native_layers_cannot_compute_is_refused():
    from harness.errors import ModelError

    config = dict(EXPECTED["saved_config"], no_bias=False)
    with pytest.raises(ModelError, match="no_bias"):
        qwen1.qwen2_config(config)


# --- native model loading ---------------------------------------------------------------------


def _write_checkpoint(out: Path, family: str = "qwen1", *, shards: int = 1) -> Path:
    """The tiny checkpoint as the original save_pretrained leaves it: config.json, weights, tokenizer
    files (and the remote code files, which the native path never runs)."""
    import torch

    expected, files = _FAMILY[family]
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(expected["saved_config"], indent=2), encoding="utf-8")
    for name in expected["saved_files"]:
        if (files / name).is_file() and name != "config.json":
            shutil.copy(files / name, out / name)
    weights = _tiny_module(family.removesuffix("-13b")).weights(expected["saved_config"])
    if shards == 1:
        torch.save(weights, out / "pytorch_model.bin")  # what transformers 4.33's save_pretrained writes
        return out
    from safetensors.torch import save_file

    names = list(weights)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: weights[n] for n in names[i::shards]}
        save_file(part, out / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    index = {"metadata": {"total_size": sum(t.numel() * 4 for t in weights.values())}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def qwen1_dir(tmp_path_factory, vocab_file) -> Path:
    return _write_checkpoint(tmp_path_factory.mktemp("qwen1") / "tiny-qwen1")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("harness-cache")  # conversions of tmp checkpoints: not kept in the shared cache


@pytest.fixture(scope="module")
def loaded(qwen1_dir, cache):
    from harness.models import ModelSpec, load_model

    return load_model(ModelSpec(model=str(qwen1_dir), device="cpu"), cache)


def test_the_drawn_weights_are_the_ones_the_fixtures_were_made_with():
    weights = _tiny_module().weights(EXPECTED["saved_config"])
    sums = {k: float(v.double().sum()) for k, v in sorted(weights.items())}
    assert sums == pytest.approx(EXPECTED["weight_sums"], rel=0, abs=1e-9)


def test_a_qwen1_checkpoint_loads_as_qwen2_without_remote_code(loaded, qwen1_dir):
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"
    assert loaded.info.architecture == "Qwen2ForCausalLM" and loaded.info.dtype == "float32"
    assert loaded.info.trust_remote_code is False
    assert loaded.info.path == str(qwen1_dir)
    assert loaded.info.extra == {"source_format": "qwen", "converter": qwen1.CONVERTER}
    assert loaded.info.to_json()["source_format"] == "qwen"
    assert loaded.tokenizer("答案：A")["input_ids"] == [102349, 5122, 32]


def _fixture_prompts(subject_data, expected=EXPECTED):
    for ref in expected["logits"]:
        fmt = PromptFormat(get_protocol(ref["protocol"]), ref["shots"], ref["chat"])
        prompts = dict((q.id, p) for q, p in subject_prompts(subject_data[ref["subject"]], fmt, limit=2))
        yield ref, prompts[ref["id"]]


def _last_logits(model, tokenizer, prompt):
    import torch

    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        return ids, model(torch.tensor([ids])).logits[0, -1].float()


def test_native_qwen1_logits_equal_the_originals_on_every_subject_0_and_5_shot(loaded, subject_data):
    assert len(EXPECTED["logits"]) == 6 * 2 * 2 * 2  # subjects x shots x plain/chat x two questions
    worst = 0.0
    for ref, prompt in _fixture_prompts(subject_data):
        ids, logits = _last_logits(loaded.model, loaded.tokenizer, prompt)
        assert _digest([ids]) == ref["input_sha256"]
        letters = logits[ref["letter_ids"]].tolist()
        top = [float(logits[i]) for i in ref["top_ids"]]
        worst = max(worst, *(abs(a - b) for a, b in zip(letters + top, ref["letter_logits"] + ref["top_logits"])))
        assert max(range(4), key=letters.__getitem__) == max(range(4), key=ref["letter_logits"].__getitem__)
        assert int(logits.argmax()) == ref["top_ids"][0]
    assert worst < 1e-4, f"largest logit difference {worst:.2e}"


def test_sharded_safetensors_convert_to_the_same_model(tmp_path, loaded, cache, subject_data):
    from harness.models import ModelSpec, load_model

    sharded = load_model(ModelSpec(model=str(_write_checkpoint(tmp_path / "sharded", shards=3)), device="cpu"), cache)
    ref, prompt = next(_fixture_prompts(subject_data))
    import torch

    assert torch.equal(_last_logits(sharded.model, sharded.tokenizer, prompt)[1], _last_logits(loaded.model, loaded.tokenizer, prompt)[1])


def test_the_conversion_is_made_once_per_weights_fingerprint(loaded, qwen1_dir, cache):
    converted = [p for p in (cache / "models").iterdir() if p.name.startswith("qwen-") and "tokenizer" not in p.name]
    assert [p.name for p in converted if loaded.info.weights in p.name] == [f"qwen-{loaded.info.weights}-v1"]
    assert json.loads((converted[0] / "SOURCE.json").read_text())["converter"] == qwen1.CONVERTER


def test_prompts_past_a_qwen1_checkpoints_trained_context_are_refused_in_one_line(tmp_path, cache, data_dir, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    path = _write_checkpoint(tmp_path / "short-qwen1")
    config = json.loads((path / "config.json").read_text()) | {"seq_length": 160}  # 5-shot prompts are longer
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["eval", "--model", str(path), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 "--shots", "5", "--limit", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    assert re.search(r"the longest prompt is \d+ tokens, past the 160 this qwen checkpoint was trained for", err)
    assert not out.exists()  # refused before scoring: no run directory


def test_a_qwen1_checkpoint_without_its_tiktoken_file_is_refused_in_one_line(tmp_path, cache):
    from harness.errors import ModelError
    from harness.models import ModelSpec, load_tokenizer

    path = tmp_path / "no-vocab"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(EXPECTED["saved_config"]), encoding="utf-8")
    with pytest.raises(ModelError, match="without its tokenizer file qwen.tiktoken"):
        load_tokenizer(ModelSpec(model=str(path)), cache)


def test_trust_remote_code_does_not_run_the_original_code_of_a_known_format(qwen1_dir, cache):
    from harness.models import ModelSpec, load_model

    loaded = load_model(ModelSpec(model=str(qwen1_dir), device="cpu", trust_remote_code=True), cache)
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"


def test_harness_eval_scores_a_qwen1_checkpoint_end_to_end(qwen1_dir, cache, data_dir, tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    out = tmp_path / "run"
    assert main(["eval", "--model", str(qwen1_dir), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 "--shots", "0", "--shots", "5", "--limit", "2"]) == 0
    for shots in (0, 5):
        results = json.loads((out / f"shots-{shots}" / "results.json").read_text())
        assert results["overall"]["n"] == 12
        assert results["model"]["source_format"] == "qwen" and results["model"]["trust_remote_code"] is False
        lines = [json.loads(line) for line in (out / f"shots-{shots}" / "samples.jsonl").read_text().splitlines()]
        scored = {(line["subject"], line["id"]): line["logits"] for line in lines}
        refs = [r for r in EXPECTED["logits"] if r["shots"] == shots and r["chat"] is None]
        assert len(refs) == 12  # batched, with the shared prefix cached: still the original's numbers
        for ref in refs:
            assert scored[(ref["subject"], ref["id"])] == pytest.approx(ref["letter_logits"], abs=1e-4)


# --- quantize and train from a card format ---------------------------------------------------


def test_harness_quantize_starts_from_a_qwen1_checkpoint_and_its_output_scores(qwen1_dir, cache, data_dir, tmp_path, monkeypatch):
    from harness.cli import main
    from harness.quantize.methods import missing_packages

    if missing_packages("bnb-int8"):
        pytest.skip(missing_packages("bnb-int8"))
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    ckpt = tmp_path / "int8"
    assert main(["quantize", "--model", str(qwen1_dir), "--method", "bnb-int8", "--output", str(ckpt)]) == 0
    marker = json.loads((ckpt / "harness_quantization.json").read_text())
    assert marker["source_path"] == str(qwen1_dir.resolve()) and marker["verified_reload"]["max_abs_logit_difference"] == 0.0
    run = tmp_path / "run"
    assert main(["eval", "--model", str(ckpt), "--data-dir", str(data_dir), "--output", str(run), "--no-progress",
                 "--shots", "0", "--limit", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["quantization"]["method"] == "bnb-int8" and results["model"]["architecture"] == "Qwen2ForCausalLM"
    assert results["overall"]["n"] == 6


def test_harness_train_starts_a_lora_from_a_qwen1_checkpoint_and_its_adapter_scores(qwen1_dir, cache, data_dir, tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    lora = tmp_path / "lora"
    assert main(["train", "--stage", "sft", "--model_name_or_path", str(qwen1_dir), "--dataset", "devops_qa",
                 "--dataset_dir", str(ROOT / "training" / "data"), "--template", "chatml", "--finetuning_type", "lora",
                 "--output_dir", str(lora), "--cache_dir", str(tmp_path / "hf-cache"), "--report_to", "none",
                 "--per_device_train_batch_size", "4", "--max_steps", "2", "--seed", "0"]) == 0
    base = json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).parent == cache / "models" and Path(base).name.startswith("qwen-")  # the converted copy
    run = tmp_path / "run"
    assert main(["eval", "--model", str(lora), "--data-dir", str(data_dir), "--output", str(run), "--no-progress",
                 "--shots", "0", "--limit", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["adapter"] == str(lora) and results["overall"]["n"] == 6


def _pt_args(model: Path, out: Path, tmp_path: Path, finetuning: str, steps: int = 2) -> list[str]:
    """`harness train --stage pt` on the example corpus: a few steps of blocks of 32 tokens, no intermediate checkpoint."""
    return ["train", "--stage", "pt", "--model_name_or_path", str(model), "--dataset", "devops_corpus",
            "--dataset_dir", str(ROOT / "training" / "data"), "--finetuning_type", finetuning, "--max_source_length", "32",
            "--output_dir", str(out), "--cache_dir", str(tmp_path / "hf-cache"), "--report_to", "none",
            "--per_device_train_batch_size", "4", "--max_steps", str(steps), "--learning_rate", "1e-3", "--save_strategy", "no",
            "--seed", "0"]


def test_harness_train_pt_full_from_a_qwen1_checkpoint_is_a_plain_qwen2_checkpoint_that_scores(qwen1_dir, cache, data_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.cli import main
    from harness.families import source_format

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    out = tmp_path / "pt"
    assert main(_pt_args(qwen1_dir, out, tmp_path, "full")) == 0
    # A standard transformers checkpoint: no remote code, no tiktoken file, nothing for the converter to do.
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"] and "auto_map" not in config
    assert source_format(out) is None and not list(out.glob("*.py")) and not (out / qwen1.VOCAB_FILE).exists()
    trained = AutoModelForCausalLM.from_pretrained(out)  # transformers' own loading
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("答案：A")["input_ids"] == [102349, 5122, 32] and tokenizer.eos_token_id == 151643

    # It trained the converted copy, and its record names the Qwen-1 directory it was converted from.
    record = json.loads((out / "harness_train.json").read_text())
    copy = Path(record["model"]["model_name_or_path"])
    assert copy.parent == cache / "models" and copy.name.startswith("qwen-")
    assert record["model"]["converted_from"] == {"model_name_or_path": str(qwen1_dir), "source_format": "qwen",
                                                 "converter": qwen1.CONVERTER}
    assert record["finetuning"]["stage"] == "pt" and record["finetuning"]["finetuning_type"] == "full"
    before = AutoModelForCausalLM.from_pretrained(copy).state_dict()
    after = trained.state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)

    run = tmp_path / "run"
    assert main(["eval", "--model", str(out), "--data-dir", str(data_dir), "--output", str(run), "--no-progress",
                 "--shots", "0", "--limit", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["path"] == str(out) and results["model"]["architecture"] == "Qwen2ForCausalLM"
    assert "source_format" not in results["model"] and results["overall"]["n"] == 6


@pytest.mark.slow  # 15 to 45 s each on two shared CPU cores: GPT-QModel calibrates, packs, saves, reloads
@pytest.mark.parametrize("family", ["qwen1", "baichuan2", "internlm"])
def test_harness_quantize_gptq_starts_from_a_card_checkpoint_and_its_output_scores(family, cache, data_dir, tmp_path, monkeypatch):
    from harness.cli import main
    from harness.quantize.methods import missing_packages

    if missing_packages("gptq"):
        pytest.skip(missing_packages("gptq"))
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    source = _write_checkpoint(tmp_path / f"tiny-{family}", family)
    ckpt = tmp_path / "gptq"
    # The converted layers are 64 and 128 wide: groups of 32 fit them.
    assert main(["quantize", "--model", str(source), "--method", "gptq", "--group-size", "32", "--data-dir", str(data_dir),
                 "--output", str(ckpt)]) == 0
    marker = json.loads((ckpt / "harness_quantization.json").read_text())
    assert (marker["method"], marker["bits"], marker["group_size"]) == ("gptq", 4, 32)
    assert marker["source_path"] == str(source.resolve()) and marker["calibration"]["source"] == "devops-dev"
    assert marker["quantized_layers"] == 14 and marker["float_layers"] == ["lm_head"]  # 2 × (q, k, v split, o, gate, up, down)
    assert marker["verified_reload"]["max_abs_logit_difference"] == 0.0
    run = tmp_path / "run"
    assert main(["eval", "--model", str(ckpt), "--data-dir", str(data_dir), "--output", str(run), "--no-progress",
                 "--shots", "0", "--limit", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["quantization"]["method"] == "gptq" and results["model"]["quantization"]["bits"] == 4
    architecture = {"qwen1": "Qwen2ForCausalLM", "baichuan2": "LlamaForCausalLM", "internlm": "LlamaForCausalLM"}[family]
    assert results["model"]["architecture"] == architecture and results["overall"]["n"] == 6


@pytest.mark.parametrize("finetuning", ["full", "lora"])
@pytest.mark.parametrize("family", ["internlm", "baichuan2"])
def test_harness_train_pt_from_an_internlm_or_baichuan2_7b_checkpoint_scores(family, finetuning, cache, data_dir, tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    source = _write_checkpoint(tmp_path / f"tiny-{family}", family)
    out = tmp_path / "pt"
    assert main(_pt_args(source, out, tmp_path, finetuning)) == 0
    record = json.loads((out / "harness_train.json").read_text())
    assert record["model"]["converted_from"]["source_format"] == {"internlm": "internlm", "baichuan2": "baichuan"}[family]
    if finetuning == "full":  # a plain Llama checkpoint: transformers' own class, no converter needed again
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == "llama" and "auto_map" not in config
    run = tmp_path / "run"
    assert main(["eval", "--model", str(out), "--data-dir", str(data_dir), "--output", str(run), "--no-progress",
                 "--shots", "0", "--limit", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["architecture"] == "LlamaForCausalLM" and results["overall"]["n"] == 6


def _in_a_new_process(argv: list[str], cache: Path) -> None:
    """`harness ARGV` in a process of its own: nothing this one registered or converted is known there."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=ROOT, env={**os.environ, "HARNESS_CACHE": str(cache)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("finetuning", ["full", "lora"])
def test_a_baichuan2_13b_checkpoint_trained_full_or_lora_trains_on_and_scores_in_a_new_process(finetuning, cache, data_dir, tmp_path, monkeypatch):
    # Its converted class is the harness's own (ALiBi): what training saved must load where no
    # conversion has registered that class, and LoRA needs default targets for it.
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    source = _write_checkpoint(tmp_path / "tiny-baichuan2-13b", "baichuan2-13b")
    out = tmp_path / "pt"
    assert main(_pt_args(source, out, tmp_path, finetuning)) == 0
    if finetuning == "full":
        assert json.loads((out / "config.json").read_text())["model_type"] == baichuan2.ALIBI_MODEL_TYPE
        _in_a_new_process(_pt_args(out, tmp_path / "again", tmp_path, "full", steps=1), cache)  # trained further, as it is
        out = tmp_path / "again"
    else:
        assert sorted(json.loads((out / "adapter_config.json").read_text())["target_modules"]) == ["q_proj", "v_proj"]
    run = tmp_path / "run"
    _in_a_new_process(["eval", "--model", str(out), "--data-dir", str(data_dir), "--output", str(run), "--no-progress",
                       "--shots", "0", "--limit", "1"], cache)
    results = json.loads((run / "results.json").read_text())
    assert results["model"]["architecture"] == "BaichuanAlibiForCausalLM" and results["overall"]["n"] == 6


# --- InternLM-7B ------------------------------------------------------------------------------


def test_internlm_tokenizer_adds_bos_as_the_original_does(internlm_tokenizer):
    assert len(internlm_tokenizer) == 103168
    assert (internlm_tokenizer.bos_token_id, internlm_tokenizer.eos_token_id, internlm_tokenizer.pad_token_id) == (1, 2, 2)
    assert internlm_tokenizer("答案：A")["input_ids"] == [1, 68208, 98750, 290]  # PROVENANCE's measured ids
    assert internlm_tokenizer("答案： A")["input_ids"] == [1, 68208, 98750, 493]
    assert internlm_tokenizer.convert_tokens_to_ids(["<eoh>", "<eoa>"]) == [103027, 103028]


@pytest.mark.parametrize("protocol", ["devops", "cmmlu", "ceval"])
def test_internlm_chat_template_is_model_chat_build_inputs(internlm_tokenizer, all_prompts, protocol):
    for shots in (0, 5):
        _, prompts = all_prompts[f"{protocol}/{shots}-shot/plain"]
        texts = [internlm_tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        ids = internlm_tokenizer(texts, add_special_tokens=False)["input_ids"]
        assert _digest(ids) == INTERNLM_EXPECTED["make_context"][f"{protocol}/{shots}-shot/plain"]["sha256"]


def test_internlm_chat_template_lays_out_turns_as_model_chat_does(internlm_tokenizer, all_prompts):
    _, prompts = all_prompts["devops/0-shot/plain"]
    texts = []
    for history, query in _conversations(prompts):
        messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        texts.append(internlm_tokenizer.apply_chat_template(messages + [{"role": "user", "content": query}], tokenize=False,
                                                            add_generation_prompt=True))
    ids = internlm_tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert _digest(ids) == INTERNLM_EXPECTED["make_context_history"]["sha256"]


@pytest.fixture(scope="module")
def internlm_loaded(tmp_path_factory, cache):
    from harness.models import ModelSpec, load_model

    path = _write_checkpoint(tmp_path_factory.mktemp("internlm") / "tiny-internlm", "internlm")
    return load_model(ModelSpec(model=str(path), device="cpu"), cache)


def test_the_drawn_internlm_weights_are_the_ones_the_fixtures_were_made_with():
    weights = _tiny_module("internlm").weights(INTERNLM_EXPECTED["saved_config"])
    sums = {k: float(v.double().sum()) for k, v in sorted(weights.items())}
    assert sums == pytest.approx(INTERNLM_EXPECTED["weight_sums"], rel=0, abs=1e-9)


def test_an_internlm_checkpoint_loads_as_llama_with_biased_attention(internlm_loaded):
    assert type(internlm_loaded.model).__name__ == "LlamaForCausalLM"
    assert internlm_loaded.model.config.attention_bias is True
    assert internlm_loaded.info.extra == {"source_format": "internlm", "converter": internlm.CONVERTER}
    assert internlm_loaded.info.dtype == "float32" and internlm_loaded.info.trust_remote_code is False


def test_native_internlm_logits_equal_the_originals_on_every_subject_0_and_5_shot(internlm_loaded, subject_data):
    assert len(INTERNLM_EXPECTED["logits"]) == 48
    worst = 0.0
    for ref, prompt in _fixture_prompts(subject_data, INTERNLM_EXPECTED):
        ids, logits = _last_logits(internlm_loaded.model, internlm_loaded.tokenizer, prompt)
        assert _digest([ids]) == ref["input_sha256"]
        letters = logits[ref["letter_ids"]].tolist()
        top = [float(logits[i]) for i in ref["top_ids"]]
        worst = max(worst, *(abs(a - b) for a, b in zip(letters + top, ref["letter_logits"] + ref["top_logits"])))
        assert max(range(4), key=letters.__getitem__) == max(range(4), key=ref["letter_logits"].__getitem__)
        assert int(logits.argmax()) == ref["top_ids"][0]
    assert worst < 1e-4, f"largest logit difference {worst:.2e}"


def test_harness_eval_scores_an_internlm_checkpoint_end_to_end(tmp_path, cache, data_dir, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    path = _write_checkpoint(tmp_path / "tiny-internlm", "internlm", shards=2)
    out = tmp_path / "run"
    assert main(["eval", "--model", str(path), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 "--shots", "0", "--shots", "5", "--limit", "2"]) == 0
    for shots in (0, 5):
        results = json.loads((out / f"shots-{shots}" / "results.json").read_text())
        assert results["overall"]["n"] == 12 and results["model"]["source_format"] == "internlm"
        lines = [json.loads(line) for line in (out / f"shots-{shots}" / "samples.jsonl").read_text().splitlines()]
        scored = {(line["subject"], line["id"]): line["logits"] for line in lines}
        for ref in (r for r in INTERNLM_EXPECTED["logits"] if r["shots"] == shots and r["chat"] is None):
            assert scored[(ref["subject"], ref["id"])] == pytest.approx(ref["letter_logits"], abs=1e-4)


# --- Baichuan2-7B -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baichuan2_tokenizer():
    path = BAICHUAN2_FILES / baichuan2.VOCAB_FILE
    if not path.is_file():
        pytest.fail(f"Baichuan2's {baichuan2.VOCAB_FILE} not found at {path}")
    return baichuan2.fast_tokenizer(path)


def test_baichuan2_tokenizer_adds_nothing_as_the_original_does(baichuan2_tokenizer):
    assert len(baichuan2_tokenizer) == 125696
    assert (baichuan2_tokenizer.eos_token_id, baichuan2_tokenizer.pad_token_id) == (2, 0)
    assert baichuan2_tokenizer("答案：A")["input_ids"] == [4174, 70, 92343]  # PROVENANCE's measured ids
    assert baichuan2_tokenizer("答案： A")["input_ids"] == [4174, 70, 1401]
    assert baichuan2_tokenizer.convert_tokens_to_ids(["<reserved_106>", "<reserved_107>"]) == [195, 196]


@pytest.mark.parametrize("setting", sorted(BAICHUAN2_EXPECTED["tokenizer"]))
def test_baichuan2_tokenizer_ids_equal_the_original_on_all_574_prompts(baichuan2_tokenizer, all_prompts, setting):
    _assert_ids_equal(baichuan2_tokenizer, all_prompts, setting, BAICHUAN2_EXPECTED["tokenizer"][setting])


def _chat_ids(tokenizer, prompts_and_histories):
    texts = []
    for history, query in prompts_and_histories:
        messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        texts.append(tokenizer.apply_chat_template(messages + [{"role": "user", "content": query}], tokenize=False,
                                                   add_generation_prompt=True))
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_baichuan2_chat_template_is_model_chat_build_chat_input(baichuan2_tokenizer, all_prompts):
    for protocol in ("devops", "cmmlu", "ceval"):
        for shots in (0, 5):
            _, prompts = all_prompts[f"{protocol}/{shots}-shot/plain"]
            ids = _chat_ids(baichuan2_tokenizer, [([], p) for p in prompts])
            assert _digest(ids) == BAICHUAN2_EXPECTED["make_context"][f"{protocol}/{shots}-shot/plain"]["sha256"]
    _, prompts = all_prompts["devops/0-shot/plain"]
    assert _digest(_chat_ids(baichuan2_tokenizer, _conversations(prompts))) == BAICHUAN2_EXPECTED["make_context_history"]["sha256"]


def test_the_drawn_baichuan2_weights_are_the_ones_the_fixtures_were_made_with():
    weights = _tiny_module("baichuan2").weights(BAICHUAN2_EXPECTED["saved_config"])
    sums = {k: float(v.double().sum()) for k, v in sorted(weights.items())}
    assert sums == pytest.approx(BAICHUAN2_EXPECTED["weight_sums"], rel=0, abs=1e-9)


@pytest.fixture(scope="module")
def baichuan2_loaded(tmp_path_factory, cache):
    from harness.models import ModelSpec, load_model

    path = _write_checkpoint(tmp_path_factory.mktemp("baichuan2") / "tiny-baichuan2", "baichuan2")
    return load_model(ModelSpec(model=str(path), device="cpu"), cache)


def test_native_baichuan2_logits_equal_the_originals_on_every_subject_0_and_5_shot(baichuan2_loaded, subject_data):
    assert type(baichuan2_loaded.model).__name__ == "LlamaForCausalLM"
    assert baichuan2_loaded.info.extra == {"source_format": "baichuan", "converter": baichuan2.CONVERTER}
    assert len(BAICHUAN2_EXPECTED["logits"]) == 48
    worst = 0.0
    for ref, prompt in _fixture_prompts(subject_data, BAICHUAN2_EXPECTED):
        ids, logits = _last_logits(baichuan2_loaded.model, baichuan2_loaded.tokenizer, prompt)
        assert _digest([ids]) == ref["input_sha256"]
        letters = logits[ref["letter_ids"]].tolist()
        top = [float(logits[i]) for i in ref["top_ids"]]
        worst = max(worst, *(abs(a - b) for a, b in zip(letters + top, ref["letter_logits"] + ref["top_logits"])))
        assert max(range(4), key=letters.__getitem__) == max(range(4), key=ref["letter_logits"].__getitem__)
        assert int(logits.argmax()) == ref["top_ids"][0]
    assert worst < 1e-4, f"largest logit difference {worst:.2e}"


def test_baichuan2_13b_ids_and_chat_are_the_7bs(baichuan2_tokenizer):
    # the same tokenizer.model (sha256 7945...), and the 13B's original code gives the same ids on every set
    assert (BAICHUAN2_13B_FILES / "tokenizer.model").read_bytes() == (BAICHUAN2_FILES / "tokenizer.model").read_bytes()
    for key in ("tokenizer", "make_context", "make_context_history"):
        assert BAICHUAN2_13B_EXPECTED[key] == BAICHUAN2_EXPECTED[key]


@pytest.fixture(scope="module")
def baichuan2_13b_loaded(tmp_path_factory, cache):
    from harness.models import ModelSpec, load_model

    path = _write_checkpoint(tmp_path_factory.mktemp("baichuan2-13b") / "tiny-baichuan2-13b", "baichuan2-13b")
    return load_model(ModelSpec(model=str(path), device="cpu"), cache)


def test_the_alibi_slopes_are_alibis_for_powers_of_two_and_between():
    from harness.families.alibi import alibi_slopes

    assert alibi_slopes(8).tolist() == pytest.approx([2 ** -(i + 1) for i in range(8)])
    assert alibi_slopes(4).tolist() == pytest.approx([2 ** -(2 * (i + 1)) for i in range(4)])
    forty = alibi_slopes(40).tolist()  # Baichuan2-13B's heads: the 32 of 32, then every other one of 64
    assert forty[:32] == pytest.approx(alibi_slopes(32).tolist()) and forty[32:] == pytest.approx(alibi_slopes(64).tolist()[0::2][:8])


def test_native_baichuan2_13b_logits_equal_the_originals_on_every_subject_0_and_5_shot(baichuan2_13b_loaded, subject_data):
    assert type(baichuan2_13b_loaded.model).__name__ == "BaichuanAlibiForCausalLM"
    assert baichuan2_13b_loaded.info.extra == {"source_format": "baichuan", "converter": baichuan2.CONVERTER}
    assert len(BAICHUAN2_13B_EXPECTED["logits"]) == 48
    worst = 0.0
    for ref, prompt in _fixture_prompts(subject_data, BAICHUAN2_13B_EXPECTED):
        ids, logits = _last_logits(baichuan2_13b_loaded.model, baichuan2_13b_loaded.tokenizer, prompt)
        assert _digest([ids]) == ref["input_sha256"]
        letters = logits[ref["letter_ids"]].tolist()
        top = [float(logits[i]) for i in ref["top_ids"]]
        worst = max(worst, *(abs(a - b) for a, b in zip(letters + top, ref["letter_logits"] + ref["top_logits"])))
        assert max(range(4), key=letters.__getitem__) == max(range(4), key=ref["letter_logits"].__getitem__)
        assert int(logits.argmax()) == ref["top_ids"][0]
    assert worst < 1e-4, f"largest logit difference {worst:.2e}"


def test_harness_eval_scores_a_baichuan2_13b_checkpoint_end_to_end_with_its_prefix_cache(tmp_path, cache, data_dir, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    path = _write_checkpoint(tmp_path / "tiny-baichuan2-13b", "baichuan2-13b", shards=2)
    out = tmp_path / "run"
    assert main(["eval", "--model", str(path), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 "--shots", "0", "--shots", "5", "--limit", "2"]) == 0
    for shots in (0, 5):
        results = json.loads((out / f"shots-{shots}" / "results.json").read_text())
        assert results["overall"]["n"] == 12 and results["model"]["architecture"] == "BaichuanAlibiForCausalLM"
        lines = [json.loads(line) for line in (out / f"shots-{shots}" / "samples.jsonl").read_text().splitlines()]
        scored = {(line["subject"], line["id"]): line["logits"] for line in lines}
        for ref in (r for r in BAICHUAN2_13B_EXPECTED["logits"] if r["shots"] == shots and r["chat"] is None):
            assert scored[(ref["subject"], ref["id"])] == pytest.approx(ref["letter_logits"], abs=1e-4)

def test_the_alibi_model_generates_with_its_cache_what_full_forwards_give(baichuan2_13b_loaded):
    import torch

    model, tokenizer = baichuan2_13b_loaded.model, baichuan2_13b_loaded.tokenizer
    ids = torch.tensor([tokenizer("以下是关于开发运维领域的单项选择题")["input_ids"]])
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:].tolist()
        seq, expected = ids, []
        for _ in range(4):
            nxt = int(model(seq).logits[0, -1].argmax())
            expected.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    assert generated == expected


# --- the vLLM backend -------------------------------------------------------------------------


class _FakeVllm:
    """vLLM's `LLM`, `SamplingParams` and `TokensPrompt` as the backend calls them, on CPU: it loads
    what it is given with transformers' own classes (no remote code, as vLLM's native classes need)
    and returns the four letters' processed log-probabilities, as vLLM does with allowed_token_ids."""

    def __init__(self):
        from types import ModuleType, SimpleNamespace

        fake = self
        self.calls = []

        class LLM:
            def __init__(self, model, **kwargs):
                from transformers import AutoConfig, AutoModelForCausalLM

                fake.calls.append((model, kwargs))
                config = AutoConfig.from_pretrained(model)  # vLLM reads config.json the same way
                self.model = AutoModelForCausalLM.from_pretrained(model, dtype="float32").eval()
                self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(dtype="torch.float32",
                                                                               architectures=config.architectures))

            def generate(self, prompts, params, use_tqdm=True):
                import torch

                outputs = []
                for prompt, p in zip(prompts, params):
                    with torch.no_grad():
                        logits = self.model(torch.tensor([prompt["prompt_token_ids"]])).logits[0, -1]
                    allowed = logits[p.allowed_token_ids].double()
                    logprobs = (allowed - torch.logsumexp(allowed, 0)).tolist()
                    step = {t: SimpleNamespace(logprob=v) for t, v in zip(p.allowed_token_ids, logprobs)}
                    outputs.append(SimpleNamespace(outputs=[SimpleNamespace(logprobs=[step])]))
                return outputs

        self.module = ModuleType("vllm")
        self.module.LLM = LLM
        self.module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
        self.module.TokensPrompt = lambda **kw: dict(**kw)


@pytest.mark.parametrize(("family", "fmt", "expected", "architecture"), [
    ("qwen1", "qwen", EXPECTED, "Qwen2ForCausalLM"),
    ("internlm", "internlm", INTERNLM_EXPECTED, "LlamaForCausalLM"),
    ("baichuan2", "baichuan", BAICHUAN2_EXPECTED, "LlamaForCausalLM"),
])
def test_the_vllm_backend_gets_the_native_conversion_and_token_ids_only(family, fmt, expected, architecture, tmp_path, cache,
                                                                          data_dir, monkeypatch):
    import math
    import sys

    from harness.cli import main

    fake = _FakeVllm()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    source = _write_checkpoint(tmp_path / f"tiny-{family}", family)
    out = tmp_path / "run"
    assert main(["eval", "--model", str(source), "--backend", "vllm", "--data-dir", str(data_dir), "--output", str(out),
                 "--no-progress", "--shots", "0", "--limit", "2"]) == 0
    [(model, kwargs)] = fake.calls
    assert Path(model).parent == cache / "models" and kwargs["trust_remote_code"] is False
    assert kwargs["skip_tokenizer_init"] is True and "tokenizer" not in kwargs and kwargs["revision"] is None
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["architecture"] == architecture and results["model"]["source_format"] == fmt
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    scored = {(line["subject"], line["id"]): line["logits"] for line in lines}
    refs = [r for r in expected["logits"] if r["shots"] == 0 and r["chat"] is None]
    assert len(refs) == len(scored) == 12
    for ref in refs:  # the original model's letter logits, less their log-sum-exp: vLLM's processed log-probabilities
        lse = math.log(sum(math.exp(v) for v in ref["letter_logits"]))
        assert scored[(ref["subject"], ref["id"])] == pytest.approx([v - lse for v in ref["letter_logits"]], abs=1e-4)


def test_the_vllm_backend_gives_baichuan2_13b_to_vllms_own_class_only_with_trust_remote_code(tmp_path, cache, data_dir,
                                                                                              monkeypatch, capsys):
    import sys

    from harness.cli import main

    fake = _FakeVllm()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    source = _write_checkpoint(tmp_path / "tiny-baichuan2-13b", "baichuan2-13b")
    args = ["eval", "--model", str(source), "--backend", "vllm", "--data-dir", str(data_dir), "--no-progress",
            "--shots", "0", "--limit", "1"]
    assert main([*args, "--output", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Baichuan2-13B" in err[0] and "--trust-remote-code" in err[0] and "--backend hf" in err[0]
    assert fake.calls == [] and not (tmp_path / "refused").exists()

    captured = []

    def refuse_remote_code(model, **kwargs):  # the original files' configuration code is vLLM's to run, not ours
        captured.append((model, kwargs))
        raise RuntimeError("vLLM stand-in: stop here")

    monkeypatch.setattr(fake.module, "LLM", refuse_remote_code)
    assert main([*args, "--trust-remote-code", "--output", str(tmp_path / "trusted")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vLLM stand-in: stop here" in err[0] and not (tmp_path / "trusted").exists()
    [(model, kwargs)] = captured
    assert model == str(source.resolve()) and kwargs["trust_remote_code"] is True and kwargs["skip_tokenizer_init"] is True



# --- harness chat -----------------------------------------------------------------------------


def test_harness_chat_answers_from_a_qwen1_checkpoint_in_model_chats_layout(qwen1_dir, cache, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    assert main(["chat", "--model", str(qwen1_dir), "--prompt", "问", "--max-new-tokens", "2", "--show-prompt"]) == 0
    err = capsys.readouterr().err
    assert "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n问<|im_end|>\n<|im_start|>assistant\n" in err


def test_harness_chat_with_the_tokenizer_template_speaks_internlms_turns(tmp_path, cache, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    path = _write_checkpoint(tmp_path / "tiny-internlm", "internlm")
    assert main(["chat", "--model", str(path), "--template", "tokenizer", "--prompt", "问", "--max-new-tokens", "2",
                 "--show-prompt"]) == 0
    assert "<s><|User|>:问<eoh>\n<|Bot|>:" in capsys.readouterr().err


def test_harness_chat_answers_from_a_baichuan2_13b_checkpoint_in_its_reserved_token_turns(tmp_path, cache, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    path = _write_checkpoint(tmp_path / "tiny-baichuan2-13b", "baichuan2-13b")
    assert main(["chat", "--model", str(path), "--template", "tokenizer", "--prompt", "问", "--max-new-tokens", "2",
                 "--show-prompt"]) == 0
    assert "<reserved_106>问<reserved_107>" in capsys.readouterr().err


def test_harness_chat_speaks_the_familys_own_format_unless_told_and_its_banner_says_which(tmp_path, cache, monkeypatch, capsys):
    import builtins
    import io

    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    path = _write_checkpoint(tmp_path / "tiny-internlm", "internlm")
    assert main(["chat", "--model", str(path), "--prompt", "问", "--max-new-tokens", "2", "--show-prompt"]) == 0
    assert "<s><|User|>:问<eoh>\n<|Bot|>:" in capsys.readouterr().err
    assert main(["chat", "--model", str(path), "--template", "chatml", "--prompt", "问", "--max-new-tokens", "2",
                 "--show-prompt"]) == 0
    assert "<|im_start|>user\n问<|im_end|>" in capsys.readouterr().err

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def end_of_input(*_):
        raise EOFError

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr(builtins, "input", end_of_input)
    assert main(["chat", "--model", str(path)]) == 0
    assert "template tokenizer (internlm format: its model.chat turns)" in capsys.readouterr().err


# --- a Hub id in a card format ----------------------------------------------------------------

HUB_COMMIT = "0123456789abcdef" * 2 + "01234567"  # what the fake Hub's revisions resolve to
_WEIGHT_PATTERNS = ["model.safetensors.index.json", "pytorch_model.bin.index.json", "*.safetensors", "*.bin"]


class _FakeHub:
    """huggingface_hub's hf_hub_download and snapshot_download over local directories (repo id →
    the repo's files), fetching into a cache laid out as the real one (`.../snapshots/<commit>/`):
    no network. `offline`: a snapshot of files not fetched yet fails as the real one does offline."""

    def __init__(self, root: Path, repos: dict[str, Path]):
        self.root, self.repos = root, repos
        self.files: list[tuple[str, str, str | None]] = []  # (repo, filename, revision) per hf_hub_download
        self.snapshots: list[dict] = []  # the keyword arguments of each snapshot_download
        self.cache_dirs: list[str | None] = []  # the cache_dir each hf_hub_download was given
        self.offline = False

    def snapshot_dir(self, repo_id: str) -> Path:
        return self.root / f"models--{repo_id.replace('/', '--')}" / "snapshots" / HUB_COMMIT

    def _fetch(self, repo_id: str, filename: str, offline: bool = False) -> Path:
        target = self.snapshot_dir(repo_id) / filename
        if not target.is_file():
            from huggingface_hub.errors import LocalEntryNotFoundError

            if offline:
                raise LocalEntryNotFoundError(f"{filename} is not cached and outgoing traffic has been disabled")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.repos[repo_id] / filename, target)
        return target

    def hf_hub_download(self, repo_id, filename, *, revision=None, **kwargs):
        from huggingface_hub.errors import EntryNotFoundError

        self.files.append((repo_id, filename, revision))
        self.cache_dirs.append(kwargs.pop("cache_dir", None))
        assert not kwargs and revision in (None, "main", "v1.0", HUB_COMMIT)
        if not (self.repos[repo_id] / filename).is_file():
            raise EntryNotFoundError(f"404 Client Error: Entry Not Found for url: https://huggingface.co/{repo_id}/{filename}")
        return str(self._fetch(repo_id, filename))

    def snapshot_download(self, repo_id, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        self.snapshots.append(kwargs)
        files = sorted(f.name for f in self.repos[repo_id].iterdir() if f.is_file())
        for name in filter_repo_objects(files, allow_patterns=kwargs.get("allow_patterns")):
            self._fetch(repo_id, name, self.offline)
        return str(self.snapshot_dir(repo_id))


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """`install({repo id: directory})` → the _FakeHub that huggingface_hub's downloads now are."""
    import huggingface_hub

    def install(repos: dict[str, Path]) -> _FakeHub:
        hub = _FakeHub(tmp_path / "hf-cache", repos)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
        return hub

    return install


def _samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_hub_id_in_qwen1_format_is_scored_natively_as_its_directory_is(qwen1_dir, cache, data_dir, tmp_path, monkeypatch, fake_hub):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    hub = fake_hub({"Qwen/Qwen-7B": qwen1_dir})
    runs = {"local": (str(qwen1_dir), tmp_path / "local"), "hub": ("Qwen/Qwen-7B", tmp_path / "hub")}
    for model, out in runs.values():
        assert main(["eval", "--model", model, "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                     "--shots", "0", "--limit", "1"]) == 0
    assert _samples(runs["hub"][1]) == _samples(runs["local"][1])  # the same logits, predictions and scores
    record = json.loads((runs["hub"][1] / "results.json").read_text(encoding="utf-8"))["model"]
    assert record["name"] == record["path"] == record["tokenizer"] == "Qwen/Qwen-7B"
    assert record["revision"] == HUB_COMMIT  # the commit its config.json came from, the snapshot pinned to it
    assert record["source_format"] == "qwen" and record["converter"] == qwen1.CONVERTER
    assert record["architecture"] == "Qwen2ForCausalLM" and record["trust_remote_code"] is False
    assert [s["allow_patterns"] for s in hub.snapshots] == [["config.json", "qwen.tiktoken", *_WEIGHT_PATTERNS]]


def test_a_hub_snapshot_holds_only_what_conversion_reads_at_the_revision_of_its_config(tmp_path, loaded, cache, fake_hub, subject_data):
    import torch

    from harness.models import ModelSpec, load_model, load_tokenizer

    repo = _write_checkpoint(tmp_path / "repo", shards=3)
    (repo / "README.md").write_text("the model card", encoding="utf-8")
    hub = fake_hub({"org/sharded-qwen": repo})
    spec = ModelSpec(model="org/sharded-qwen", revision="v1.0", device="cpu")
    assert load_tokenizer(spec, cache)("答案：A")["input_ids"] == [102349, 5122, 32]
    assert hub.files == [("org/sharded-qwen", "config.json", "v1.0"), ("org/sharded-qwen", "qwen.tiktoken", HUB_COMMIT)]
    assert hub.snapshots == []  # a tokenizer fetches no weights

    model = load_model(spec, cache)
    assert hub.snapshots == [{"revision": HUB_COMMIT, "allow_patterns": ["config.json", "qwen.tiktoken", *_WEIGHT_PATTERNS]}]
    shards = [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    fetched = sorted(f.name for f in hub.snapshot_dir("org/sharded-qwen").iterdir())
    assert fetched == sorted(["config.json", "qwen.tiktoken", "model.safetensors.index.json", *shards])
    assert {"modeling_qwen.py", "tokenization_qwen.py", "README.md"} <= {f.name for f in repo.iterdir()}  # left on the Hub
    assert (model.info.name, model.info.path, model.info.revision) == ("org/sharded-qwen", "org/sharded-qwen", "v1.0")
    assert model.info.extra == {"source_format": "qwen", "converter": qwen1.CONVERTER}
    _, prompt = next(_fixture_prompts(subject_data))
    assert torch.equal(_last_logits(model.model, model.tokenizer, prompt)[1], _last_logits(loaded.model, loaded.tokenizer, prompt)[1])


@pytest.mark.parametrize(("family", "repo_id", "fmt"), [
    ("internlm", "internlm/internlm-7b", "internlm"),
    ("baichuan2", "baichuan-inc/Baichuan2-7B-Base", "baichuan"),
])
def test_hub_ids_of_the_other_card_formats_load_natively_too(tmp_path, cache, fake_hub, family, repo_id, fmt):
    from harness.models import ModelSpec, load_model

    hub = fake_hub({repo_id: _write_checkpoint(tmp_path / family, family)})
    model = load_model(ModelSpec(model=repo_id, device="cpu"), cache)
    assert type(model.model).__name__ == "LlamaForCausalLM" and model.info.extra["source_format"] == fmt
    assert [s["allow_patterns"] for s in hub.snapshots] == [["config.json", "tokenizer.model", *_WEIGHT_PATTERNS]]
    assert (model.info.path, model.info.revision) == (repo_id, HUB_COMMIT)


def test_harness_train_starts_from_a_hub_id_in_qwen1_format_through_its_converted_copy(qwen1_dir, cache, tmp_path, monkeypatch, fake_hub):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    hub = fake_hub({"Qwen/Qwen-7B": qwen1_dir})
    out = tmp_path / "lora"
    assert main(["train", "--stage", "sft", "--model_name_or_path", "Qwen/Qwen-7B", "--model_revision", "main",
                 "--dataset", "devops_qa", "--dataset_dir", str(ROOT / "training" / "data"), "--template", "chatml",
                 "--finetuning_type", "lora", "--output_dir", str(out), "--cache_dir", str(tmp_path / "hf-cache"),
                 "--report_to", "none", "--per_device_train_batch_size", "4", "--max_steps", "2", "--seed", "0"]) == 0
    assert hub.files[0] == ("Qwen/Qwen-7B", "config.json", "main")  # the format, read from config.json alone
    hf_cache = str(tmp_path / "hf-cache")  # training's --cache_dir is where Hub files go
    assert set(hub.cache_dirs) == {hf_cache}
    assert hub.snapshots == [{"revision": HUB_COMMIT, "allow_patterns": ["config.json", "qwen.tiktoken", *_WEIGHT_PATTERNS],
                              "cache_dir": hf_cache}]
    base = Path(json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"])
    assert base.parent == cache / "models" and base.name.startswith("qwen-")  # trained on the converted copy
    record = json.loads((out / "harness_train.json").read_text())
    assert record["model"]["converted_from"] == {"model_name_or_path": "Qwen/Qwen-7B", "source_format": "qwen",
                                                 "converter": qwen1.CONVERTER, "revision": HUB_COMMIT}


def test_harness_train_from_a_hub_id_it_cannot_fetch_says_so_in_one_line(tmp_path, cache, monkeypatch, fake_hub, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "README.md").write_text("no model here", encoding="utf-8")
    fake_hub({"org/missing": tmp_path / "repo"})  # a Hub repo without a config.json
    assert main(["train", "--stage", "sft", "--model_name_or_path", "org/missing", "--dataset", "devops_qa",
                 "--dataset_dir", str(ROOT / "training" / "data"), "--template", "chatml", "--output_dir", str(tmp_path / "o"),
                 "--report_to", "none"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "org/missing" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o").exists()


def test_a_hub_id_in_no_card_format_keeps_transformers_own_loading(tiny_model, cache, fake_hub, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models import ModelSpec, _Source, load_model, resolve_source

    hub = fake_hub({"org/tiny-qwen2": tiny_model})
    asked = []

    def from_the_hub(original):  # transformers' own Hub loading, served from the local directory
        def from_pretrained(name, *args, revision=None, **kwargs):
            asked.append((name, revision))
            return original(str(tiny_model), *args, **kwargs)
        return from_pretrained

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", from_the_hub(AutoTokenizer.from_pretrained))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_the_hub(AutoModelForCausalLM.from_pretrained))
    spec = ModelSpec(model="org/tiny-qwen2", revision="main", device="cpu")
    assert resolve_source(spec, cache) == _Source("org/tiny-qwen2", None, None, "org/tiny-qwen2", False)
    model = load_model(spec, cache)
    assert asked == [("org/tiny-qwen2", "main")] * 2  # tokenizer, then weights: from_pretrained with the Hub id
    assert hub.snapshots == [] and {f for _, f, _ in hub.files} == {"config.json"}
    assert (model.info.path, model.info.revision, model.info.extra) == ("org/tiny-qwen2", "main", {})


def _hub_error(repo: Path | None, offline_weights: bool, tmp_path, data_dir, fake_hub, capsys) -> str:
    from harness.cli import main

    if repo is not None:
        fake_hub({"org/model": repo}).offline = offline_weights
    out = tmp_path / "run"
    code = main(["eval", "--model", "org/model", "--data-dir", str(data_dir), "--output", str(out), "--no-progress", "--limit", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "org/model" in err and not out.exists()
    return err


def test_a_hub_id_with_nothing_cached_while_offline_is_one_line(tmp_path, data_dir, fake_hub, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    err = _hub_error(None, False, tmp_path, data_dir, fake_hub, capsys)  # the real huggingface_hub, offline
    assert "no copy of config.json in the local Hub cache, and HF_HUB_OFFLINE is set" in err


def test_a_card_format_hub_id_whose_weights_cannot_be_fetched_is_one_line(qwen1_dir, tmp_path, data_dir, fake_hub, capsys):
    err = _hub_error(qwen1_dir, True, tmp_path, data_dir, fake_hub, capsys)  # config and vocabulary cached only
    assert f"no copy of its weights at revision {HUB_COMMIT} in the local Hub cache" in err


def test_a_hub_repo_without_config_json_is_one_line(tmp_path, data_dir, fake_hub, capsys):
    repo = tmp_path / "gguf-repo"
    repo.mkdir()
    (repo / "model.gguf").write_bytes(b"GGUF")
    err = _hub_error(repo, False, tmp_path, data_dir, fake_hub, capsys)
    assert "the Hub repo has no config.json" in err and "--gguf-file" in err


@pytest.mark.parametrize(("text", "kind"), [("[]", "not an array"), ("null", "not null")])
def test_a_hub_config_that_is_no_json_object_is_one_line(tmp_path, data_dir, fake_hub, capsys, text, kind):
    repo = tmp_path / "odd-repo"
    repo.mkdir()
    (repo / "config.json").write_text(text, encoding="utf-8")
    err = _hub_error(repo, False, tmp_path, data_dir, fake_hub, capsys)
    assert "config.json must hold a JSON object" in err and kind in err


# --- on a CUDA device (skipped where there is none; run on a GPU machine) -----------------------


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["qwen1", "internlm", "baichuan2", "baichuan2-13b"])
def test_a_card_checkpoint_scores_on_cuda_with_its_prefix_cache_as_the_original_does(family, tmp_path, cache, data_dir, monkeypatch):
    """The native conversion moved to a GPU: float32 letter logits, batched with the shared prefix
    cached, within 1e-4 of the original code's on CPU; bfloat16 picks the same letters where the
    float32 margin is clear of bfloat16's rounding."""
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    expected = _FAMILY[family][0]
    path = _write_checkpoint(tmp_path / f"tiny-{family}", family, shards=2)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        assert main(["eval", "--model", str(path), "--device", "cuda", "--dtype", dtype, "--data-dir", str(data_dir),
                     "--output", str(out), "--no-progress", "--shots", "0", "--shots", "5", "--limit", "2"]) == 0
        for shots in (0, 5):
            results = json.loads((out / f"shots-{shots}" / "results.json").read_text())
            assert results["model"]["device"].startswith("cuda") and results["model"]["dtype"] == dtype
            assert results["model"]["source_format"] == expected["saved_config"]["model_type"]
            lines = [json.loads(line) for line in (out / f"shots-{shots}" / "samples.jsonl").read_text().splitlines()]
            runs[dtype, shots] = {(line["subject"], line["id"]): line for line in lines}
    for ref in (r for r in expected["logits"] if r["chat"] is None):
        key, letters = (ref["subject"], ref["id"]), ref["letter_logits"]
        assert runs["float32", ref["shots"]][key]["logits"] == pytest.approx(letters, abs=1e-4)
        ranked = sorted(letters, reverse=True)
        if ranked[0] - ranked[1] > 0.05 * max(1.0, abs(ranked[0])):  # clear of bfloat16's rounding
            assert runs["bfloat16", ref["shots"]][key]["pred"] == "ABCD"[letters.index(ranked[0])]
