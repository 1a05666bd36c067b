"""The benchmarks say what they ran on and whether the machine was busy, and keep busy figures
out of benchmarks/results/; the quick benchmark measures the harness alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import (
    RESULTS,
    busy_reasons,
    count_busy_rows,
    cpu_facts,
    describe,
    own_cpu_seconds,
    refuse_busy_overwrite,
)

IDLE = {"load_average": [0.1, 0.2, 0.3], "other_cores": 0.02}


def _load(before: dict, during: dict) -> dict:
    reasons = busy_reasons(before, during)
    return {"before": before, "during": during, "after": {"load_average": [1.0, 0.5, 0.3]}, "busy": bool(reasons),
            "busy_reasons": reasons}


def test_the_cpu_facts_name_the_model_and_the_bf16_instructions():
    facts = cpu_facts()
    assert facts["cpu_model"] and facts["cpus"] >= 1
    assert {"amx", "amx_bf16", "amx_tile", "avx512_bf16"} <= facts.keys()
    assert facts["amx"] == (facts["amx_bf16"] and facts["amx_tile"])


def test_a_machine_is_busy_by_its_load_average_before_or_other_processes_before_or_during():
    assert busy_reasons(IDLE, {"other_cores": 0.05}) == []
    assert busy_reasons({**IDLE, "load_average": [0.5, 0.1, 0.1]}, {"other_cores": 0.0}) == [
        "load average 0.50 before (>= 0.5)"
    ]
    assert busy_reasons(IDLE, {"other_cores": 0.4}) == ["other processes used 0.40 of a core during (> 0.1)"]
    assert busy_reasons({**IDLE, "other_cores": 1.0}, {}) == ["other processes used 1.00 of a core before (> 0.1)"]


def test_a_busy_measurement_row_makes_the_run_busy():
    load = count_busy_rows(_load(IDLE, {"other_cores": 0.0}), [{"busy": False}, {"busy": True}])
    assert load["busy"] and "during 1 of 2 measurements" in load["busy_reasons"][-1]
    assert "BUSY MACHINE" in describe(load) and "BUSY" not in describe(_load(IDLE, {"other_cores": 0.0}))


def test_busy_figures_are_refused_only_over_the_published_results(tmp_path):
    busy = _load(IDLE, {"other_cores": 0.9})
    refusal = refuse_busy_overwrite(RESULTS / "lm_eval_speed.json", busy, allow_busy=False)
    assert refusal and "--allow-busy" in refusal and "0.90 of a core during" in refusal
    assert refuse_busy_overwrite(RESULTS / "lm_eval_speed.json", busy, allow_busy=True) is None
    assert refuse_busy_overwrite(tmp_path / "lm_eval_speed.json", busy, allow_busy=False) is None
    assert refuse_busy_overwrite(RESULTS / "lm_eval_speed.json", _load(IDLE, {"other_cores": 0.0}), allow_busy=False) is None


def test_the_cpu_time_of_a_waited_for_child_is_our_own_not_another_process():
    before = own_cpu_seconds()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"],
                   check=True)
    assert own_cpu_seconds() - before >= 0.3


@pytest.mark.slow
def test_the_quick_benchmark_times_the_harness_alone_in_both_dtypes_and_shot_counts(data_dir, tmp_path):
    out = tmp_path / "quick.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "lm_eval_speed.py"), "--quick", "--limit", "1", "--matmul-seconds", "0.2",
           "--data-dir", str(data_dir), "--work-dir", str(tmp_path / "work"), "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "quick" and {r["tool"] for r in report["rows"]} == {"harness"}
    assert sorted((r["dtype"], r["shots"]) for r in report["rows"]) == [
        ("bfloat16", 0), ("bfloat16", 5), ("float32", 0), ("float32", 5)
    ]
    for r in report["rows"]:
        assert r["questions"] == 6 and 0 < r["score_s"] < r["wall_s"]
        assert 0 < r["startup_s"] <= r["wall_s"] - r["score_s"] + 0.2  # process start to the first question scored
        assert r["scoring_fraction_of_matmul_peak"] > 0 and "other_cores" in r and "busy" in r
    assert set(report["five_vs_zero_shot"]) == set(report["five_vs_zero_shot_scoring"]) == {"bfloat16", "float32"}
    assert {"cpu_model", "amx", "avx512_bf16", "bfloat16_matmul_gflops", "float32_matmul_gflops"} <= report["machine"].keys()
    assert {"before", "during", "after"} <= report["load"].keys() and report["busy"] == report["load"]["busy"]
    assert "Five-shot / zero-shot" in done.stdout and ("BUSY MACHINE" in done.stdout) == report["busy"]


def test_the_profile_splits_scoring_time_into_matmuls_attention_element_wise_and_overhead(tiny_model, data_dir, tmp_path):
    out = tmp_path / "profile.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "profile_scoring.py"), "--model", str(tiny_model), "--limit", "3",
           "--shots", "0", "--data-dir", str(data_dir), "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    [run] = report["runs"]
    assert run["questions"] == 18 and run["passes"] >= 1 and run["padded_tokens"] >= run["computed_tokens"] > 0
    assert {"matmuls", "norms and element-wise", "attention (softmax, masks, concatenation)", "other operators",
            "Python and framework overhead"} == run["categories"].keys()
    assert abs(sum(run["categories"].values()) - run["profiled_wall_s"]) <= 0.02 * run["profiled_wall_s"] + 0.02  # the parts make the whole
    assert run["categories"]["matmuls"] > 0 and run["top_operators"]
    assert {"cpu_model", "amx", "avx512_bf16"} <= report["machine"].keys() and "busy" in report
    assert "| matmuls |" in done.stdout


def test_the_profile_reports_a_bad_model_in_one_line(data_dir, tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "profile_scoring.py"), "--model", str(tmp_path / "nothing"),
           "--limit", "1", "--shots", "0", "--data-dir", str(data_dir), "--json", str(tmp_path / "p.json")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and not (tmp_path / "p.json").exists()
    assert done.stderr.strip().splitlines()[-1] == f"profile_scoring: error: no such model directory or file: {tmp_path / 'nothing'}"
    assert "Traceback" not in done.stderr
