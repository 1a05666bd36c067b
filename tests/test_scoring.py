"""Letter scoring: token ids of the letters, and batching/prefix reuse that never changes results."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness import kernels as cpu_kernels
from harness.errors import ModelError
from harness.kernels import GEMMA3_NORM, GEMMA3_NORM_ONE_PASS, PACKED_LINEAR, ROTARY, TABLE_ACT_MUL, CpuKernels
from harness.prompts import PromptFormat, subject_prompts
from harness.scoring import SHARED_PREFIX, Encoded, LetterScorer, common_prefix_len, encode_prompts, plan_batches
from tasks import get_protocol


def _groups(subject_data, tokenizer, protocol="devops", shots=5, per_subject=12):
    fmt = PromptFormat(get_protocol(protocol), shots)
    groups = []
    for d in subject_data.values():
        prompts = [p for _, p in subject_prompts(d, fmt, limit=per_subject)]
        groups.append(encode_prompts(tokenizer, prompts, fmt.protocol.continuations(),
                                     move_trailing_whitespace=fmt.protocol.move_trailing_whitespace))
    return groups


def _score_all(model, groups, shared_prefix=True, kernels=True, **plan_kwargs):
    plan = plan_batches(groups, **plan_kwargs)
    scorer = LetterScorer(model, shared_prefix=shared_prefix)
    if not kernels:
        scorer.kernels = None
    out = {}
    for batch in plan:
        logits = scorer.score(batch, groups[batch.group])
        for i, row in zip(batch.items, logits):
            out[(batch.group, i)] = row
    return out


@torch.inference_mode()
def _reference(model, groups):
    """The plain way: one prompt at a time, full forward, last position's logits."""
    out = {}
    for g, items in enumerate(groups):
        for i, it in enumerate(items):
            logits = model(input_ids=torch.tensor([it.input_ids])).logits[0, -1]
            out[(g, i)] = logits[list(it.letter_ids)].float().numpy()
    return out


def _argmax(d):
    return {k: int(v.argmax()) for k, v in d.items()}


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared-prefix", "copied-cache"])
@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma3"])
def test_batched_prefix_cached_scores_equal_one_at_a_time_full_forward(arch, shared_prefix, tiny_model_factory, subject_data):
    path = tiny_model_factory(arch)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    groups = _groups(subject_data, tokenizer)
    reference = _reference(model, groups)
    assert (LetterScorer(model, shared_prefix=shared_prefix).attention == SHARED_PREFIX) == shared_prefix
    fast = _score_all(model, groups, shared_prefix, batch_size=8, max_batch_tokens=100_000, prefix_cache=True)
    assert _argmax(fast) == _argmax(reference)
    for k in reference:
        torch.testing.assert_close(torch.tensor(fast[k]), torch.tensor(reference[k]), rtol=1e-4, atol=1e-4)


def test_batch_size_does_not_change_predictions(tiny_model, subject_data):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    groups = _groups(subject_data, tokenizer, shots=0, per_subject=20)
    one = _score_all(model, groups, batch_size=1, max_batch_tokens=100_000, prefix_cache=False)
    many = _score_all(model, groups, batch_size=16, max_batch_tokens=100_000, prefix_cache=False)
    assert _argmax(one) == _argmax(many)


def test_prefix_cache_does_not_change_predictions(tiny_model, subject_data):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    groups = _groups(subject_data, tokenizer, shots=5, per_subject=20)
    without = _score_all(model, groups, batch_size=4, max_batch_tokens=100_000, prefix_cache=False)
    with_cache = _score_all(model, groups, batch_size=4, max_batch_tokens=100_000, prefix_cache=True)
    assert _argmax(without) == _argmax(with_cache)


def test_five_shot_prefix_is_the_instruction_and_examples(tiny_model, subject_data):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    groups = _groups(subject_data, tokenizer, shots=5, per_subject=50)
    for items in groups:
        n = common_prefix_len([it.input_ids for it in items])
        shared = tokenizer.decode(items[0].input_ids[:n])
        assert shared.count("答案：") == 5  # the five answered examples, nothing of the question
        assert all(len(it.input_ids) > n for it in items)


