"""Quantized checkpoints — GPTQ, bitsandbytes int8/NF4, optimum-quanto int8/int4 — and what each
costs on the 574 questions.

`methods` says what each method can do and needs; `calibration` supplies GPTQ's text (never the
evaluated questions); `checkpoint` quantizes, saves, proves the save by reloading, and marks the
directory; `comparison` sets an original and its quantized run side by side. One module per
library (`gptq`, `bnb`, `quanto`) holds the only code here that touches it. Loading a checkpoint
is the engine's (`harness.models`, with `harness.quantized` for what transformers does not read).
"""

from harness.quantize.methods import METHODS, Method, QuantizeError, QuantizeRequest, resolve_request

__all__ = ["METHODS", "Method", "QuantizeError", "QuantizeRequest", "resolve_request"]
