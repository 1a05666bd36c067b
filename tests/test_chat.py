"""`harness chat`: multi-turn prompts laid out exactly, answers that end where the template says,
the same answers every time, and the interactive session through stdin and a pseudo-terminal.

Real tiny models throughout. Where a test needs a model that says a given token, a tiny Llama is
taught to: its output row for that token is set to a scaled copy of the row of the token it would
have said at that step, so it says the same thing up to there and then that token.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.chat import Conversation, Decoding, Stops, render_prompt, stops_for
from harness.cli import main
from harness.conversation import get_template
from harness.errors import HarnessError
from harness.models import ModelSpec, load_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QUERY = "什么是持续集成？"
CHATML_TOKENIZER_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m.role != 'system' %}"
    "<|im_start|>system\nYou are a DevOps assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load(path: Path, tmp_path_factory):
    return load_model(ModelSpec(str(path), device="cpu"), tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def qwen(tiny_model, tmp_path_factory):
    return load(tiny_model, tmp_path_factory)


def conversation(loaded, template="chatml", **decoding) -> Conversation:
    settings = Decoding(**{"max_new_tokens": 8, **decoding})
    return Conversation(loaded.model, loaded.tokenizer, get_template(template) if template else None, decoding=settings)


def greedy_tokens(model, ids, n: int) -> list[int]:
    """What the model says after `ids`, n tokens, with nothing to stop it."""
    ids, said = torch.tensor([list(ids)]), []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(ids).logits[0, -1].argmax())
            said.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return said


def teach_to_say(loaded, out: Path, token: int, prompt_ids, at: int) -> list[int]:
    """Save a copy of `loaded` (untied output layer) that says `token` as its answer's token `at`
    after `prompt_ids`; return what the original says there."""
    model, said = loaded.model, greedy_tokens(loaded.model, prompt_ids, at + 1)
    with torch.no_grad():
        original = model.lm_head.weight[token].clone()
        model.lm_head.weight[token] = 1.05 * model.lm_head.weight[said[at]]
        taught = greedy_tokens(model, prompt_ids, at + 1)
        model.save_pretrained(out)
        model.lm_head.weight[token] = original
    loaded.tokenizer.save_pretrained(out)
    assert taught == said[:at] + [token], "the tiny model has a near-tie at an earlier step; pick another `at`"
    return said


# --- the prompt a turn is asked with --------------------------------------------------------------


def test_chatml_second_prompt_carries_the_first_turn_closed_by_im_end(qwen):
    chat = conversation(qwen, "chatml")
    first = chat.ask(QUERY)
    second = chat.ask("继续")
    assert first.prompt.text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{QUERY}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert second.prompt.text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{QUERY}<|im_end|>\n<|im_start|>assistant\n{first.answer}<|im_end|>\n"
        "<|im_start|>user\n继续<|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_second_prompt_carries_the_first_turn_closed_by_eos(qwen):
    chat = conversation(qwen, "default")
    first = chat.ask(QUERY)
    second = chat.ask("继续")
    assert first.prompt.text == f"{DEFAULT_SYSTEM}\nHuman: {QUERY}\nAssistant: "
    assert second.prompt.text == (
        f"{DEFAULT_SYSTEM}\nHuman: {QUERY}\nAssistant: {first.answer}<|endoftext|>\nHuman: 继续\nAssistant: "
    )


@pytest.mark.parametrize("template", ["chatml", "default"])
def test_the_model_is_given_the_rendered_text_token_for_token(qwen, template):
    chat = conversation(qwen, template)
    chat.ask(QUERY)
    prompt = chat.render("继续")
    assert qwen.tokenizer.decode(list(prompt.ids), skip_special_tokens=False) == prompt.text
    assert prompt.ids.count(qwen.tokenizer.convert_tokens_to_ids(get_template(template).response_end("<|endoftext|>"))) >= 1


def test_prompt_ids_are_an_sft_examples_ids_up_to_the_last_response(qwen):
    from datasets import Dataset

    from training.preprocess import IGNORE_INDEX, supervised_examples

    history = [("什么是 Docker？", "一种容器。"), ("它和虚拟机有什么不同？", "它共享内核。")]
    row = {"instruction": QUERY, "output": "持续集成是频繁合并代码并自动构建测试。", "history": history}
    columns = {"prompt": "instruction", "query": None, "response": "output", "history": "history", "system": None}
    example = supervised_examples(
        Dataset.from_list([row]), columns, qwen.tokenizer, get_template("chatml"), 1024, 1024, name="one"
    )[0]
    ids = render_prompt(qwen.tokenizer, get_template("chatml"), QUERY, history).ids
    assert list(ids) == example["input_ids"][: len(ids)]
    assert example["labels"][len(ids) - 1] == IGNORE_INDEX and example["labels"][len(ids)] != IGNORE_INDEX


def test_a_bos_the_tokenizer_adds_leads_the_prompt_once(tiny_tokenizer_dir):
    # As Gemma's: BOS comes from the post-processor while `add_bos_token` says False.
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    prompt = render_prompt(tokenizer, get_template("default"), "q", [("q0", "r0")])
    assert prompt.ids[0] == tokenizer.bos_token_id and prompt.ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(list(prompt.ids)) == "<s>" + prompt.text


def test_a_given_system_text_replaces_the_templates(qwen):
    chat = Conversation(qwen.model, qwen.tokenizer, get_template("chatml"), system="你是运维专家。")
    assert chat.render("q").text.startswith("<|im_start|>system\n你是运维专家。<|im_end|>\n<|im_start|>user\nq")


@pytest.fixture(scope="module")
def templated_model(tiny_model, tmp_path_factory):
    """The tiny checkpoint, its tokenizer given a ChatML chat template of its own."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-with-template")
    for f in tiny_model.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = CHATML_TOKENIZER_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def test_tokenizer_template_renders_the_history_and_stops_at_its_turn_end(templated_model, tmp_path_factory):
    loaded = load(templated_model, tmp_path_factory)
    chat = conversation(loaded, template=None)
    first = chat.ask(QUERY)
    assert chat.render("继续").text == (
        "<|im_start|>system\nYou are a DevOps assistant.<|im_end|>\n"
        f"<|im_start|>user\n{QUERY}<|im_end|>\n<|im_start|>assistant\n{first.answer}<|im_end|>\n"
        "<|im_start|>user\n继续<|im_end|>\n<|im_start|>assistant\n"
    )
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in chat.stops.ids


