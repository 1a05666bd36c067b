"""CPU kernels for bfloat16 scoring: stand-ins for a model's own modules that give the same bits.

Each stand-in is swapped in for a forward pass and out again after it, so the model is left as it
was, and each is taken only where a probe on this machine shows it computing the module's own bits:

- `onednn-packed-linear`: every `nn.Linear` but the head with its weight laid out once for oneDNN
  (`torch.ops.mkldnn`, the kernels `torch.compile`'s freezing emits), where `F.linear` lays it out
  at every call. Made only where the second copy of the weights fits in a quarter of free memory.
- `table-activation-mul`: a gated MLP's `act_fn(gate) * up` in one pass (`act_mul.c`, compiled here
  with the machine's C compiler): the activation of a bfloat16 value read from a table of all
  65,536 that the module's own `act_fn` made, times `up`, rounded as torch rounds. Eager torch makes
  two passes and an intermediate tensor, and GELU-tanh's vector code is slow (1.5 G elements/s here).
- `gemma3-rmsnorm-in-one-pass`: Gemma 3's RMSNorm in one pass per row (`act_mul.c`): the squares
  of a row summed in the order torch's vectorised sum uses on this CPU (8 or 16 lanes, picked by a
  probe of the mean of squares, bit for bit), then each operation rounded as torch rounds it. Where
  no order agrees, `gemma3-rmsnorm-in-place`: the same operations in torch, one float32
  intermediate fewer and the last product rounded to bfloat16 as it is stored.
- `rotary-in-one-pass`: the modeling module's `apply_rotary_pos_emb` (`x * cos + rotate_half(x) *
  sin`) in one pass over queries and keys (`act_mul.c`), each product and the sum rounded as torch
  rounds each of its five operations.

Measured and left out: the gate's activation fused into its product by oneDNN (4-7% faster, but
it rounds once where the model's code rounds twice, which moves 3-8% of bfloat16 predictions);
`torch.compile` (it does not pay within one run); RMSNorm as one `rms_norm` call (the same passes).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

PACKED_LINEAR = "onednn-packed-linear"
TABLE_ACT_MUL = "table-activation-mul"
GEMMA3_NORM = "gemma3-rmsnorm-in-place"
GEMMA3_NORM_ONE_PASS = "gemma3-rmsnorm-in-one-pass"
ROTARY = "rotary-in-one-pass"


# --- packed linear layers -----------------------------------------------------------------------


class _PackedLinear(torch.nn.Module):
    """A linear layer whose weight oneDNN has laid out once, in its blocked format, instead of at
    every call (what `torch.nn.functional.linear` does for bfloat16 on CPU). The products are the
    same bits: the kernel and its accumulation order are the same, only the reordering is saved."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int):
        super().__init__()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [-1], "")
        return out.view(*x.shape[:-1], out.shape[-1])


ROWS_HINT = 512  # the rows oneDNN lays the weights out for: a batch's tokens, about
MEMORY_SHARE = 0.25


def _packed_linears(base, head) -> list[tuple[torch.nn.Module, str, torch.nn.Module, torch.nn.Module]]:
    """(parent, name, own layer, packed stand-in) for every bfloat16 CPU `nn.Linear` but the head,
    or none where they do not fit in memory or this CPU's oneDNN computes them otherwise."""
    if not _onednn_packing_available():
        return []
    places = [
        (parent, name, child)
        for parent in base.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child is not head
        and child.weight.dtype == torch.bfloat16 and child.weight.device.type == "cpu"
    ]
    needed = sum(child.weight.numel() * child.weight.element_size() for _, _, child in places)
    if not places or needed > MEMORY_SHARE * _available_memory():
        return []
    try:
        packed = [(parent, name, child, _PackedLinear(child, ROWS_HINT)) for parent, name, child in places]
    except RuntimeError:  # e.g. "bf16 path needs the cpu support avx_ne_convert or avx512bw…": no AVX-512
        return []  # this CPU's oneDNN has no bfloat16 layout to pack for: the model's own layers it is
    if not all(_agrees(own, stand_in) for _, _, own, stand_in in packed[:1] + packed[-1:]):
        return []  # this CPU's oneDNN computes them otherwise (or not at all): the model's own layers it is
    return packed


@torch.inference_mode()
def _agrees(own: torch.nn.Linear, packed: _PackedLinear) -> bool:
    """A probe on this machine: the packed layer gives the own layer's bits."""
    x = torch.randn(3, 5, own.in_features, generator=torch.Generator().manual_seed(0)).to(own.weight.dtype)
    try:
        return torch.equal(own(x), packed(x))
    except RuntimeError:  # e.g. no bfloat16 inner product on this CPU
        return False


