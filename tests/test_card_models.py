"""The model card's own checkpoints load natively: Qwen-1 (DevOps-Model, Qwen-7B/14B).

Compared against tests/fixtures/card_models/qwen1.json, written by make_fixtures.py with the
original remote code in its reference environment (transformers 4.33.3): the original
tokenizer's ids on every prompt the harness builds, model.chat's contexts, and the original
model's float32 logits on a tiny checkpoint that tiny_qwen1.py draws from a seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from harness.families import qwen1
from harness.prompts import CARD_EVAL_SYSTEM, PromptFormat, subject_prompts
from tasks import get_protocol, protocols

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "card_models"
QWEN1_FILES = ROOT.parent / "shared" / "models" / "qwen1"
EXPECTED = json.loads((FIXTURES / "qwen1.json").read_text(encoding="utf-8"))


def _tiny_qwen1_module():
    spec = importlib.util.spec_from_file_location("tiny_qwen1", FIXTURES / "tiny_qwen1.py")
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


@pytest.mark.parametrize("setting", sorted(EXPECTED["tokenizer"]))
def test_qwen1_tokenizer_ids_equal_the_original_on_all_574_prompts(tokenizer, all_prompts, setting):
    fmt, prompts = all_prompts[setting]
    expected = EXPECTED["tokenizer"][setting]
    conts = fmt.protocol.continuations()
    contexts = [p.rstrip() if fmt.protocol.move_trailing_whitespace else p for p in prompts]
    joined = [c + p[len(c):] + cont for c, p in zip(contexts, prompts) for cont in conts]
    ctx_ids = tokenizer(contexts, add_special_tokens=fmt.add_special_tokens)["input_ids"]
    assert ctx_ids[0] == expected["first_ids"]
    assert sum(map(len, ctx_ids)) == expected["tokens"]
    assert _digest(ctx_ids) == expected["contexts_sha256"]
    assert _digest(tokenizer(joined, add_special_tokens=fmt.add_special_tokens)["input_ids"]) == expected["joined_sha256"]


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
