"""Letter scoring through vLLM (optional: `pip install '.[vllm]'` on a CUDA machine).

vLLM cannot be installed beside this project's pinned CPU torch, so this backend is outside the
default install and its test runs only where vLLM and a GPU are present.

One request per question, on the same token ids the HF backend scores: generate one token with
`allowed_token_ids` = the four letters and `logprobs_mode="processed_logprobs"`, so the returned
log-probabilities are those of the four letters after every other token is masked — the HF
backend's four logits minus one per-question constant (log-sum-exp over the letters), which
leaves the argmax, ties and softmax unchanged. Prefix caching reuses each subject's few-shot
prefix across questions; tensor parallelism is vLLM's own `tensor_parallel_size`.
"""

from __future__ import annotations

import time

import numpy as np

from harness.errors import ModelError
from harness.models import LoadedModel, ModelSpec, load_tokenizer, resolve_source
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
    llm = LLM(
        model=src.named(src.path),  # a Hub snapshot by its Hub id: vLLM fetches and loads it as any Hub model
        tokenizer=src.named(src.tokenizer),
        revision=spec.revision,
        dtype=spec.dtype,
        trust_remote_code=spec.trust_remote_code,
        tensor_parallel_size=tensor_parallel_size,
        enable_prefix_caching=True,
        logprobs_mode="processed_logprobs",
        max_logprobs=4,
    )
    info = ModelInfo(
        name=spec.model,
        path=src.named(src.path),
        revision=spec.revision,
        tokenizer=src.named(src.tokenizer),
        requested_dtype=spec.dtype,
        dtype=str(llm.llm_engine.model_config.dtype).removeprefix("torch."),
        architecture=llm.llm_engine.model_config.architectures[0],
        trust_remote_code=spec.trust_remote_code,
        device=f"cuda (vllm, tensor_parallel_size={tensor_parallel_size})",
        extra={"backend": "vllm"},
    )
    return LoadedModel(llm, tokenizer, info, time.perf_counter() - start)


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