def test_plan_respects_batch_limits_and_covers_every_question_once(tiny_model, subject_data):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    groups = _groups(subject_data, tokenizer, shots=5, per_subject=30)
    plan = plan_batches(groups, batch_size=5, max_batch_tokens=400, prefix_cache=True)
    seen = [(b.group, i) for b in plan for i in b.items]
    assert sorted(seen) == sorted((g, i) for g, items in enumerate(groups) for i in range(len(items)))
    for b in plan:
        width = max(len(groups[b.group][i].input_ids) - b.prefix_len for i in b.items)
        assert len(b.items) <= 5
        assert len(b.items) == 1 or width * len(b.items) <= 400


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-packed"])
@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_scoring_leaves_the_model_as_it_was(arch, dtype, tiny_model_factory, subject_data):
    # The shared-prefix attention, the letters' head and the packed linear layers are the scorer's
    # own, only while it scores.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(arch), dtype=dtype).eval()
    layers = {name: m for name, m in model.named_modules()}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_factory(arch))
    attention, head = model.config._attn_implementation, model.get_output_embeddings()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
    _score_all(model, _groups(subject_data, tokenizer, per_subject=3), batch_size=2, max_batch_tokens=100_000, prefix_cache=True)
    assert model.config._attn_implementation == attention and model.get_output_embeddings() is head
    assert {name: m for name, m in model.named_modules()} == layers
    assert not any("forward" in vars(m) for m in model.modules())  # no stand-in forward left on a module
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)


def _rows(*lengths):
    return [Encoded(tuple(range(1, n + 1)), (0, 1, 2, 3)) for n in lengths]


def test_plan_cuts_batches_where_the_lengths_drop():
    items = _rows(40, 40, 40, 40, 10, 10, 10, 10)
    cheap = plan_batches([items], batch_size=8, max_batch_tokens=10**6, prefix_cache=False, forward_cost=1)
    assert [b.items for b in cheap] == [(0, 1, 2, 3), (4, 5, 6, 7)]  # no padding, in the fewest passes
    costly = plan_batches([items], batch_size=8, max_batch_tokens=10**6, prefix_cache=False, forward_cost=10**6)
    assert [b.items for b in costly] == [tuple(range(8))]  # one pass, whatever the padding
    capped = plan_batches([items], batch_size=3, max_batch_tokens=10**6, prefix_cache=False, forward_cost=10**6)
    assert len(capped) == 3 and all(len(b.items) <= 3 for b in capped)  # the fewest passes of three rows
    padded = sum(len(b.items) * len(items[b.items[0]].input_ids) for b in capped)
    assert padded == 3 * 40 + 2 * 40 + 3 * 10  # and among those, the least padding: 40 pads one 10


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared-prefix", "copied-cache"])
@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma3"])
def test_bfloat16_cpu_kernels_give_the_model_s_own_bits(arch, shared_prefix, tiny_model_factory, subject_data,
                                                       packed_linear):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(arch), dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_factory(arch))
    kernels = LetterScorer(model).kernels
    assert kernels is not None
    assert kernels.kinds == packed_linear + [TABLE_ACT_MUL] + ([GEMMA3_NORM_ONE_PASS] if arch == "gemma3" else []) + [ROTARY]
    modeling = sys.modules[type(model).__module__]
    own_rotary = modeling.apply_rotary_pos_emb
    assert [(source, stand_in.own) for source, _, stand_in in kernels.functions] == [(modeling, own_rotary)]
    head = model.get_output_embeddings()
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and m is not head]
    assert len(kernels.linears) == (len(layers) if packed_linear else 0)  # every linear layer but the head
    mlps = [m for m in model.modules() if type(m).__name__.endswith("MLP")]
    norms = [m for m in model.modules() if type(m).__name__ == "Gemma3RMSNorm"]
    assert [m for m, _ in kernels.forwards] == mlps + norms  # every MLP and every Gemma 3 norm (q, k and hidden)
    groups = _groups(subject_data, tokenizer, per_subject=6)
    kw = dict(batch_size=4, max_batch_tokens=100_000, prefix_cache=True)
    fast = _score_all(model, groups, shared_prefix, **kw)
    own = _score_all(model, groups, shared_prefix, kernels=False, **kw)
    assert fast.keys() == own.keys()
    for k in own:
        assert (fast[k] == own[k]).all(), k  # the same bits, not merely close
    assert modeling.apply_rotary_pos_emb is own_rotary  # swapped back after every pass


