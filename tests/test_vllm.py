"""The optional vLLM backend: refused clearly without vLLM; where it runs, it agrees with HF."""

from __future__ import annotations

import importlib.util
import json

import pytest

from harness.cli import main


def test_vllm_backend_without_vllm_is_one_clear_line(tiny_model, data_dir, tmp_path, capsys):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    code = main(["eval", "--model", str(tiny_model), "--backend", "vllm", "--data-dir", str(data_dir),
                 "--output", str(tmp_path / "out"), "--limit", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install -e '.[vllm]'" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_vllm_predictions_match_the_hf_backend(gemma_dir, data_dir, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA device")
    runs = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        assert main(["eval", "--model", str(gemma_dir), "--backend", backend, "--dtype", "float32", "--shots", "5",
                     "--limit", "10", "--data-dir", str(data_dir), "--output", str(out), "--no-progress"]) == 0
        runs[backend] = {(s["subject"], s["id"]): s for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    same = sum(runs["hf"][k]["pred"] == runs["vllm"][k]["pred"] for k in runs["hf"])
    print(f"vLLM vs HF agreement: {same}/{len(runs['hf'])}")
    assert same >= 0.98 * len(runs["hf"])
