"""Chat templates render exactly LLaMA-Efficient-Tuning's `default` and `chatml` text."""

from __future__ import annotations

import pytest

from harness.conversation import TEMPLATES, get_template
from harness.errors import HarnessError

DEFAULT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_default_template_prompt_is_system_line_then_human_assistant():
    assert get_template("default").render("什么是持续集成？") == (
        DEFAULT_SYSTEM + "\nHuman: 什么是持续集成？\nAssistant: "
    )


def test_chatml_template_prompt_has_system_user_and_open_assistant_turn():
    assert get_template("chatml").render("什么是持续集成？") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n什么是持续集成？<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_history_turns_are_closed_by_im_end_and_joined_by_newline():
    history = [("q1", "r1"), ("q2", "r2")]
    assert get_template("chatml").render("q3", history) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\nr1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\nr2<|im_end|>\n"
        "<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_history_responses_end_with_the_tokenizers_eos():
    text = get_template("default").render("q2", [("q1", "r1")], eos_token="</s>")
    assert text == DEFAULT_SYSTEM + "\nHuman: q1\nAssistant: r1</s>\nHuman: q2\nAssistant: "


def test_a_given_system_text_replaces_the_default_one():
    assert get_template("chatml").render("q", system="你是运维专家。").startswith(
        "<|im_start|>system\n你是运维专家。<|im_end|>\n<|im_start|>user\nq"
    )
    assert get_template("default").render("q", system="Be brief.") == "Be brief.\nHuman: q\nAssistant: "


def test_prompts_give_the_text_before_each_response():
    prompts = get_template("default").prompts("q2", [("q1", "r1")])
    assert prompts == [DEFAULT_SYSTEM + "\nHuman: q1\nAssistant: ", "\nHuman: q2\nAssistant: "]


def test_stop_words_and_response_ends():
    assert TEMPLATES["chatml"].stop_words == ("<|im_end|>",)
    assert TEMPLATES["chatml"].response_end("<|endoftext|>") == "<|im_end|>"
    assert TEMPLATES["default"].stop_words == ()
    assert TEMPLATES["default"].response_end("<|endoftext|>") == "<|endoftext|>"


def test_braces_in_user_text_are_kept_verbatim():
    assert "kubectl get pods -o jsonpath='{.items[*].metadata.name}'" in get_template("chatml").render(
        "kubectl get pods -o jsonpath='{.items[*].metadata.name}'"
    )


def test_unknown_template_names_the_choices():
    with pytest.raises(HarnessError, match="unknown template 'qwen'; choose one of default, chatml"):
        get_template("qwen")
