"""Golden prompts: each protocol's exact text, as DESIGN.md §4 spells it, on real rows.

The expected strings are built here from the literal protocol text and the row's cells (read
independently with the csv module), never from the harness's own templates. Rows are chosen
for their traps: Kangxi radicals, line breaks inside cells, a question ending in a space.
"""

from __future__ import annotations

import csv
import hashlib

import pytest

from harness.cli import main
from harness.prompts import CHATML, PromptFormat, subject_prompts
from tasks import get_protocol

DEVOPS_INSTRUCTION = "以下是关于开发运维领域的单项选择题，请选出其中的正确答案。请直接输出选项。\n"


def _rows(data_dir, subject, split):
    layout = {
        "computer_science": ("cmmlu/{split}/computer_science.csv", "Question", "Answer"),
        "machine_learning": ("cmmlu/{split}/machine_learning.csv", "Question", "Answer"),
        "college_programming": ("ceval/{split}/college_programming_{split}.csv", "question", "answer"),
        "computer_network": ("ceval/{split}/computer_network_{split}.csv", "question", "answer"),
    }[subject]
    with (data_dir / layout[0].format(split=split)).open(encoding="utf-8", newline="") as f:
        return [
            {"q": r[layout[1]], "A": r["A"], "B": r["B"], "C": r["C"], "D": r["D"], "ans": r[layout[2]]}
            for r in csv.DictReader(f)
        ]


NAME_ZH = {"computer_science": "计算机科学", "machine_learning": "机器学习",
           "college_programming": "大学编程", "computer_network": "计算机网络"}
EVAL_SPLIT = {"computer_science": "test", "machine_learning": "test",
              "college_programming": "val", "computer_network": "val"}
BENCHMARK = {"computer_science": "cmmlu", "machine_learning": "cmmlu",
             "college_programming": "ceval", "computer_network": "ceval"}


def expected_devops(shots, q):
    def block(r):
        return (DEVOPS_INSTRUCTION + "问题：" + r["q"] + "\n" + "A. " + r["A"] + "\n" + "B. " + r["B"] + "\n"
                + "C. " + r["C"] + "\n" + "D. " + r["D"] + "\n" + "答案：")
    return "".join(block(s) + s["ans"] + "\n" for s in shots) + block(q)


def expected_cmmlu(subject, shots, q):
    def block(r):
        return ("题目：" + r["q"] + "\nA. " + r["A"] + "\nB. " + r["B"] + "\nC. " + r["C"] + "\nD. " + r["D"]
                + "\n答案是：")
    header = "以下是关于" + NAME_ZH[subject] + "的单项选择题，请直接给出正确答案的选项。\n\n"
    return header + "".join(block(s) + s["ans"] + "\n\n" for s in shots) + block(q)


def expected_ceval(subject, shots, q):
    def block(r):
        return r["q"] + "\nA. " + r["A"] + "\nB. " + r["B"] + "\nC. " + r["C"] + "\nD. " + r["D"] + "\n答案："
    header = "以下是中国关于" + NAME_ZH[subject] + "考试的单项选择题，请选出其中的正确答案。\n\n"
    return header + "".join(block(s) + s["ans"] + "\n\n" for s in shots) + block(q)


def expected_lm_eval(subject, shots, q):
    def block(r):
        return r["q"].strip() + "\nA. " + r["A"] + "\nB. " + r["B"] + "\nC. " + r["C"] + "\nD. " + r["D"] + "\n答案："
    if BENCHMARK[subject] == "cmmlu":
        header = "以下是关于" + NAME_ZH[subject] + "的单项选择题，请直接给出正确答案的选项。\n\n"
    else:
        header = "以下是中国关于" + NAME_ZH[subject] + "的单项选择题，请选出其中的正确答案。\n\n"
    return header + "\n\n".join([block(s) + " " + s["ans"] for s in shots] + [block(q)])


EXPECTED = {
    "devops": lambda subject, shots, q: expected_devops(shots, q),
    "cmmlu": expected_cmmlu,
    "ceval": expected_ceval,
    "lm-eval": expected_lm_eval,
}
CASES = [
    ("computer_science", 0),     # Kangxi radicals in question and options; Kangxi in 4 of 5 dev rows
    ("computer_science", 87),    # an option with a trailing space
    ("machine_learning", 1),     # a question ending in a space (lm-eval strips it)
    ("college_programming", 6),  # line breaks inside all four options; dev questions with code
    ("computer_network", 12),    # two identical options
]