# --- where an answer ends ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, token, stops",
    [
        ("chatml", "<|im_end|>", True),
        ("chatml", "<|endoftext|>", True),
        ("default", "<|endoftext|>", True),
        ("default", "<|im_end|>", False),  # not the default template's stop word: skipped, not an end
    ],
)
def test_an_answer_ends_at_the_templates_stop_word_or_eos(template, token, stops, tiny_model_factory, tmp_path_factory):
    llama = load(tiny_model_factory("llama"), tmp_path_factory)
    token_id = llama.tokenizer.convert_tokens_to_ids(token)
    prompt = render_prompt(llama.tokenizer, get_template(template), QUERY)
    out = tmp_path_factory.mktemp("taught")
    said = teach_to_say(llama, out, token_id, prompt.ids, at=3)
    reply = conversation(load(out, tmp_path_factory), template, max_new_tokens=12).ask(QUERY)
    before = llama.tokenizer.decode(said[:3], skip_special_tokens=True)
    if stops:
        assert (reply.answer, reply.finish, reply.new_tokens) == (before, "stop", 4)
    else:
        assert reply.answer.startswith(before) and (reply.finish, reply.new_tokens) == ("length", 12)


def test_a_stop_word_of_several_tokens_ends_the_answer_and_is_never_streamed(qwen):
    prompt = render_prompt(qwen.tokenizer, get_template("default"), QUERY)
    said = greedy_tokens(qwen.model, prompt.ids, 12)
    decode = qwen.tokenizer.decode
    def usable(i):  # a clean two-token word, first found where the model says it
        word, text = decode(said[i : i + 2]), decode(said[: i + 2])
        multi = len(qwen.tokenizer(word, add_special_tokens=False)["input_ids"]) > 1
        return word.strip() and "\ufffd" not in text and multi and text.find(word) == len(decode(said[:i]))

    at = next(i for i in range(2, 10) if usable(i))
    word = decode(said[at : at + 2])
    probe = replace(get_template("default"), name="probe", stop_words=(word,))
    streamed = io.StringIO()
    chat = Conversation(qwen.model, qwen.tokenizer, probe, decoding=Decoding(max_new_tokens=12))
    reply = chat.ask(QUERY, stream=streamed)
    assert chat.stops.words == (word,)
    assert (reply.answer, reply.finish, reply.new_tokens) == (decode(said[:at]), "stop", at + 2)
    assert streamed.getvalue() == reply.answer


