"""What a benchmark ran on, and whether anything else ran beside it: the facts every benchmark records.

A figure measured beside another busy process is not a figure of the harness (two OpenMP threads
wait for each other at every barrier: one low-priority neighbour made a 64 s run take 155 s), so
each benchmark records the CPU, the load before it, the CPU time other processes took while it
ran, and the load after; a busy run is flagged, and `refuse_busy_overwrite` keeps its figures out
of benchmarks/results/.

    watch = LoadWatch()            # the load average, and a quiet second of /proc/stat, before
    ...                            # the measurement (subprocesses included once waited for)
    load = watch.finish()          # {"before": ..., "during": ..., "after": ..., "busy": ..., "busy_reasons": [...]}
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BUSY_LOAD_AVERAGE = 0.5  # the 1-minute load average before a measurement
BUSY_OTHER_CORES = 0.10  # cores' worth of CPU time other processes took, before or during
_CPU_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx2")


def cpu_facts() -> dict:
    """The CPU model, its core count, and the flags bf16 speed depends on (AMX tiles, AVX-512 BF16)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # the first processor's lines
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux: the model and core count are all we know
        pass
    flags = set(info.get("flags", "").split())
    facts = {"cpu_model": info.get("model name") or platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    facts.update({flag: flag in flags for flag in _CPU_FLAGS})
    facts["amx"] = facts["amx_bf16"] and facts["amx_tile"]
    return facts


def _busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (/proc/stat; steal counts: another guest ran)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for (theirs, transitively)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuMeter:
    """How many cores' worth of CPU time other processes took since it was made."""

    def __init__(self):
        self.wall, self.busy, self.own = time.monotonic(), _busy_seconds(), own_cpu_seconds()

    def other_cores(self) -> float | None:
        busy = _busy_seconds()
        if busy is None or self.busy is None:
            return None
        wall = max(time.monotonic() - self.wall, 1e-9)
        return round(max(0.0, (busy - self.busy) - (own_cpu_seconds() - self.own)) / wall, 3)


def quiet_sample(seconds: float = 1.0) -> float | None:
    """Cores' worth of CPU other processes use while this one sleeps for `seconds`."""
    meter = CpuMeter()
    time.sleep(seconds)
    return meter.other_cores()


class LoadWatch:
    """The machine's load around one measurement; `finish()` says whether it was busy, and why."""

    def __init__(self, quiet_seconds: float = 1.0):
        self.before = {"load_average": _load_average(), "other_cores": quiet_sample(quiet_seconds)}
        self.meter = CpuMeter()

    def finish(self) -> dict:
        during = {"other_cores": self.meter.other_cores(), "seconds": round(time.monotonic() - self.meter.wall, 1)}
        after = {"load_average": _load_average()}
        reasons = busy_reasons(self.before, during)
        return {"before": self.before, "during": during, "after": after, "busy": bool(reasons), "busy_reasons": reasons}


def busy_reasons(before: dict, during: dict | None = None) -> list[str]:
    """Why a measurement's figures are not an idle machine's (empty: they are)."""
    reasons = []
    load = before.get("load_average")
    if load and load[0] >= BUSY_LOAD_AVERAGE:
        reasons.append(f"load average {load[0]:.2f} before (>= {BUSY_LOAD_AVERAGE})")
    for when, sample in (("before", before), ("during", during or {})):
        cores = sample.get("other_cores")
        if cores is not None and cores > BUSY_OTHER_CORES:
            reasons.append(f"other processes used {cores:.2f} of a core {when} (> {BUSY_OTHER_CORES})")
    return reasons


def wait_until_idle(seconds: float) -> None:
    """Wait up to `seconds` for the 1-minute load average to fall below the busy mark (it decays
    for a minute or two after a previous run), printing where it stands."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (_load_average() or [0])[0] >= BUSY_LOAD_AVERAGE:
        print(f"waiting for the load average ({_load_average()[0]:.2f}) to fall below {BUSY_LOAD_AVERAGE}", file=sys.stderr)
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))


def count_busy_rows(load: dict, rows: list[dict]) -> dict:
    """`load`, busy too if any measurement row was (each row's `busy`: other processes > 0.1 core during it,
    rows reused from an earlier invocation included)."""
    busy = [r for r in rows if r.get("busy")]
    if busy:
        load["busy"] = True
        load["busy_reasons"].append(f"other processes took > {BUSY_OTHER_CORES} of a core during {len(busy)} of {len(rows)} measurements")
    return load


def row_is_busy(other_cores: float | None) -> bool:
    return bool(busy_reasons({}, {"other_cores": other_cores}))


def describe_cpu(facts: dict) -> str:
    """One line: `AMD EPYC, 2 CPUs (no AMX, AVX-512 BF16)`."""
    amx = "AMX" if facts.get("amx") else "no AMX"
    return f"{facts.get('cpu_model', 'CPU')}, {facts['cpus']} CPUs ({amx}{', AVX-512 BF16' if facts.get('avx512_bf16') else ''})"


def describe(load: dict) -> str:
    """One line for the printed output: the load figures, and BUSY with its reasons."""
    before, during, after = load["before"], load["during"], load["after"]
    line = (f"load average {_fmt(before['load_average'])} before, {_fmt(after['load_average'])} after; "
            f"other processes {_cores(before['other_cores'])} before, {_cores(during['other_cores'])} during")
    if load["busy"]:
        line += " -- BUSY MACHINE, figures not comparable: " + "; ".join(load["busy_reasons"])
    return line


def refuse_busy_overwrite(target: Path, load: dict, allow_busy: bool) -> str | None:
    """Why busy figures may not be written to `target` (one of benchmarks/results/*.json), or None."""
    if not load["busy"] or allow_busy or Path(target).resolve().parent != RESULTS.resolve():
        return None
    return (f"not writing {target}: the machine was busy ({'; '.join(load['busy_reasons'])}); "
            "rerun on an idle machine, pass --json elsewhere, or --allow-busy to keep them anyway")


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _fmt(load: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in load) if load else "unknown"


def _cores(cores: float | None) -> str:
    return "unknown" if cores is None else f"{cores:.2f} cores"