@pytest.mark.parametrize("protocol", list(EXPECTED))
@pytest.mark.parametrize("subject,row", CASES)
@pytest.mark.parametrize("shots", [0, 1, 5])
def test_prompt_text_is_exactly_the_protocol(protocol, subject, row, shots, data_dir, subject_data):
    dev = _rows(data_dir, subject, "dev")
    q = _rows(data_dir, subject, EVAL_SPLIT[subject])[row]
    want = EXPECTED[protocol](subject, dev[:shots], q)
    fmt = PromptFormat(get_protocol(protocol), shots)
    got = subject_prompts(subject_data[subject], fmt)[row][1]
    assert got == want


def test_kangxi_radicals_reach_the_prompt_unchanged(subject_data):
    fmt = PromptFormat(get_protocol("devops"), 5)
    prompt = subject_prompts(subject_data["computer_science"], fmt)[0][1]
    assert "⽤⼀个字节" in prompt and "用一个字节" not in prompt
    assert prompt.count(DEVOPS_INSTRUCTION) == 6


@pytest.mark.parametrize("protocol", list(EXPECTED))
def test_harness_prompt_prints_the_prompt_and_nothing_else(protocol, data_dir, capsysbinary):
    q = _rows(data_dir, "college_programming", "val")[6]
    dev = _rows(data_dir, "college_programming", "dev")
    code = main(["prompt", "--subject", "college_programming", "--row", "6", "--shots", "5",
                 "--protocol", protocol, "--data-dir", str(data_dir)])
    out = capsysbinary.readouterr().out
    assert code == 0
    assert out == EXPECTED[protocol]("college_programming", dev[:5], q).encode("utf-8")


@pytest.mark.parametrize("subject", ["devops", "computer_network,machine_learning", "networking"])
def test_harness_prompt_takes_exactly_one_subject(subject, data_dir, capsys):
    code = main(["prompt", "--subject", subject, "--row", "0", "--data-dir", str(data_dir)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip() == f"harness prompt: error: --subject {subject!r}: give one subject key (e.g. computer_science, " \
        "computer_security, machine_learning, college_programming, computer_architecture, computer_network; " \
        "`harness tasks list` has all)"


def test_harness_prompt_chat_wraps_in_one_chatml_user_turn(data_dir, capsysbinary):
    q = _rows(data_dir, "computer_network", "val")[3]
    dev = _rows(data_dir, "computer_network", "dev")
    main(["prompt", "--subject", "computer_network", "--row", "3", "--shots", "5", "--chat",
          "--data-dir", str(data_dir)])
    out = capsysbinary.readouterr().out.decode("utf-8")
    assert out == (
        "<|im_start|>system\nyou are a helpful assistant<|im_end|>\n<|im_start|>user\n"
        + expected_devops(dev[:5], q)
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert CHATML.format(prompt="X") in out.replace(expected_devops(dev[:5], q), "X")


def test_protocol_versions_are_recorded_strings():
    for name in EXPECTED:
        assert get_protocol(name).id == f"{name}/v1"


# sha256 over every prompt of a protocol version (574 questions × 0..5 shots). A changed text
# with an unchanged version would make old and new scores look comparable: bump the version.
PINNED = {
    "devops/v1": "6c4cc73127d992ad40e1d2eaa5380050a67dcf4ff2dd0f3883cda3a461f23d7f",
    "cmmlu/v1": "8bcf26408358b3512afa6f46c54e5773df533431d7bec62c860d454eed9b1206",
    "ceval/v1": "c9d2399e02831052b025e043140f5a8f484f14cb6aeba5081dbb37be048c95ed",
    "lm-eval/v1": "a7b80fe85d55efbfb49520ef01dacb5c571b28d18feaea2a3b9df3c8ef4dd336",
}


@pytest.mark.parametrize("protocol", list(EXPECTED))
def test_every_prompt_of_a_protocol_version_is_pinned(protocol, subject_data):
    p = get_protocol(protocol)
    digest = hashlib.sha256()
    for shots in range(6):
        for d in subject_data.values():
            for _, text in subject_prompts(d, PromptFormat(p, shots)):
                digest.update(text.encode("utf-8") + b"\0")
    assert digest.hexdigest() == PINNED[p.id], f"{p.id} renders differently: bump its version"