def test_a_tail_that_may_still_become_a_stop_word_is_held_back():
    stops = Stops(frozenset(), ("<|im_end|>",))
    assert stops.unsettled("答案<|im") == 4
    assert stops.unsettled("答案<") == 1
    assert stops.unsettled("答案") == 0
    assert stops.unsettled("答\ufffd\ufffd") == 2  # a character whose bytes are still being generated


def test_eos_ids_of_the_checkpoints_generation_config_end_answers_too(qwen):
    qwen.model.generation_config.eos_token_id = [0, 7]
    try:
        assert {0, 7, qwen.tokenizer.convert_tokens_to_ids("<|im_end|>")} <= stops_for(
            qwen.tokenizer, qwen.model, get_template("chatml")
        ).ids
    finally:
        qwen.model.generation_config.eos_token_id = 0


def test_streamed_text_is_the_answer(qwen):
    streamed = io.StringIO()
    reply = conversation(qwen, "chatml", max_new_tokens=40).ask(QUERY, stream=streamed)
    assert streamed.getvalue() == reply.answer and reply.new_tokens == 40


# --- the same answers every time -------------------------------------------------------------------


def test_greedy_answers_are_the_same_every_time(qwen):
    runs = [[(r.answer, r.finish) for r in map(conversation(qwen).ask, [QUERY, "继续"])] for _ in range(2)]
    assert runs[0] == runs[1]


def test_sampling_repeats_with_its_seed_and_changes_with_another(qwen):
    def sample(seed):
        return conversation(qwen, max_new_tokens=16, temperature=1.0, seed=seed).ask(QUERY).answer

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_reset_forgets_earlier_turns(qwen):
    chat = conversation(qwen)
    fresh = chat.render("继续")
    chat.ask(QUERY)
    chat.reset()
    assert chat.history == [] and chat.render("继续") == fresh


def test_a_conversation_longer_than_the_context_says_to_reset(qwen):
    chat = conversation(qwen, max_new_tokens=100)
    qwen.model.config.max_position_embeddings = 64
    try:
        with pytest.raises(HarnessError, match=r"no room for an answer in the model's context of 64; /reset to start"):
            chat.ask(QUERY * 10)
        assert chat.history == []
        room = 64 - len(chat.render("q").ids)
        assert chat.ask("q").new_tokens == room
    finally:
        qwen.model.config.max_position_embeddings = 4096


# --- the command -------------------------------------------------------------------------------------


def test_prompt_mode_prints_each_answer_then_a_newline_the_same_every_run(tiny_model, qwen, capsys):
    argv = ["chat", "--model", str(tiny_model), "--prompt", QUERY, "--prompt", "继续", "--max-new-tokens", "8"]
    outputs = []
    for _ in range(2):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    chat = conversation(qwen)
    assert outputs[0] == outputs[1] == chat.ask(QUERY).answer + "\n" + chat.ask("继续").answer + "\n"