def _onednn_packing_available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable; elsewhere none, so nothing is packed)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- act_fn(gate) * up in one pass ---------------------------------------------------------------

_SOURCE = Path(__file__).with_name("act_mul.c")
_library: list = []  # compiled once per process: [ctypes library] or [None]


def _compiled():
    """act_mul.c compiled with the machine's C compiler (`$CC`, else cc or gcc) into a temporary
    directory and loaded; None where there is no compiler or it fails."""
    if _library:
        return _library[0]
    library = None
    compiler = next((shutil.which(c) for c in (os.environ.get("CC"), "cc", "gcc") if c and shutil.which(c)), None)
    if compiler and _SOURCE.is_file():
        with tempfile.TemporaryDirectory(prefix="harness-kernels-") as tmp:
            lib = Path(tmp) / "act_mul.so"
            # For this machine's vector units (the library lives as long as the process); plain -O3
            # where the compiler does not know -march=native. No contraction into fused multiply-adds:
            # each operation rounds as torch's does.
            for flags in (["-O3", "-march=native"], ["-O3"]):
                try:
                    subprocess.run([compiler, *flags, "-ffp-contract=off", "-shared", "-fPIC", "-pthread", str(_SOURCE),
                                    "-o", str(lib), "-lm"], check=True, capture_output=True, timeout=60)
                    library = ctypes.CDLL(str(lib))  # stays mapped once the file is gone
                    library.harness_act_mul.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                                        ctypes.c_int64, ctypes.c_int]
                    library.harness_rotary.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 7
                    library.harness_gemma3_norm.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [
                        ctypes.c_float, ctypes.c_int, ctypes.c_int]
                    library.harness_mean_squares.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_int]
                    break
                except (OSError, subprocess.SubprocessError, AttributeError):
                    library = None
    _library.append(library)
    return library


def _act_mul_function():
    """`harness_act_mul` from act_mul.c, or None."""
    library = _compiled()
    return None if library is None else library.harness_act_mul


def _every_bfloat16() -> torch.Tensor:
    return torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


