"""Data-parallel evaluation under torchrun (gloo on CPU): same results on any number of workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.cli import main
from harness.records import load_run

pytestmark = pytest.mark.slow


def _torchrun(nproc, model, data_dir, out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "harness", "eval", "--model", str(model), "--data-dir", str(data_dir), "--output", str(out),
            "--no-progress", *extra]


def _kill_everything_writing_to(out):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if str(out) in cmdline and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _by_key(run):
    return {s.key: s for s in run.samples}


@pytest.fixture(scope="module")
def single(tiny_model, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    assert main(["eval", "--model", str(tiny_model), "--data-dir", str(data_dir), "--output", str(out),
                 "--shots", "5", "--no-progress"]) == 0
    return load_run(out)


def test_two_processes_give_the_single_process_results(single, tiny_model, data_dir, tmp_path):
    out = tmp_path / "two"
    proc = subprocess.run(_torchrun(2, tiny_model, data_dir, out, "--shots", "5"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = load_run(out)
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "samples.jsonl", "settings.json"]
    a, b = _by_key(single), _by_key(two)
    assert a.keys() == b.keys() and len(a) == 574
    assert {k: s.pred for k, s in a.items()} == {k: s.pred for k, s in b.items()}
    np.testing.assert_allclose([a[k].logits for k in a], [b[k].logits for k in a], rtol=1e-4, atol=1e-5)
    assert two.results["runtime"]["world_size"] == 2
    ignore = ("runtime", "harness", "integrity")  # the record's digest covers its timings
    assert {k: v for k, v in two.results.items() if k not in ignore} == {
        k: v for k, v in single.results.items() if k not in ignore}
    # the merged samples file is in canonical order, like a single-process run's
    assert [s.key for s in two.samples] == [s.key for s in single.samples]


def test_a_killed_two_process_run_resumes_with_one_process(single, tiny_model, data_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = _torchrun(2, tiny_model, data_dir, out, "--shots", "5", "--batch-size", "1", "--no-prefix-cache")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    lines = 0
    while time.time() < deadline and proc.poll() is None:
        lines = sum(p.read_bytes().count(b"\n") for p in out.glob("samples.rank*.jsonl")) if out.is_dir() else 0
        if lines >= 60:
            break
        time.sleep(0.1)
    _kill_everything_writing_to(out)  # torchrun starts its workers in sessions of their own
    proc.wait()
    ranks = sorted(p.name for p in out.glob("samples.rank*.jsonl"))
    assert ranks == ["samples.rank0.jsonl", "samples.rank1.jsonl"] and not (out / "results.json").exists()
    done = sum(p.read_bytes().count(b"\n") for p in out.glob("samples.rank*.jsonl"))
    assert 60 <= done < 574
    assert main(["eval", "--model", str(tiny_model), "--data-dir", str(data_dir), "--output", str(out),
                 "--shots", "5", "--batch-size", "1", "--no-prefix-cache", "--no-progress"]) == 0
    resumed = load_run(out)
    assert resumed.results["runtime"]["timings"]["scored_questions"] == 574 - done
    assert {k: s.pred for k, s in _by_key(resumed).items()} == {k: s.pred for k, s in _by_key(single).items()}
    assert not list(out.glob("samples.rank*.jsonl"))


def test_shares_are_balanced_by_tokens_not_by_count():
    from harness.evaluate import Workers, assign
    from harness.scoring import Batch

    batches = [Batch(0, (i,), 0) for i in range(6)]
    tokens = {0: 900, 1: 100, 2: 100, 3: 100, 4: 100, 5: 100}
    shares = [assign(batches, lambda b: tokens[b.items[0]], Workers(r, 2)) for r in range(2)]
    assert [b.items[0] for b in shares[0]] == [0]
    assert [b.items[0] for b in shares[1]] == [1, 2, 3, 4, 5]
    assert sorted(b.items for share in shares for b in share) == sorted(b.items for b in batches)
