"""`harness gate` and `harness eval --gate-baseline` on real run records of tiny real models.

The baseline is a tiny Qwen2 trained here to answer the 574 zero-shot devops prompts (memorised:
a fixture, not a model); the damaged candidate is the same checkpoint with noise added to its
layers. Records edited by hand are rewritten through the record code so they stay consistent.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from math import comb
from pathlib import Path

import pytest
import yaml
from scipy.stats import binomtest

from harness.cli import build_parser, main
from harness.files import write_json
from harness.records import LETTERS, Sample, SampleLog, load_run, seal_run, summarize
from harness.stats import holm_adjust, mcnemar_exact

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = ["computer_science", "computer_security", "machine_learning",
            "college_programming", "computer_architecture", "computer_network"]


# --- tiny models that differ in quality --------------------------------------------------------


def train_to_answer(model_dir: Path, data_dir: Path, out: Path, epochs: int = 6) -> Path:
    """Train the checkpoint to put the gold letter first after each zero-shot devops prompt."""
    import torch

    from harness.evaluate import EvalSettings, prepare
    from harness.models import ModelSpec, load_model
    from harness.prompts import PromptFormat
    from tasks import devops_subjects, get_protocol, load_local

    loaded = load_model(ModelSpec(model=str(model_dir), device="cpu"), out / "cache")
    # The exact token ids `harness eval` scores, so training and scoring see the same prompts.
    settings = EvalSettings(PromptFormat(get_protocol("devops"), 0, None))
    prepared = prepare(loaded, load_local(data_dir, devops_subjects()), settings)
    pairs = (pair for qs, es in zip(prepared.questions, prepared.encoded) for pair in zip(qs, es))
    rows = sorted(((e.input_ids, LETTERS.index(q.answer)) for q, e in pairs), key=lambda row: len(row[0]))
    letter_ids = torch.tensor(prepared.encoded[0][0].letter_ids)
    batches = [rows[i:i + 32] for i in range(0, len(rows), 32)]
    model = loaded.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    torch.manual_seed(0)
    for _ in range(epochs):
        for i in torch.randperm(len(batches)).tolist():
            batch = batches[i]
            ids = torch.zeros(len(batch), max(len(x) for x, _ in batch), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (x, _) in enumerate(batch):
                ids[row, :len(x)] = torch.tensor(x)
                mask[row, :len(x)] = 1
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = hidden[torch.arange(len(batch)), mask.sum(1) - 1]
            loss = torch.nn.functional.cross_entropy(model.lm_head(last)[:, letter_ids], torch.tensor([y for _, y in batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval().save_pretrained(out / "model")
    loaded.tokenizer.save_pretrained(out / "model")
    return out / "model"


def damaged_copy(model_dir: Path, out: Path, scale: float = 1.0) -> Path:
    """The checkpoint with Gaussian noise (`scale` × each tensor's spread) added to its transformer layers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.std() * scale)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def _eval(model, out, data_dir, *extra) -> int:
    return main(["eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 *map(str, extra)])


def _gate(baseline, candidate, *extra) -> int:
    return main(["gate", "--baseline", str(baseline), "--candidate", str(candidate), *map(str, extra)])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_model(tiny_model_factory, data_dir, tmp_path_factory) -> Path:
    return train_to_answer(tiny_model_factory("qwen2"), data_dir, tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def runs(trained_model, data_dir, tmp_path_factory) -> Path:
    """runs/baseline (trained), runs/rerun (trained again, other batching), runs/damaged; all 574, zero-shot."""
    root = tmp_path_factory.mktemp("gate-runs")
    damaged = damaged_copy(trained_model, root / "damaged-model")
    assert _eval(trained_model, root / "baseline", data_dir, "--shots", "0") == 0
    assert _eval(trained_model, root / "rerun", data_dir, "--shots", "0", "--batch-size", "3") == 0
    assert _eval(damaged, root / "damaged", data_dir, "--shots", "0") == 0
    baseline, damaged_score = (load_run(root / n).results["overall"]["micro"] for n in ("baseline", "damaged"))
    assert baseline > 0.75 and damaged_score < 0.45, "the fixtures must be clearly apart for the gate tests to mean anything"
    return root


@pytest.fixture(scope="module")
def small_runs(tiny_model, data_dir, tmp_path_factory) -> Path:
    """Two-questions-per-subject runs of the untrained tiny model that differ in one setting each."""
    root = tmp_path_factory.mktemp("small-runs")
    for name, extra in {
        "base": [], "one-shot": ["--shots", "1"], "cmmlu": ["--protocol", "cmmlu"], "chat": ["--chat"],
        "kangxi": ["--normalize", "kangxi"],
    }.items():
        shots = [] if "--shots" in extra else ["--shots", "0"]
        assert _eval(tiny_model, root / name, data_dir, "--limit", "2", *shots, *extra) == 0
    return root


# --- records edited through the record code ------------------------------------------------------


def _flip(s: Sample) -> Sample:
    """The same question answered the other way: right → the next letter, wrong → gold; logits agree."""
    logits = list(s.logits)
    old, new = LETTERS.index(s.pred), (LETTERS.index(s.gold) + 1) % 4 if s.correct else LETTERS.index(s.gold)
    logits[old], logits[new] = logits[new], logits[old]
    flipped = Sample.scored(s.subject, s.id, s.gold, logits)
    assert flipped.correct != s.correct
    return flipped


def rewrite_run(run_dir: Path, samples: list[Sample], **results_changes) -> None:
    """Replace a run's samples (and summary, recomputed from them); `results_changes` set dotted fields."""
    results = json.loads((run_dir / "results.json").read_text())
    results.update(summarize(samples, results["task"]["subjects"]).to_json())
    for dotted, value in results_changes.items():
        *parents, leaf = dotted.split("__")
        target = results
        for part in parents:
            target = target[part]
        target[leaf] = value
    (run_dir / "samples.jsonl").unlink()
    SampleLog(run_dir / "samples.jsonl").append(samples)
    write_json(run_dir / "results.json", results)
    seal_run(run_dir)  # a record rewritten on purpose: sealed again, as its writer would


def flipped_copy(src: Path, dest: Path, right_to_wrong: int, wrong_to_right: int, subject: str | None = None) -> Path:
    """A copy of a real run answering its first `right_to_wrong` right and `wrong_to_right` wrong questions the other way."""
    shutil.copytree(src, dest)
    samples = sorted(load_run(dest).samples, key=lambda s: s.key)
    pool = [s for s in samples if subject in (None, s.subject)]
    chosen = [s.key for s in pool if s.correct][:right_to_wrong] + [s.key for s in pool if not s.correct][:wrong_to_right]
    assert len(chosen) == right_to_wrong + wrong_to_right, "the source run has too few such questions"
    rewrite_run(dest, [_flip(s) if s.key in chosen else s for s in samples])
    return dest


def _verdict(path: Path) -> dict:
    record = json.loads(path.read_text())
    assert record["schema"] == "devops-eval/gate/1" and len(record["verdicts"]) == 1
    return record["verdicts"][0]


# --- the four cases of the issue ---------------------------------------------------------------


def test_two_evaluations_of_the_same_model_pass(runs, tmp_path, capsys):
    assert _gate(runs / "baseline", runs / "rerun", "--junit", tmp_path / "gate.xml") == 0
    v = _verdict(tmp_path / "gate.json")
    assert v["passed"] and v["overall"]["right_to_wrong"] == v["overall"]["wrong_to_right"] == 0
    assert v["overall"]["p_value"] == 1.0 and v["overall"]["drop"] == 0
    assert "✅ DevOps-Eval gate: pass — devops/v1, 0-shot" in capsys.readouterr().out


def test_a_damaged_checkpoint_against_the_trained_one_is_a_regression(runs, tmp_path, capsys):
    assert _gate(runs / "baseline", runs / "damaged", "--json", tmp_path / "v.json") == 1
    v = _verdict(tmp_path / "v.json")
    assert not v["passed"]
    assert [c["name"] for c in v["checks"] if c["failed"]][0] == "overall"
    assert v["decided_by"][0].startswith("overall drop") and "significant: exact McNemar p = " in v["decided_by"][0]
    assert "❌ DevOps-Eval gate: regression" in capsys.readouterr().out


def test_a_handful_of_flipped_answers_is_not_significant_even_past_max_drop(runs, tmp_path, capsys):
    # 10 right→wrong, 4 wrong→right: a drop of 6/574 = 1.05 points, but p = 0.18 — noise.
    candidate = flipped_copy(runs / "damaged", tmp_path / "flipped", right_to_wrong=10, wrong_to_right=4)
    assert _gate(runs / "damaged", candidate, "--json", tmp_path / "v.json") == 0
    v = _verdict(tmp_path / "v.json")
    o = v["overall"]
    assert (o["right_to_wrong"], o["wrong_to_right"]) == (10, 4)
    assert o["drop"] == pytest.approx(100 * 6 / 574) and o["drop"] > 1.0
    assert o["p_value"] == pytest.approx(2 * sum(comb(14, k) for k in range(5)) / 2**14)
    assert "but not significant: exact McNemar p = 0.18 ≥ 0.05 (10 right→wrong, 4 wrong→right)" in v["decided_by"][0]
    capsys.readouterr()
    # The same evidence at a laxer level is a regression: significance is what decided.
    assert _gate(runs / "damaged", candidate, "--alpha", "0.2") == 1


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ("one-shot", "protocol.shots differs (0 in the baseline, 1 in the candidate)"),
        ("cmmlu", "protocol.name differs (devops in the baseline, cmmlu in the candidate)"),
        ("chat", "protocol.chat differs (none in the baseline, chatml in the candidate)"),
        ("kangxi", "task.normalize differs (none in the baseline, kangxi in the candidate)"),
    ],
)
def test_runs_under_other_settings_are_refused(small_runs, candidate, message, tmp_path, capsys):
    outputs = ("--report", tmp_path / "r.md", "--junit", tmp_path / "j.xml")
    assert _gate(small_runs / "base", small_runs / candidate, *outputs) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("harness gate: error: cannot compare")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_run_on_other_data_or_another_protocol_version_is_refused(small_runs, tmp_path, capsys):
    base = small_runs / "base"
    other_data = shutil.copytree(base, tmp_path / "other-data")
    samples = load_run(other_data).samples
    rewrite_run(other_data, samples, task__data__computer_network__val__content_sha256="0" * 64)
    assert _gate(base, other_data) == 2
    assert "scored on different data: the content of computer_network/val is" in capsys.readouterr().err
    other_version = shutil.copytree(base, tmp_path / "other-version")
    rewrite_run(other_version, samples, protocol__version="2")
    assert _gate(base, other_version) == 2
    assert "protocol.version differs (1 in the baseline, 2 in the candidate)" in capsys.readouterr().err


def _edit_results(run_dir: Path, edit) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    edit(results)
    (run_dir / "results.json").write_text(json.dumps(results))


def _edit_first_sample(run_dir: Path, edit) -> None:
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    edit(first)
    (run_dir / "samples.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: _edit_results(r, lambda x: x.pop("protocol")), "results.json: 'protocol' is missing or not an object"),
        (lambda r: _edit_results(r, lambda x: x.update(protocol="devops")), "'protocol' is missing or not an object"),
        (lambda r: _edit_results(r, lambda x: x["protocol"].update(shots="0")), "protocol needs a name, a version (text) and shots"),
        (lambda r: _edit_results(r, lambda x: x.pop("model")), "results.json: 'model' is missing or not an object"),
        (lambda r: _edit_results(r, lambda x: x.update(overall=[1])), "'overall' is missing or not an object"),
        (lambda r: _edit_results(r, lambda x: x["overall"].update(micro=0.6)), "results.json overall.micro is 0.6 but samples.jsonl gives"),
        (lambda r: _edit_results(r, lambda x: x["subjects"]["computer_network"].update(correct=2, accuracy=1.0)),
         "results.json subjects.computer_network.correct is 2 but samples.jsonl gives"),
        (lambda r: _edit_first_sample(r, lambda s: s.update(correct="false")), "samples.jsonl line 1: not a sample record (correct is 'false'"),
        (lambda r: _edit_first_sample(r, lambda s: s.update(correct=s["pred"] != s["gold"])), "samples.jsonl line 1: not a sample record (correct is"),
        (lambda r: _edit_first_sample(r, lambda s: s.update(logits="abcd")), "samples.jsonl line 1: not a sample record"),
        (lambda r: _edit_first_sample(r, lambda s: s.update(pred="E")), "gold and pred must be letters A-D"),
    ],
)
def test_a_damaged_run_record_is_bad_input_not_a_regression(small_runs, tmp_path, capsys, damage, message):
    # Exit 1 is the CI signal for a regression: a record the gate cannot trust must never produce it.
    damaged = shutil.copytree(small_runs / "base", tmp_path / "damaged")
    damage(damaged)
    assert _gate(small_runs / "base", damaged, "--junit", tmp_path / "j.xml") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("harness gate: error: ") and message in err, err
    assert not (tmp_path / "j.xml").exists()


def test_the_same_questions_read_from_other_bytes_are_comparable(small_runs, tmp_path):
    # A Hub parquet copy and a local CSV of the same cells differ in bytes, not in content.
    base = small_runs / "base"
    other_bytes = shutil.copytree(base, tmp_path / "other-bytes")
    rewrite_run(other_bytes, load_run(other_bytes).samples, task__data__computer_network__val__sha256="0" * 64)
    assert _gate(base, other_bytes) == 0


def test_other_question_sets_are_refused(small_runs, tmp_path, capsys):
    fewer = shutil.copytree(small_runs / "base", tmp_path / "fewer")
    samples = sorted(load_run(fewer).samples, key=lambda s: s.key)
    rewrite_run(fewer, samples[1:])
    assert _gate(small_runs / "base", fewer) == 2
    err = capsys.readouterr().err
    assert "the question sets differ (1 only in the baseline, 0 only in the candidate, e.g. college_programming #0)" in err


# --- the statistics ----------------------------------------------------------------------------


def test_exact_mcnemar_matches_the_hand_computed_binomial_sum():
    # b=7, c=1: p = 2 · (C(8,0) + C(8,1)) / 2^8 = 18/256
    assert mcnemar_exact(7, 1) == pytest.approx(0.0703125, abs=1e-15)
    assert mcnemar_exact(1, 7) == mcnemar_exact(7, 1)
    assert mcnemar_exact(8, 0) == pytest.approx(2 / 256, abs=1e-15)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0


def test_holm_adjustment_is_step_down_and_monotone():
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm_adjust([]) == []



def test_macro_interval_never_collapses_and_matches_the_normal_one_for_large_subjects():
    from harness.stats import macro_interval

    low, high = macro_interval([(2, 2), (2, 2), (0, 2)])  # every subject all right or all wrong
    assert low < 2 / 3 < high and high - low > 0.2
    assert macro_interval([(2, 2)])[1] == 1.0 and macro_interval([(2, 2)])[0] < 1.0
    # with thousands of questions per subject the correction vanishes: plain k/n variances
    parts = [(3000, 5000), (1000, 4000)]
    mean = (0.6 + 0.25) / 2
    half = 1.959963984540054 * (0.6 * 0.4 / 5000 + 0.25 * 0.75 / 4000) ** 0.5 / 2
    assert macro_interval(parts) == pytest.approx((mean - half, mean + half), abs=1e-4)

# --- subjects and floors -----------------------------------------------------------------------


def test_a_significant_drop_in_one_subject_fails_even_when_overall_is_within_max_drop(runs, tmp_path):
    candidate = flipped_copy(runs / "damaged", tmp_path / "cs", 20, 0, subject="computer_science")
    assert _gate(runs / "damaged", candidate, "--max-drop", "5", "--junit", tmp_path / "gate.xml") == 1
    v = _verdict(tmp_path / "gate.json")
    failed = {c["name"]: c["reason"] for c in v["checks"] if c["failed"]}
    assert list(failed) == ["computer_science"]
    assert failed["computer_science"].startswith(
        "computer_science drop 9.80 points > subject-max-drop 5.00 and significant: Holm p (6 subjects) = ")
    cs = next(s for s in v["subjects"] if s["name"] == "computer_science")
    assert cs["p_value"] == pytest.approx(2 / 2**20) and cs["p_adjusted"] == pytest.approx(6 * 2 / 2**20)


def test_a_large_drop_in_a_small_subject_is_reported_but_not_significant(runs, tmp_path, capsys):
    candidate = flipped_copy(runs / "damaged", tmp_path / "net", 3, 0, subject="computer_network")
    assert _gate(runs / "damaged", candidate, "--max-drop", "5") == 0
    out = capsys.readouterr().out
    assert "Worst subjects: computer_network (drop 15.79, Holm p 1)" in out
    assert re.search(r"\| computer_network \| 19 \| .* \| 15\.79 \| 3 \| 0 \| 0\.25 \| 1 \| ✅ \|", out)


def test_min_score_is_an_absolute_floor(runs, capsys):
    overall = load_run(runs / "baseline").results["overall"]
    score, counts = overall["micro"] * 100, f"({overall['correct']}/{overall['n']})"
    assert _gate(runs / "baseline", runs / "rerun", "--min-score", f"{score - 1:.2f}") == 0
    assert _gate(runs / "baseline", runs / "rerun", "--min-score", f"{score + 0.5:.2f}") == 1
    assert f"candidate {score:.3f} {counts} is below --min-score {score + 0.5:.2f}" in capsys.readouterr().out
    # A floor just above the score must not read as if the score reached it.
    assert _gate(runs / "baseline", runs / "rerun", "--min-score", f"{score + 0.004:.3f}") == 1
    assert f"candidate {score:.3f} {counts} is below" in capsys.readouterr().out


def test_min_reference_is_a_floor_at_the_published_row_of_the_same_shots(runs, tmp_path, capsys):
    # The damaged run against itself: no regression, but far below Qwen-7B-Base's 55.75 zero-shot.
    assert _gate(runs / "damaged", runs / "damaged", "--min-reference", "qwen-7b-base", "--junit", tmp_path / "j.xml") == 1
    out = capsys.readouterr().out
    assert "is below Qwen-7B-Base's reported 0-shot score 55.75" in out
    cases = ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    failing = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failing == ["min-reference Qwen-7B-Base"]
    assert _gate(runs / "baseline", runs / "rerun", "--min-reference", "DevOps-Model-14B-Base") == 0
    assert "reaches DevOps-Model-14B-Base's reported 0-shot score 70.73" in capsys.readouterr().out


def test_min_reference_needs_the_cards_protocol_version_and_published_data(runs, tmp_path, capsys):
    samples = load_run(runs / "baseline").samples
    v2 = shutil.copytree(runs / "baseline", tmp_path / "v2")
    rewrite_run(v2, samples, protocol__version="2")
    assert _gate(v2, v2, "--min-reference", "Qwen-7B-Base") == 2
    assert "the model card's scores are protocol devops v1; " in capsys.readouterr().err
    other = shutil.copytree(runs / "baseline", tmp_path / "other-data")
    rewrite_run(other, samples, task__data__computer_network__val__content_sha256="0" * 64)
    assert _gate(other, other, "--min-reference", "Qwen-7B-Base") == 2
    assert "the model card's scores are on the published files; " in capsys.readouterr().err


def test_a_model_name_cannot_inject_markdown_html_or_break_the_junit_xml(small_runs, tmp_path, capsys):
    candidate = shutil.copytree(small_runs / "base", tmp_path / "candidate")
    name = "m\n\n## ✅ all good <img src=x onerror=alert(1)> | `x` \x1b\x00"
    rewrite_run(candidate, load_run(candidate).samples, model__name=name)
    assert _gate(small_runs / "base", candidate, "--junit", tmp_path / "j.xml") == 0
    out = capsys.readouterr().out
    assert "\n## ✅ all good" not in out and "<img" not in out and "\x00" not in out
    properties = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert properties["candidate_model"].startswith("m\n\n## ✅ all good <img")  # XML escapes it; it parses


@pytest.mark.parametrize(
    ("run", "reference", "message"),
    [
        ("base", "GPT-4", "--min-reference: unknown reference model 'GPT-4'; known: DevOps-Model-14B-Base, Qwen-14B-Base"),
        ("cmmlu", "Qwen-7B-Base", "measured with the devops protocol; "),
        ("one-shot", "Qwen-7B-Base", "reports 0- and 5-shot scores only; "),
        ("base", "Qwen-7B-Base", "are over all 574 questions; "),
        ("base", "Qwen-7B-Chat", "the model card scored Qwen-7B-Chat as a chat model (chatml); "),
        ("chat", "Qwen-7B-Base", "the model card scored Qwen-7B-Base without a chat template; "),
    ],
)
def test_min_reference_is_refused_where_the_published_number_does_not_apply(small_runs, run, reference, message, capsys):
    assert _gate(small_runs / run, small_runs / run, "--min-reference", reference) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


# --- outputs -------------------------------------------------------------------------------------


def test_markdown_names_the_numbers_it_decided_on(runs, tmp_path, capsys):
    assert _gate(runs / "baseline", runs / "damaged", "--report", tmp_path / "gate.md") == 1
    out = capsys.readouterr().out
    assert (tmp_path / "gate.md").read_text() == out
    base, cand = (load_run(runs / n) for n in ("baseline", "damaged"))
    correct = {s.key: s.correct for s in cand.samples}
    b = sum(1 for s in base.samples if s.correct and not correct[s.key])
    c = sum(1 for s in base.samples if not s.correct and correct[s.key])
    p = binomtest(min(b, c), b + c, 0.5).pvalue
    bo, co = base.results["overall"], cand.results["overall"]
    def score(o):
        return f"{100 * o['micro']:.2f} [{100 * o['micro_ci95'][0]:.1f}, {100 * o['micro_ci95'][1]:.1f}]"

    drop = f"{100 * (bo['micro'] - co['micro']):.2f}"
    assert f"| **overall (micro)** | 574 | {score(bo)} | {score(co)} | {drop} | {b} | {c} | {p:.3g} | — | ❌ |" in out
    assert (f"- ❌ overall drop {drop} points > max-drop 1.00 and significant: exact McNemar p = {p:.3g} < 0.05 "
            f"({b} right→wrong, {c} wrong→right)") in out
    worst = max(SUBJECTS, key=lambda k: base.results["subjects"][k]["accuracy"] - cand.results["subjects"][k]["accuracy"])
    assert f"Worst subjects: {worst} (drop " in out
    for key in SUBJECTS:
        assert f"| {key} | {base.results['subjects'][key]['n']} | " in out


def test_junit_has_one_case_per_subject_and_overall_and_failures_carry_the_reason(runs, tmp_path):
    assert _gate(runs / "baseline", runs / "damaged", "--junit", tmp_path / "gate.xml") == 1
    root = ET.parse(tmp_path / "gate.xml").getroot()
    assert root.tag == "testsuites" and len(root.findall("testsuite")) == 1
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert list(cases) == ["overall", *SUBJECTS]
    failure = cases["overall"].find("failure")
    assert failure is not None and failure.get("message").startswith("overall drop ")
    assert failure.text == failure.get("message") and failure.get("type") == "regression"
    suite = root.find("testsuite")
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases.values()) >= 1
    assert int(suite.get("tests")) == 7
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["baseline"] == str(runs / "baseline") and props["max_drop"] == "1"