def test_kernels_are_left_out_where_they_do_not_apply(tiny_model, tiny_model_factory, monkeypatch, packed_linear):
    fp32 = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert LetterScorer(fp32).kernels is None  # float32: torch's own kernels are as fast
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).eval()
    with monkeypatch.context() as m:
        m.setattr(cpu_kernels, "_available_memory", lambda: 0)
        assert CpuKernels.for_model(bf16, "cpu").kinds == [TABLE_ACT_MUL, ROTARY]  # no room for the packed copy
    with monkeypatch.context() as m:
        m.setattr(cpu_kernels, "_agrees", lambda own, packed: False)
        assert PACKED_LINEAR not in CpuKernels.for_model(bf16, "cpu").kinds  # this machine's oneDNN disagrees
    with monkeypatch.context() as m:  # oneDNN refuses to lay bfloat16 out (a CPU without AVX-512): no packing, no error
        def refuse(self, linear, rows_hint):
            raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw")
        m.setattr(cpu_kernels._PackedLinear, "__init__", refuse)
        assert CpuKernels.for_model(bf16, "cpu").kinds == [TABLE_ACT_MUL, ROTARY]
    with monkeypatch.context() as m:
        m.setattr(cpu_kernels, "_library", [None])  # no C compiler here
        kernels = CpuKernels.for_model(bf16, "cpu")
        assert (kernels.kinds if kernels else []) == packed_linear
    with monkeypatch.context() as m:
        m.setattr(cpu_kernels, "_library", [None])
        m.setattr(cpu_kernels, "_available_memory", lambda: 0)
        assert CpuKernels.for_model(bf16, "cpu") is None  # nothing left to swap
    assert CpuKernels.for_model(bf16, "meta") is None  # not a CPU
    gemma = AutoModelForCausalLM.from_pretrained(tiny_model_factory("gemma3"), dtype=torch.bfloat16).eval()
    with monkeypatch.context() as m:  # a norm whose stand-ins disagree: every norm keeps its own forward
        m.setattr(cpu_kernels, "_gemma3_norm_forward", lambda module: lambda x: type(module).forward(module, x) + 1)
        kinds = CpuKernels.for_model(gemma, "cpu").kinds
        assert GEMMA3_NORM not in kinds and GEMMA3_NORM_ONE_PASS not in kinds
    with monkeypatch.context() as m:  # sums in another order than this CPU's torch: the in-place norm
        m.setattr(cpu_kernels, "_sums_agree", lambda width, lanes: False)
        kinds = CpuKernels.for_model(gemma, "cpu").kinds
        assert GEMMA3_NORM in kinds and GEMMA3_NORM_ONE_PASS not in kinds
    with monkeypatch.context() as m:  # a rotary stand-in that disagrees: the model's own function stays
        m.setattr(cpu_kernels._Rotary, "agrees", lambda self, heads, kv_heads, dim: False)
        kernels = CpuKernels.for_model(gemma, "cpu")
        assert ROTARY not in kernels.kinds and kernels.functions == []


@pytest.mark.parametrize("width", [640, 256, 1152, 2560, 40])
def test_the_one_pass_gemma3_norm_gives_the_norm_s_bits_summing_as_this_cpu_s_torch_sums(width):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    # torch sums float32 rows 8 lanes at a time with AVX2 (and its DEFAULT build) and, as seen on a
    # Xeon with AVX-512 and AMX (torch 2.11, capability AVX512), there too: exactly one order agrees
    agreeing = [lanes for lanes in (16, 8) if cpu_kernels._sums_agree(width, lanes)]
    assert len(agreeing) == 1, agreeing  # the mean of squares, bit for bit, and the other order told apart
    [lanes] = agreeing
    norm = Gemma3RMSNorm(width, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(width, generator=torch.Generator().manual_seed(1)) * 0.5)
    norm = norm.bfloat16()
    one_pass = cpu_kernels._gemma3_norm_one_pass(norm, lanes)
    assert cpu_kernels._same_forward(norm, one_pass, cpu_kernels._norm_probe(width))
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 300, width, generator=g) * torch.exp(torch.randn(2, 300, width, generator=g) * 2)).bfloat16()
    assert torch.equal(one_pass(x).view(torch.int16), norm(x).view(torch.int16))  # threads split the rows
    assert torch.equal(one_pass(x.transpose(0, 1)), norm(x.transpose(0, 1)))  # strided: the in-place norm
    assert torch.equal(one_pass(x.float()), norm(x.float()))  # float32: the norm's own forward


