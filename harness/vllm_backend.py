"""Letter scoring through vLLM (optional: `pip install '.[vllm]'` on a CUDA machine).

vLLM cannot be installed beside this project's pinned CPU torch, so this backend is outside the
default install and its test runs only where vLLM and a GPU are present.

One request per question, on the same token ids the HF backend scores: generate one token with
`allowed_token_ids` = the four letters and `logprobs_mode="processed_logprobs"`, so the returned
log-probabilities are those of the four letters after every other token is masked — the HF
backend's four logits minus one per-question constant (log-sum-exp over the letters), which
leaves the argmax, ties and softmax unchanged. Prefix caching reuses each subject's few-shot
prefix across questions; tensor parallelism is vLLM's own `tensor_parallel_size`.

vLLM is given token ids only (`skip_tokenizer_init`): the harness's own tokenizer builds them, so no
tokenizer code of a checkpoint runs there either. The card's original formats reach vLLM as the
harness's native conversion (Qwen-1 as Qwen2, InternLM and Baichuan2-7B as Llama), which vLLM runs
with its own classes; Baichuan2-13B's ALiBi has no transformers class, so vLLM is given the original
checkpoint for its own `BaichuanForCausalLM`, whose configuration it reads through the checkpoint's
configuration code: that one asks for --trust-remote-code (its modeling code is never run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from harness import families
from harness.errors import ModelError, first_line
from harness.families import baichuan2
from harness.models import LoadedModel, ModelSpec, load_tokenizer, native_checkpoint, resolve_source
from harness.records import ModelInfo
from harness.scoring import Batch, Encoded

MISSING = "the vllm backend needs vLLM on a CUDA machine: pip install -e '.[vllm]' (it brings its own torch)"


def load_vllm(spec: ModelSpec, cache_dir, tensor_parallel_size: int = 1) -> LoadedModel:
    try:
        from vllm import LLM
    except ImportError:
        raise ModelError(MISSING) from None
    if spec.adapter or spec.gguf_file:
        raise ModelError("the vllm backend scores plain checkpoints only (no --adapter, no GGUF): merge or convert first")
    start = time.perf_counter()
    src = resolve_source(spec, cache_dir)
    tokenizer = load_tokenizer(spec, cache_dir)
    model, revision, trust_remote_code = _what_vllm_loads(spec, src, cache_dir)
    try:
        llm = LLM(
            model=model,
            skip_tokenizer_init=True,  # prompts arrive as the harness tokenizer's ids
            revision=revision,
            dtype=spec.dtype,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            max_logprobs=4,
        )
    except Exception as e:  # vLLM's own refusals (no GPU, an architecture it lacks...): one line, named
        raise ModelError(f"vLLM cannot load {model}: {first_line(e)}") from None
    info = ModelInfo(
        name=spec.model,
        path=src.named(src.path),
        revision=spec.revision or src.revision,
        tokenizer=src.named(src.tokenizer),
        requested_dtype=spec.dtype,
        dtype=str(llm.llm_engine.model_config.dtype).removeprefix("torch."),
        architecture=llm.llm_engine.model_config.architectures[0],
        trust_remote_code=trust_remote_code,
        device=f"cuda (vllm, tensor_parallel_size={tensor_parallel_size})",
        extra={"backend": "vllm", **(families.record(src.source_format) if src.source_format else {})},
    )
    return LoadedModel(llm, tokenizer, info, time.perf_counter() - start)


def _what_vllm_loads(spec: ModelSpec, src, cache_dir) -> tuple[str, str | None, bool]:
    """The checkpoint vLLM is given, its revision, and whether vLLM may run its configuration code."""
    config = _config(src.path) if src.local else {}
    if config.get("model_type") == baichuan2.ALIBI_MODEL_TYPE:
        raise ModelError(f"--backend vllm: {spec.model} is of the harness's own Baichuan2-13B (ALiBi) class, "
                         "which vLLM has no class for: use --backend hf")
    if src.source_format == baichuan2.FORMAT and baichuan2.uses_alibi(config):
        if not spec.trust_remote_code:
            raise ModelError(f"--backend vllm: {spec.model} is Baichuan2-13B (ALiBi); vLLM runs it with its own "
                             "BaichuanForCausalLM but reads its configuration_baichuan.py: pass --trust-remote-code "
                             "(its modeling code is not run), or use --backend hf")
        return src.named(src.path), spec.revision or src.revision, True
    if src.source_format:
        return native_checkpoint(src, cache_dir), None, False  # a local directory of a transformers class
    # A Hub snapshot by its Hub id: vLLM fetches and loads it as any Hub model.
    return src.named(src.path), spec.revision, spec.trust_remote_code


def _config(path: str) -> dict:
    try:
        values = json.loads((Path(path).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # vLLM reports what it cannot read
    return values if isinstance(values, dict) else {}


class VllmLetterScorer:
    """The `LetterScorer` interface over a vLLM engine: four letter log-probabilities per row."""

    fast = True  # vLLM's prefix cache does what the HF backend's prefix reuse does

    def __init__(self, llm):
        from vllm import SamplingParams, TokensPrompt

        self.llm = llm
        self._params = SamplingParams
        self._prompt = TokensPrompt

    def score(self, batch: Batch, items: list[Encoded]) -> np.ndarray:
        rows = [items[i] for i in batch.items]
        prompts = [self._prompt(prompt_token_ids=list(r.input_ids)) for r in rows]
        params = [
            self._params(max_tokens=1, temperature=0.0, logprobs=4, allowed_token_ids=list(r.letter_ids)) for r in rows
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        scores = np.empty((len(rows), 4), dtype=np.float32)
        for k, (row, out) in enumerate(zip(rows, outputs)):
            logprobs = out.outputs[0].logprobs[0]  # {token id: Logprob} at the first generated position
            scores[k] = [logprobs[t].logprob for t in row.letter_ids]
        return scores