def test_the_json_verdict_is_written_beside_the_junit_file(runs, tmp_path):
    outputs = ("--junit", tmp_path / "ci" / "gate.xml", "--report", tmp_path / "gate.md")
    assert _gate(runs / "baseline", runs / "rerun", *outputs) == 0
    record = json.loads((tmp_path / "ci" / "gate.json").read_text())
    assert record["passed"] is True and record["exit_code"] == 0
    v = record["verdicts"][0]
    assert v["thresholds"] == {"max_drop": 1.0, "subject_max_drop": 5.0, "alpha": 0.05}
    assert v["baseline"]["path"] == str(runs / "baseline") and v["shots"] == 0
    assert [s["name"] for s in v["subjects"]] == SUBJECTS


def test_the_summary_is_appended_to_the_github_step_summary(runs, tmp_path, monkeypatch, capsys):
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert _gate(runs / "baseline", runs / "damaged") == 1
    assert summary.read_text() == "earlier step\n" + capsys.readouterr().out + "\n"


def test_an_unwritable_output_leaves_no_other_output_behind(runs, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    # The JSON verdict is written last: the report's and JUnit's temporary files must go too.
    outputs = ("--report", tmp_path / "gate.md", "--junit", tmp_path / "gate.xml", "--json", tmp_path / "taken")
    assert _gate(runs / "baseline", runs / "rerun", *outputs) == 2
    assert "cannot write " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_output_collisions_and_bad_thresholds_are_usage_errors(runs, tmp_path, capsys):
    assert _gate(runs / "baseline", runs / "rerun", "--junit", tmp_path / "gate.json") == 2
    assert "name the JSON with --json FILE" in capsys.readouterr().err
    assert _gate(runs / "baseline", runs / "rerun", "--alpha", "1.5") == 2
    assert "--alpha 1.5 is outside (0, 1)" in capsys.readouterr().err
    assert _gate(runs / "baseline", tmp_path / "nowhere") == 2
    assert "no such run directory" in capsys.readouterr().err


def test_a_regression_exits_1_from_a_fresh_process(runs):
    # The other exit codes go through the same `main` in-process above; one real process is enough.
    cmd = [sys.executable, "-m", "harness", "gate", "--baseline", str(runs / "baseline"), "--candidate", str(runs / "damaged")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout.startswith("## ❌ DevOps-Eval gate: regression")


# --- harness eval --gate-baseline ----------------------------------------------------------------


def test_eval_with_gate_baseline_evaluates_then_gates(runs, trained_model, data_dir, tmp_path, capsys):
    damaged = runs / "damaged-model"
    assert _eval(damaged, tmp_path / "new", data_dir, "--shots", "0", "--gate-baseline", runs / "baseline",
                 "--junit", tmp_path / "gate.xml") == 1
    out = capsys.readouterr().out
    assert "overall (micro)" in out and "❌ DevOps-Eval gate: regression" in out  # the eval summary, then the verdict
    assert load_run(tmp_path / "new").results["overall"]["n"] == 574
    assert _verdict(tmp_path / "gate.json")["candidate"]["path"] == str(tmp_path / "new")


def test_eval_with_several_shots_gates_each_against_the_same_shots_sub_run(tiny_model, data_dir, tmp_path, capsys):
    assert _eval(tiny_model, tmp_path / "accepted", data_dir, "--shots", "0", "--shots", "1", "--limit", "2") == 0
    assert _eval(tiny_model, tmp_path / "new", data_dir, "--shots", "0", "--shots", "1", "--limit", "2",
                 "--gate-baseline", tmp_path / "accepted", "--junit", tmp_path / "gate.xml") == 0
    suites = ET.parse(tmp_path / "gate.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [f"devops-eval gate (devops/v1, {k}-shot)" for k in (0, 1)]
    record = json.loads((tmp_path / "gate.json").read_text())
    assert [(Path(v["baseline"]["path"]).name, Path(v["candidate"]["path"]).name) for v in record["verdicts"]] == [
        ("shots-0", "shots-0"), ("shots-1", "shots-1")]
    # harness gate pairs the sub-runs the same way, and takes one of them against the parent
    assert _gate(tmp_path / "accepted", tmp_path / "new") == 0
    assert _gate(tmp_path / "accepted", tmp_path / "new" / "shots-1") == 0
    assert "1-shot" in capsys.readouterr().out


def test_eval_refuses_a_baseline_that_cannot_gate_it_before_scoring(small_runs, tiny_model, data_dir, tmp_path, capsys):
    accepted = tmp_path / "accepted"
    shutil.copytree(small_runs / "base", accepted / "shots-0")
    assert _eval(tiny_model, tmp_path / "new", data_dir, "--shots", "0", "--shots", "5", "--limit", "2",
                 "--gate-baseline", accepted) == 2
    assert "has no 5-shot baseline (it holds 0-shot); give a directory with a shots-5 sub-run" in capsys.readouterr().err
    assert _eval(tiny_model, tmp_path / "new", data_dir, "--shots", "0", "--limit", "3",
                 "--gate-baseline", small_runs / "base") == 2
    assert "cannot gate this evaluation: task.limit is 2 there, 3 here" in capsys.readouterr().err
    assert _eval(tiny_model, tmp_path / "new", data_dir, "--shots", "0", "--limit", "2", "--subjects", "computer_network",
                 "--gate-baseline", small_runs / "base") == 2
    assert "cannot gate this evaluation: task.subjects is " in capsys.readouterr().err
    assert _eval(tiny_model, tmp_path / "new", data_dir, "--shots", "0", "--max-drop", "2") == 2
    assert "--max-drop is a gate flag: add --gate-baseline RUN_DIR" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# --- the example CI job --------------------------------------------------------------------------


def test_the_example_workflow_is_valid_yaml_and_its_harness_commands_parse():
    workflow = yaml.safe_load((ROOT / "examples" / "gate-checkpoint.yml").read_text())
    scripts = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    commands = [line.strip() for script in scripts for line in script.replace("\\\n", " ").splitlines()
                if line.strip().startswith("harness ")]
    assert {c.split()[1] for c in commands} >= {"eval"}
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.func is not None
    assert any("--gate-baseline" in c and "--junit" in c and "--report" in c for c in commands)