@dataclass
class _ActMul:
    """`act(gate) * up` written over `gate`, for one activation module's table."""

    function: object
    table: torch.Tensor  # float32, 65,536 entries: the activation of each bfloat16 bit pattern

    @classmethod
    @torch.inference_mode()
    def of(cls, act_fn: torch.nn.Module) -> _ActMul | None:
        function = _act_mul_function()
        if function is None:
            return None
        try:
            table = act_fn(_every_bfloat16())
        except Exception:  # not an element-wise function of a tensor
            return None
        if table.dtype != torch.bfloat16 or table.shape != (65536,):
            return None
        made = cls(function, table.float().contiguous())
        return made if made._agrees(act_fn) else None

    def __call__(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if not (gate.dtype == up.dtype == torch.bfloat16 and gate.shape == up.shape
                and gate.is_contiguous() and up.is_contiguous() and gate.device.type == "cpu"):
            raise ValueError("act_mul takes contiguous bfloat16 CPU tensors of one shape")
        if torch.autograd._profiler_enabled():  # named in a profile (benchmarks/profile_scoring.py)
            with torch.profiler.record_function("harness::act_mul"):
                self._run(gate, up)
        else:
            self._run(gate, up)
        return gate

    def _run(self, gate: torch.Tensor, up: torch.Tensor) -> None:
        # torch's threads, but no thread for fewer than 64K elements: starting one costs more than it saves
        threads = max(1, min(torch.get_num_threads(), gate.numel() // 65536))
        self.function(gate.data_ptr(), up.data_ptr(), self.table.data_ptr(), gate.numel(), threads)

    def _agrees(self, act_fn) -> bool:
        """A probe: every bfloat16 gate value (NaNs, infinities, subnormals included) times ordinary,
        tiny and huge values of up gives the bits of `act_fn(gate) * up`."""
        gate = _every_bfloat16().repeat(3)
        g = torch.Generator().manual_seed(0)
        up = torch.cat([torch.randn(65536, generator=g), torch.randn(65536, generator=g) * 1e-38,
                        torch.randn(65536, generator=g) * 1e36]).bfloat16()
        expected = act_fn(gate) * up
        got = self(gate.clone(), up)
        return torch.equal(got.view(torch.int16), expected.view(torch.int16))


def _gated_mlp_forward(module, act_mul: _ActMul):
    def forward(x):
        gate, up = module.gate_proj(x), module.up_proj(x)
        if gate.shape == up.shape and gate.is_contiguous() and up.is_contiguous():
            return module.down_proj(act_mul(gate, up))
        return module.down_proj(module.act_fn(gate) * up)  # (fresh projections are contiguous; in case)

    return forward


def _is_gated_mlp(module) -> bool:
    """A gated MLP (Llama, Qwen2, Gemma 3...): `down_proj(act_fn(gate_proj(x)) * up_proj(x))`; the
    probe confirms the formula on this module before it is used."""
    return type(module).__name__.endswith("MLP") and all(
        isinstance(getattr(module, name, None), torch.nn.Module) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")
    )


@torch.inference_mode()
def _same_forward(own, stand_in, inputs) -> bool:
    """The same bits (a bfloat16 result's bit patterns, so -0 is not +0) on every input."""
    def bits(t):
        return t.view(torch.int16) if t.dtype == torch.bfloat16 else t

    try:
        return all(torch.equal(bits(own(x)), bits(stand_in(x))) for x in inputs)
    except Exception:
        return False


# --- Gemma 3's RMSNorm --------------------------------------------------------------------------


def _gemma3_norm_forward(module):
    """Gemma3RMSNorm's forward for bfloat16 input with the same operations: x.float() scaled by
    rsqrt(mean(x^2) + eps) in place, times (1 + weight) rounded straight into a bfloat16 tensor."""
    own = type(module).forward.__get__(module)
    scale = 1.0 + module.weight.detach().float()

    def forward(x):
        if x.dtype != torch.bfloat16:
            return own(x)
        xf = x.float()
        xf.mul_(torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + module.eps))
        return torch.mul(xf, scale, out=torch.empty_like(x))

    return forward


def _gemma3_norm_one_pass(module, lanes: int):
    """The same norm in one pass per row (`harness_gemma3_norm` in act_mul.c), summing the squares in
    the order torch's `lanes`-wide vector code sums them; other inputs go to the in-place forward."""
    library = _compiled()
    if library is None:
        return None
    in_place = _gemma3_norm_forward(module)
    scale = (1.0 + module.weight.detach().float()).contiguous()
    width, eps = scale.numel(), float(module.eps)

    def forward(x):
        if not (x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.dim() >= 1 and x.shape[-1] == width
                and x.is_contiguous() and not x.requires_grad):
            return in_place(x)
        out = torch.empty_like(x)
        threads = max(1, min(torch.get_num_threads(), x.numel() // 65536))  # no thread for under 64K elements
        # named in a profile (benchmarks/profile_scoring.py)
        with torch.profiler.record_function("harness::gemma3_norm") if torch.autograd._profiler_enabled() \
                else contextlib.nullcontext():
            library.harness_gemma3_norm(x.data_ptr(), out.data_ptr(), scale.data_ptr(), x.numel() // width, width,
                                        eps, lanes, threads)
        return out

    return forward


@torch.inference_mode()
def _sums_agree(width: int, lanes: int) -> bool:
    """A probe of the order of the sum: the one-pass norm's mean of squares equals torch's
    `x.float().pow(2).mean(-1)` bit for bit on rows whose values spread over many magnitudes (so the
    partial sums round), summed `lanes` at a time."""
    library = _compiled()
    if library is None:
        return False
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(256, width, generator=g) * torch.exp(torch.randn(256, width, generator=g) * 3)).bfloat16()
    expected = x.float().pow(2).mean(-1)
    got = torch.empty(256)
    library.harness_mean_squares(x.data_ptr(), got.data_ptr(), 256, width, lanes)
    return torch.equal(got.view(torch.int32), expected.view(torch.int32))


def _is_gemma3_norm(module) -> bool:
    return type(module).__name__ in ("Gemma3RMSNorm",) and isinstance(getattr(module, "weight", None), torch.Tensor)


@functools.lru_cache(maxsize=8)
def _norm_probe(width: int) -> tuple[torch.Tensor, ...]:
    """Inputs for probing a norm of this width (made once per width; read, never written)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 7, 3, width, generator=g) * 4).bfloat16()
    rows = torch.randn(6, 8, width, generator=g) * torch.tensor([1.0, 1e-20, 1e-3, 30.0, 1e15, 1e25]).view(6, 1, 1)
    rows[0, 0] = 0.0  # a row of zeros: eps alone
    spread = (torch.randn(2 * 65536 // width + 1, width, generator=g) * 2).bfloat16()  # over 128K elements: two threads
    return x, x.transpose(1, 2), x[:, :1], rows.bfloat16(), spread  # contiguous, strided (per-head norms), one position


# --- rotary position embeddings ------------------------------------------------------------------


class _Rotary:
    """A modeling module's `apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)` in one pass per
    tensor; any other call (another dtype or layout) goes to the module's own."""

    def __init__(self, own, function):
        self.own, self.function = own, function

    def __call__(self, q, k, cos, sin, unsqueeze_dim=1):
        if not (unsqueeze_dim == 1 and self._takes(q, cos, sin) and self._takes(k, cos, sin)):
            return self.own(q, k, cos, sin, unsqueeze_dim)
        if torch.autograd._profiler_enabled():  # named in a profile (benchmarks/profile_scoring.py)
            with torch.profiler.record_function("harness::rotary"):
                return self._run(q, cos, sin), self._run(k, cos, sin)
        return self._run(q, cos, sin), self._run(k, cos, sin)

    @staticmethod
    def _takes(x, cos, sin) -> bool:
        if not (x.dtype == cos.dtype == sin.dtype == torch.bfloat16 and x.dim() == 4 and x.device.type == "cpu"):
            return False
        b, _, t, d = x.shape
        return (d % 2 == 0 and x.stride(3) == 1 and cos.shape == sin.shape == (b, t, d)
                and cos.is_contiguous() and sin.is_contiguous() and not x.requires_grad)

    def _run(self, x, cos, sin):
        out = torch.empty_like(x)  # the same strides (a dense layout): what torch's own result has
        if out.stride() != x.stride():
            out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype)
        b, h, t, d = x.shape
        self.function(x.data_ptr(), out.data_ptr(), cos.data_ptr(), sin.data_ptr(), b, h, t, d, *x.stride()[:3])
        return out

    @torch.inference_mode()
    def agrees(self, heads: int, kv_heads: int, dim: int) -> bool:
        """A probe: queries and keys laid out as projections give them (and contiguous), ordinary,
        tiny and huge values, against the module's own function, bit for bit."""
        g = torch.Generator().manual_seed(0)
        for scale in (1.0, 1e-30, 1e30):
            for b, t in ((2, 7), (1, 1)):
                q = (torch.randn(b, t, heads * dim, generator=g) * scale).bfloat16().view(b, t, heads, dim).transpose(1, 2)
                k = (torch.randn(b, t, kv_heads * dim, generator=g) * scale).bfloat16().view(b, t, kv_heads, dim).transpose(1, 2)
                angle = torch.rand(b, t, dim, generator=g) * 1000
                cos, sin = angle.cos().bfloat16(), angle.sin().bfloat16()
                for qq, kk in ((q, k), (q.contiguous(), k.contiguous())):
                    expected, got = self.own(qq, kk, cos, sin), self(qq, kk, cos, sin)
                    if not all(torch.equal(e.view(torch.int16), o.view(torch.int16)) and _same_layout(e, o)
                               for e, o in zip(expected, got)):
                        return False
        return True


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same strides where they matter (a dimension of size 1 has any)."""
    return all(n == 1 or x == y for n, x, y in zip(a.shape, a.stride(), b.stride()))


def _rotary_stand_ins(base) -> list[tuple[object, _Rotary]]:
    """(modeling module, stand-in) for the module of each attention layer that calls its module's
    `apply_rotary_pos_emb`, where the probe agrees on that layer's shapes; [] if any disagrees."""
    library = _compiled()
    found: dict = {}
    for module in base.modules():
        if not (type(module).__name__.endswith("Attention") and _on_cpu_in_bfloat16(module)):
            continue
        source = sys.modules.get(type(module).__module__)
        own = getattr(source, "apply_rotary_pos_emb", None)
        dims = (getattr(module, "head_dim", None), getattr(getattr(module, "config", None), "num_attention_heads", None),
                getattr(getattr(module, "config", None), "num_key_value_heads", None))
        if own is None or library is None or not all(isinstance(v, int) for v in dims):
            return []
        if source not in found:
            stand_in = _Rotary(own, library.harness_rotary)
            if not stand_in.agrees(dims[1], dims[2], dims[0]):
                return []
            found[source] = stand_in
    return list(found.items())


# --- the set of them ----------------------------------------------------------------------------


@dataclass
class CpuKernels:
    """The stand-ins one bfloat16 CPU model gets; `kinds` says which (the run record's `runtime.kernels`)."""

    linears: list[tuple[torch.nn.Module, str, torch.nn.Module, torch.nn.Module]] = field(default_factory=list)
    forwards: list[tuple[torch.nn.Module, object]] = field(default_factory=list)  # (module, stand-in forward)
    functions: list[tuple[object, str, object]] = field(default_factory=list)  # (python module, name, stand-in)
    kinds: list[str] = field(default_factory=list)

    @classmethod
    def for_model(cls, model, device) -> CpuKernels | None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if torch.device(device).type != "cpu" or base is not model:
            return None  # (an adapter wraps the layers: they are left as they are)
        if any(hasattr(m, "_hf_hook") or "forward" in vars(m) for m in base.modules()):
            return None  # accelerate places (or offloads) the layers through hooks on them
        kernels = cls(linears=_packed_linears(base, base.get_output_embeddings()))
        if kernels.linears:
            kernels.kinds.append(PACKED_LINEAR)
        kernels._add(base, _is_gated_mlp, TABLE_ACT_MUL, cls._gated_mlp)
        kernels._add(base, _is_gemma3_norm, GEMMA3_NORM_ONE_PASS, cls._gemma3_norm_one_pass)
        if GEMMA3_NORM_ONE_PASS not in kernels.kinds:
            kernels._add(base, _is_gemma3_norm, GEMMA3_NORM, cls._gemma3_norm)
        rotary = _rotary_stand_ins(base)
        if rotary:
            kernels.functions.extend((source, "apply_rotary_pos_emb", stand_in) for source, stand_in in rotary)
            kernels.kinds.append(ROTARY)
        return kernels if kernels.kinds else None

    def _add(self, base, matches, kind, stand_in_for) -> None:
        """Every module `matches` takes, each with its stand-in, if each one's probe agrees."""
        modules = [m for m in base.modules() if matches(m) and _on_cpu_in_bfloat16(m)]
        tables: dict = {}
        made = [stand_in_for(m, tables) for m in modules]
        if modules and all(f is not None for f in made):  # one that disagrees: none of them
            self.forwards.extend(zip(modules, made))
            self.kinds.append(kind)

    @staticmethod
    def _gated_mlp(module, tables: dict):
        key = (type(module.act_fn), repr(module.act_fn))
        if key not in tables:
            tables[key] = _ActMul.of(module.act_fn)
        if tables[key] is None:
            return None
        forward = _gated_mlp_forward(module, tables[key])
        x = torch.randn(2, 5, module.gate_proj.in_features, generator=torch.Generator().manual_seed(0)).bfloat16()
        return forward if _same_forward(module, forward, [x]) else None

    @staticmethod
    def _gemma3_norm_one_pass(module, tables: dict):
        """The one-pass norm with the vector width whose sums give torch's bits on this CPU (tried
        once per width: torch sums 8 lanes at a time on AVX2 and AVX-512 alike, 16 tried too), or None."""
        width = module.weight.shape[-1]
        if ("lanes", width) not in tables:
            tables["lanes", width] = next((lanes for lanes in (8, 16) if _sums_agree(width, lanes)), None)
        lanes = tables["lanes", width]
        forward = None if lanes is None else _gemma3_norm_one_pass(module, lanes)
        # every input for the first norm of a width; for the others (the same code, their own weight) the first input
        probe = _norm_probe(width)[:1] if ("probed", width) in tables else _norm_probe(width)
        tables["probed", width] = True
        return forward if forward is not None and _same_forward(module, forward, probe) else None

    @staticmethod
    def _gemma3_norm(module, _tables: dict):
        forward = _gemma3_norm_forward(module)
        return forward if _same_forward(module, forward, _norm_probe(module.weight.shape[-1])) else None

    @contextlib.contextmanager
    def swapped(self):
        for parent, name, _, stand_in in self.linears:
            setattr(parent, name, stand_in)
        for module, forward in self.forwards:
            module.forward = forward
        for source, name, stand_in in self.functions:
            setattr(source, name, stand_in)
        try:
            yield
        finally:
            for source, name, stand_in in self.functions:
                setattr(source, name, stand_in.own)
            for module, _ in self.forwards:
                del module.forward
            for parent, name, own, _ in self.linears:
                setattr(parent, name, own)


def _on_cpu_in_bfloat16(module) -> bool:
    params = list(module.parameters())
    return bool(params) and all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in params)