def test_jsonl_prints_one_parseable_line_per_answer(tiny_model, qwen, capsys):
    argv = ["chat", "--model", str(tiny_model), "--template", "default", "--jsonl", "--max-new-tokens", "8"]
    assert main([*argv, "--prompt", "第一行\n第二行", "--prompt", "继续"]) == 0
    lines = capsys.readouterr().out.splitlines()
    chat = conversation(qwen, "default")
    expected = [chat.ask("第一行\n第二行"), chat.ask("继续")]
    assert [json.loads(line) for line in lines] == [
        {"turn": i, "query": r.query, "answer": r.answer, "finish": r.finish, "new_tokens": r.new_tokens}
        for i, r in enumerate(expected, 1)
    ]


def test_show_prompt_writes_each_rendered_prompt_to_stderr(tiny_model, capsys):
    assert main(["chat", "--model", str(tiny_model), "--prompt", "q", "--max-new-tokens", "2", "--show-prompt"]) == 0
    err = capsys.readouterr().err
    assert err == (
        "--- prompt ---\n<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n\n--- end of prompt ---\n"
    )


def test_a_bfloat16_chat_on_a_cpu_without_bfloat16_matrix_instructions_says_float32_is_faster(
        tiny_model, capsys, cpu_has):
    cpu_has(bf16=False)
    argv = ["chat", "--model", str(tiny_model), "--prompt", "q", "--max-new-tokens", "2"]
    assert main([*argv, "--dtype", "bfloat16"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("harness chat: note: this CPU has no bfloat16 matrix instructions (AVX-512 BF16 or AMX)")
    assert "--dtype float32 is faster here" in err and out.endswith("\n")  # a note, and the answer all the same
    assert main(argv) == 0  # float32: nothing to say
    assert capsys.readouterr().err == ""


def test_a_lora_adapter_answers_as_with_harness_eval(tiny_model, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(tmp_path / "adapter")
    answers = []
    for model in (["--model", str(tiny_model)], ["--adapter", str(tmp_path / "adapter")], ["--model", str(tmp_path / "adapter")]):
        assert main(["chat", "--model", str(tiny_model), *model, "--prompt", QUERY, "--max-new-tokens", "8"]) == 0
        answers.append(capsys.readouterr().out)
    plain, with_adapter, adapter_as_model = answers
    assert with_adapter == adapter_as_model != plain


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "no such model directory or file: /nonexistent/model"),
        (["--template", "qwen"], "argument --template: invalid choice: 'qwen'"),
        (["--template", "tokenizer"], "has no chat template of its own; use --template chatml or --template default"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1"),
        (["--temperature", "-1"], "--temperature -1.0: must be 0 (greedy) or more"),
        (["--top-p", "0"], "--top-p 0.0: must be in (0, 1]"),
        (["--prompt", " "], "--prompt: a turn's text must not be empty"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message, tiny_model, capsys):
    argv = ["chat", "--model", str(tiny_model), *args]
    assert exit_code([*argv, "--prompt", "q"] if "--prompt" not in args else argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and captured.out == ""


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own mistakes
        return e.code


def test_exit_ends_the_session_and_blank_lines_are_not_turns(tiny_model, qwen, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"\n{QUERY}\n   \n/exit\n继续\n"))
    assert main(["chat", "--model", str(tiny_model), "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == conversation(qwen).ask(QUERY).answer + "\n"


def _run_chat(stdin: str, model: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness", "chat", "--model", str(model), *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def _shown_prompts(stderr: str) -> list[str]:
    return re.findall(r"--- prompt ---\n(.*?)\n--- end of prompt ---\n", stderr, flags=re.DOTALL)


def test_interactive_session_over_stdin_carries_history_resets_and_ends_at_end_of_input(tiny_model, qwen):
    done = _run_chat(f"{QUERY}\n继续\n/reset\n继续\n", tiny_model, "--max-new-tokens", "8", "--show-prompt")
    assert done.returncode == 0, done.stderr
    chat = conversation(qwen)
    first, second = chat.ask(QUERY), chat.ask("继续")
    fresh = conversation(qwen)
    third_prompt, third = fresh.render("继续").text, fresh.ask("继续")
    assert done.stdout == f"{first.answer}\n{second.answer}\n{third.answer}\n"
    assert _shown_prompts(done.stderr) == [first.prompt.text, second.prompt.text, third_prompt]
    assert QUERY in second.prompt.text and QUERY not in third_prompt
    assert "(history cleared)" in done.stderr


class Terminal:
    """`harness chat` on a pseudo-terminal: what a person at a terminal types and sees."""

    def __init__(self, *args: str):
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: stdin, stdout and stderr are the terminal
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "harness", "chat", *args])
        self.seen = b""

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def read_until(self, marker: str, timeout: float = 60) -> str:
        """Everything shown up to and including `marker`."""
        want, deadline = marker.encode(), time.monotonic() + timeout
        while want not in self.seen:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no {marker!r} on the terminal; it shows {self.seen.decode(errors='replace')!r}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise EOFError(f"the session ended before {marker!r}; it showed {self.seen.decode(errors='replace')!r}")
            self.seen = (self.seen + chunk).replace(b"\r\n", b"\n")  # the terminal's line ends
        cut = self.seen.index(want) + len(want)
        shown, self.seen = self.seen[:cut], self.seen[cut:]
        return shown.decode(errors="replace")

    def read_some(self, timeout: float = 60) -> None:
        """Wait until something more is shown."""
        if not self.seen and select.select([self.fd], [], [], timeout)[0]:
            self.seen += os.read(self.fd, 4096)

    def exit_code(self) -> int:
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


def test_interactive_session_in_a_terminal(tiny_model, qwen):
    term = Terminal("--model", str(tiny_model), "--max-new-tokens", "2000", "--show-prompt")
    assert "/reset clears the history, /exit or Ctrl-D ends" in term.read_until(">>> ")
    term.type("q1\n")
    term.read_until("--- end of prompt ---\n")
    term.read_some()  # the answer is being streamed: stop it
    term.type("\x03")
    assert "(answer stopped; it is not kept in the history)" in term.read_until(">>> ")
    term.type("继续\n")
    shown = term.read_until("--- end of prompt ---\n")
    assert conversation(qwen).render("继续").text in shown and "q1" not in shown
    term.read_some()
    term.type("\x03")
    term.read_until(">>> ")
    term.type("/reset\n")
    assert "(history cleared)" in term.read_until(">>> ")
    # Ctrl-C at the prompt drops the line and the session goes on. A person takes longer than this
    # to press it; CPython's readline misses a SIGINT that lands between the prompt and its wait.
    time.sleep(0.5)
    term.type("\x03")
    assert "(use /exit or Ctrl-D to leave)" in term.read_until(">>> ")
    term.type("\x04")
    assert term.exit_code() == 0


@pytest.mark.slow
def test_gemma_answers_two_prompts(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "harness", "chat", "--model", "gemma-3-270m", "--prompt", "你好", "--prompt", "继续",
         "--max-new-tokens", "16", "--show-prompt"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    second_prompt = _shown_prompts(done.stderr)[1]
    first = re.search(r"<\|im_start\|>assistant\n(.*)<\|im_end\|>\n<\|im_start\|>user\n继续<", second_prompt, re.DOTALL).group(1)
    assert done.stdout.startswith(first + "\n") and done.stdout.endswith("\n")
    assert first.strip() and done.stdout[len(first) + 1 : -1].strip()
