"""`harness eval`: score a model; writes one run directory per shots setting."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.commands.args import (
    add_data_arguments,
    add_gate_arguments,
    add_model_arguments,
    add_prompt_arguments,
    cache_dir,
    chat_mode,
    gate_flag_given,
    gate_plan,
    given,
    model_spec,
    registry,
    subject_keys,
)
from harness.errors import HarnessError
from harness.files import check_directory_target


def register(sub) -> None:
    p = sub.add_parser("eval", help="score a model; writes a run directory")
    add_model_arguments(p)
    add_prompt_arguments(p, "few-shot examples, 0..5; repeat for several settings (default 5)")
    add_data_arguments(p)
    p.add_argument("--output", type=given, help="run directory (with several --shots: one sub-run DIR/shots-K each)")
    p.add_argument("--limit", type=int, help="score only the first N questions of each subject (a smoke test, not a score)")
    p.add_argument("--batch-size", type=int, default=8, help="questions per forward pass (default 8)")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="cap on batch rows × padded length (default 16384)")
    p.add_argument("--no-prefix-cache", action="store_true", help="recompute the shared few-shot prefix for every question")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                   help="hf: transformers (default); vllm: vLLM with prefix caching (extra [vllm], CUDA)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per model for --backend vllm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--gate-baseline",
        type=given,
        metavar="RUN_DIR",
        help="then gate the new run against this accepted run with the gate flags below, exiting 1 on a regression "
        "(with several --shots: a directory of shots-K sub-runs, each gating the same shots)",
    )
    add_gate_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from harness.evaluate import EvalSettings, check_run_dir, evaluate, run_settings
    from harness.models import cpu_dtype_note, load_model
    from harness.prompts import PromptFormat
    from harness.records import RESULTS, SETTINGS
    from tasks import check_shots, get_protocol, load_benchmark

    shots_list = list(dict.fromkeys(args.shots or [5]))
    for k in shots_list:
        check_shots(k)
    protocol = get_protocol(args.protocol)
    chat = chat_mode(args)
    if args.limit is not None and args.limit < 1:
        raise HarnessError("--limit must be at least 1")
    if args.batch_size < 1 or args.max_batch_tokens < 1:
        raise HarnessError("--batch-size and --max-batch-tokens must be at least 1")
    if args.tensor_parallel_size < 1:
        raise HarnessError("--tensor-parallel-size must be at least 1")
    if args.tensor_parallel_size != 1 and args.backend != "vllm":
        raise HarnessError(
            f"--tensor-parallel-size {args.tensor_parallel_size} is for --backend vllm; "
            "the hf backend splits a model over GPUs with --device-map auto"
        )
    spec = model_spec(args)
    if not args.gate_baseline and gate_flag_given(args):
        raise HarnessError(f"{gate_flag_given(args)} is a gate flag: add --gate-baseline RUN_DIR (or run harness gate)")
    multi = len(shots_list) > 1
    for shots in shots_list:  # nor an output directory that cannot be made
        check_directory_target(output_dir(args, shots, multi))
    if multi and args.output and (Path(args.output) / SETTINGS).is_file():
        raise HarnessError(f"--output {args.output} holds a run of one setting; several --shots need a directory of their own")
    data, data_info = load_benchmark(args.data_dir, subject_keys(args), args.normalize, registry(args))
    # before the model loads: a bad baseline should not cost an evaluation
    gate = _gate(args, protocol, shots_list, chat, [d.subject.key for d in data])
    runs = {
        shots: EvalSettings(
            fmt=PromptFormat(protocol, shots, chat),
            limit=args.limit,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            prefix_cache=not args.no_prefix_cache,
            seed=args.seed,
        )
        for shots in shots_list
    }
    for shots, settings in runs.items():  # a run of other settings there is refused before the model loads
        check_run_dir(output_dir(args, shots, multi), run_settings(data, settings, data_info))
    workers = workers_from_env()
    if workers.world_size > 1 and spec.device == "auto" and spec.device_map is None:
        spec = replace(spec, device=local_device())
    if args.backend == "vllm":
        from harness.vllm_backend import load_vllm

        if workers.world_size > 1:
            raise HarnessError("--backend vllm runs as one process; spread it over GPUs with --tensor-parallel-size")
        loaded = load_vllm(spec, cache_dir(), args.tensor_parallel_size)
    else:
        loaded = load_model(spec, cache_dir())
    note = cpu_dtype_note(loaded.info)
    if note and workers.is_main:
        print(f"harness eval: {note}", file=sys.stderr)
    written = {}
    for shots, settings in runs.items():
        out = output_dir(args, shots, multi)
        finished = (out / RESULTS).is_file()
        record = evaluate(
            loaded, data, settings, out, data_info=data_info, workers=workers, progress=not args.no_progress
        )
        if record is not None:  # the main worker's: it wrote the record
            print(format_summary(out, record))
            if finished:
                print(f"harness eval: {out} is finished already: its record was verified and is unchanged", file=sys.stderr)
            written[shots] = out
    return gate.judge(written) if gate and workers.is_main else 0


def _gate(args, protocol, shots_list: list[int], chat: str | None, subjects: list[str]):
    """The gate of this evaluation (`harness.gating.EvalGate`), or None without --gate-baseline."""
    if not args.gate_baseline:
        return None
    from harness.gating import eval_gate  # here: an evaluation without a gate does not import it
    from harness.records import RunSettings

    plan = gate_plan(args)
    planned = [RunSettings.of(protocol.name, protocol.version, k, chat, subjects, args.limit, args.normalize) for k in shots_list]
    return eval_gate(plan, Path(args.gate_baseline), planned)


def workers_from_env():
    """Data-parallel workers as torchrun / accelerate launch describe them (WORLD_SIZE, RANK)."""
    import torch

    from harness.evaluate import Workers

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Workers()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Workers(rank=torch.distributed.get_rank(), world_size=world_size)


def local_device() -> str:
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def output_dir(args, shots: int, multi: bool) -> Path:
    """--output DIR for one setting; DIR/shots-K for each of several; runs/<model>-<protocol>-Kshot by default."""
    if args.output:
        base = Path(args.output)
        return base / f"shots-{shots}" if multi else base
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(args.model.rstrip("/")).name)
    chat = "-chat" if chat_mode(args) else ""
    return Path("runs") / f"{slug}-{args.protocol}{chat}-{shots}shot"


def format_summary(out: Path, record) -> str:
    """The table `harness eval` prints for a finished run (a `harness.records.RunRecord`): per
    subject, overall, and per category and group where the run has them."""
    s, scores = record.settings, record.scores
    w = max([24, *(len(k) + 2 for k in scores.subjects), *(len(p.name) + 2 for p in s.parts)])
    lines = [f"{out}  ({record.model.name}, {s.protocol}/v{s.version}, {s.shots}-shot{', chat' if s.chat else ''})"]
    lines.append(f"  {'subject':<{w}}{'n':>5}{'correct':>9}{'accuracy':>10}   95% CI")
    for key, x in scores.subjects.items():
        lines.append(f"  {key:<{w}}{x.n:>5}{x.correct:>9}{100 * x.accuracy:>9.2f}%   [{100 * x.low:.1f}, {100 * x.high:.1f}]")
    o, m = scores.micro, scores.macro
    lines.append(f"  {'overall (micro)':<{w}}{o.n:>5}{o.correct:>9}{100 * o.accuracy:>9.2f}%   [{100 * o.low:.1f}, {100 * o.high:.1f}]")
    lines.append(f"  {'overall (macro)':<{w}}{'':>5}{'':>9}{100 * m.accuracy:>9.2f}%   [{100 * m.low:.1f}, {100 * m.high:.1f}]")
    if s.parts:
        lines.append(f"  {'category / group':<{w}}{'n':>6}{'subjects':>9}{'micro':>10}{'macro':>10}")
        for p in s.parts:
            micro, macro = scores.parts[p.name]
            count = f"{len(p.subjects)}" + ("" if p.complete else f"/{p.of}")
            lines.append(f"  {p.name:<{w}}{micro.n:>6}{count:>9}{100 * micro.accuracy:>9.2f}%{100 * macro.accuracy:>9.2f}%")
    if s.missing:
        lines.append(f"  left out (no files in the data directory): {', '.join(s.missing)}")
    return "\n".join(lines)