def test_the_rotary_stand_in_gives_apply_rotary_pos_embs_bits_and_leaves_other_calls_to_it():
    from transformers.models.llama import modeling_llama

    own = modeling_llama.apply_rotary_pos_emb
    library = cpu_kernels._compiled()
    assert library is not None
    rotary = cpu_kernels._Rotary(own, library.harness_rotary)
    assert rotary.agrees(heads=8, kv_heads=2, dim=64) and rotary.agrees(heads=3, kv_heads=3, dim=6)
    g = torch.Generator().manual_seed(2)
    q = (torch.randn(3, 11, 4 * 32, generator=g) * 50).bfloat16().view(3, 11, 4, 32).transpose(1, 2)
    k = torch.randn(3, 4, 11, 32, generator=g).bfloat16()  # contiguous (batch, heads, tokens, dim)
    angle = torch.arange(11 * 32).float().view(1, 11, 32).expand(3, 11, 32) * 0.37
    cos, sin = angle.cos().bfloat16().contiguous(), angle.sin().bfloat16().contiguous()
    for e, o in zip(own(q, k, cos, sin), rotary(q, k, cos, sin)):
        assert torch.equal(e.view(torch.int16), o.view(torch.int16)) and e.stride() == o.stride()
    calls = []
    rotary.own = lambda *args: calls.append(args) or own(*args)
    rotary(q.float(), k.float(), cos.float(), sin.float())  # float32: the model's own function
    rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin, 2)  # another layout: the same
    assert len(calls) == 2


def test_compiler_failure_leaves_the_table_kernel_out(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_kernels, "_library", [])
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: str(tmp_path / "false") if name else None)
    (tmp_path / "false").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "false").chmod(0o755)
    assert cpu_kernels._act_mul_function() is None
    assert cpu_kernels._ActMul.of(torch.nn.SiLU()) is None


@pytest.mark.parametrize("activation", ["silu", "gelu_pytorch_tanh", "gelu", "relu"])
def test_table_activation_times_up_gives_torch_s_bits_for_every_bfloat16_value(activation):
    from transformers.activations import ACT2FN

    act = ACT2FN[activation]
    act_mul = cpu_kernels._ActMul.of(act)
    assert act_mul is not None
    every = cpu_kernels._every_bfloat16()  # NaNs, infinities, subnormals and zeros of both signs included
    g = torch.Generator().manual_seed(1)
    for up in (torch.randn(65536, generator=g), torch.full((65536,), -3.0), torch.randn(65536, generator=g) * 1e-39):
        up = up.bfloat16()
        expected = act(every) * up
        got = act_mul(every.clone(), up)
        assert torch.equal(got.view(torch.int16), expected.view(torch.int16))
    gate, up = every.repeat(5), torch.randn(5 * 65536, generator=g).bfloat16()  # split over torch's threads
    assert torch.equal(act_mul(gate.clone(), up).view(torch.int16), (act(gate) * up).view(torch.int16))
    with pytest.raises(ValueError, match="contiguous bfloat16"):
        act_mul(torch.zeros(4, 6).bfloat16().t(), torch.zeros(6, 4).bfloat16())


def test_letter_ids_come_from_encoding_prompt_plus_letter(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    [enc] = encode_prompts(tokenizer, ["问题：x\n答案："], ("A", "B", "C", "D"))
    for letter, tid in zip("ABCD", enc.letter_ids):
        assert tokenizer.convert_ids_to_tokens(tid) == letter
    [enc] = encode_prompts(tokenizer, ["答案："], (" A", " B", " C", " D"))
    assert tokenizer.convert_ids_to_tokens(list(enc.letter_ids)) == ["ĠA", "ĠB", "ĠC", "ĠD"]


def test_tokenizer_that_splits_a_letter_is_refused(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(ModelError, match="exactly one token"):
        encode_prompts(tokenizer, ["答案："], ("\n\nA", "B", "C", "D"))


def test_tokenizer_that_merges_the_letter_into_the_prompt_is_refused(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_tokens(["：A"])  # the prompt's last character and the letter become one token
    with pytest.raises(ModelError, match="'A'"):
        encode_prompts(tokenizer, ["答案："], ("A", "B", "C", "D"))
