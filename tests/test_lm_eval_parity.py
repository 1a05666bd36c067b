"""`--protocol lm-eval` agrees with lm-evaluation-harness itself, question by question.

lm-eval runs (its Python API, HF backend, float32) on the task YAMLs `harness tasks
export-lm-eval` writes; the harness runs on the same model and questions. Contexts must be
identical strings, predictions identical, and the four scores equal up to lm-eval's log-softmax
normalizer (a constant shift per question).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from harness.cli import main
from harness.prompts import PromptFormat, subject_prompts
from tasks import get_protocol


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("lm-eval-tasks")
    assert main(["tasks", "export-lm-eval", str(out), "--data-dir", str(data_dir)]) == 0
    return out


def run_lm_eval(model_dir, tasks_dir, shots, limit):
    """lm-eval's own per-question log-likelihoods and contexts, keyed by (subject, row)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=str(model_dir), batch_size=1, dtype="float32", device="cpu")
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["devops"], num_fewshot=shots, limit=limit, log_samples=True,
        task_manager=TaskManager(include_path=str(tasks_dir)),
    )
    out = {}
    for task, samples in results["samples"].items():
        for s in samples:
            args = [tuple(a) for a in s["arguments"]]
            out[(task.removeprefix("devops_"), s["doc_id"])] = {
                "context": args[0][0],
                "continuations": [a[1] for a in args],
                "loglik": [r[0][0] for r in s["resps"]],
                "acc": s["acc"],
            }
    return out


def run_harness(model_dir, data_dir, out, shots, limit, *extra):
    assert main(["eval", "--model", str(model_dir), "--protocol", "lm-eval", "--shots", str(shots),
                 "--limit", str(limit), "--data-dir", str(data_dir), "--output", str(out), "--no-progress",
                 *extra]) == 0
    return {(s["subject"], s["id"]): s for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def assert_agree(reference, ours, subject_data, shots, limit):
    fmt = PromptFormat(get_protocol("lm-eval"), shots)
    prompts = {(d.subject.key, q.id): p for d in subject_data.values() for q, p in subject_prompts(d, fmt, limit=limit)}
    assert set(reference) == set(ours) == set(prompts)
    disagreements = []
    for key, ref in reference.items():
        assert ref["context"] == prompts[key]
        assert ref["continuations"] == [" A", " B", " C", " D"]
        shift = np.asarray(ref["loglik"]) - np.asarray(ours[key]["logits"])
        assert np.ptp(shift) < 1e-3, key  # log-softmax differs from logits by one constant
        if int(np.argmax(ref["loglik"])) != "ABCD".index(ours[key]["pred"]):
            top2 = np.sort(ours[key]["logits"])[-2:]
            disagreements.append((key, float(top2[1] - top2[0])))
        assert bool(ref["acc"]) == ours[key]["correct"] or disagreements
    assert not disagreements, f"predictions differ (question, top-two margin): {disagreements}"


@pytest.mark.parametrize("shots", [0, 5])
def test_tiny_model_agrees_with_lm_eval(shots, tiny_model, data_dir, subject_data, exported, tmp_path):
    reference = run_lm_eval(tiny_model, exported, shots, limit=4)
    ours = run_harness(tiny_model, data_dir, tmp_path / "run", shots, 4)
    assert_agree(reference, ours, subject_data, shots, limit=4)


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 5])
def test_gemma_3_270m_agrees_with_lm_eval(shots, gemma_dir, data_dir, subject_data, exported, tmp_path):
    reference = run_lm_eval(gemma_dir, exported, shots, limit=3)
    ours = run_harness(gemma_dir, data_dir, tmp_path / "run", shots, 3, "--dtype", "float32")
    assert_agree(reference, ours, subject_data, shots, limit=3)


def test_exported_tasks_are_the_lm_eval_protocol(exported, data_dir):
    import yaml

    group = yaml.safe_load((exported / "_devops.yaml").read_text(encoding="utf-8"))
    assert group["group"] == "devops" and len(group["task"]) == 6
    assert group["aggregate_metric_list"][0]["weight_by_size"] is True
    task = yaml.safe_load((exported / "devops_computer_science.yaml").read_text(encoding="utf-8"))
    assert task["description"] == "以下是关于计算机科学的单项选择题，请直接给出正确答案的选项。\n\n"
    assert task["doc_to_text"] == "{{Question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案："
    assert task["fewshot_config"] == {"sampler": "first_n"} and task["fewshot_split"] == "dev"
    for path in task["dataset_kwargs"]["data_files"].values():
        assert path.startswith("/") and (data_dir / "cmmlu").resolve().as_posix() in path
    task = yaml.safe_load((exported / "devops_computer_network.yaml").read_text(encoding="utf-8"))
    assert task["description"] == "以下是中国关于计算机网络的单项选择题，请选出其中的正确答案。\n\n"
    assert task["test_split"] == "val"
