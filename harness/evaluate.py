"""One evaluation run: prompts → token ids → batched letter scoring → run record.

Samples are appended as batches finish, so an interrupted run resumes where it stopped; the
summary is written atomically at the end, so a failed run never replaces a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

from harness import __version__
from harness.errors import HarnessError, ModelError, RunError
from harness.files import json_kind, make_directories, remove_empty, write_json
from harness.models import LoadedModel
from harness.prompts import PromptFormat, subject_prompts
from harness.records import (
    RESULTS,
    SETTINGS,
    ModelInfo,
    RunRecord,
    RunSettings,
    Sample,
    load_run,
    rank_sample_log,
    read_all_samples,
    seal,
    summarize,
    with_selection,
    write_samples,
)
from harness.scoring import Batch, Encoded, LetterScorer, encode_prompts, plan_batches
from tasks import SubjectData


@dataclass(frozen=True)
class EvalSettings:
    """How to score: the prompt format and the engine's knobs (which never change predictions)."""

    fmt: PromptFormat
    limit: int | None = None
    batch_size: int = 8
    max_batch_tokens: int = 16384
    prefix_cache: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Prepared:
    """The questions of every subject, encoded, in canonical order."""

    subject_keys: list[str]
    questions: list[list]  # per subject: Question objects
    encoded: list[list[Encoded]]  # per subject: token ids and letter ids

    @property
    def n(self) -> int:
        return sum(len(q) for q in self.questions)


def prepare(loaded: LoadedModel, data: list[SubjectData], settings: EvalSettings) -> Prepared:
    fmt = settings.fmt
    keys, questions, encoded = [], [], []
    for d in data:
        pairs = subject_prompts(d, fmt, loaded.tokenizer, settings.limit)
        enc = encode_prompts(
            loaded.tokenizer,
            [p for _, p in pairs],
            fmt.protocol.continuations(),
            add_special_tokens=fmt.add_special_tokens,
            move_trailing_whitespace=fmt.protocol.move_trailing_whitespace,
            tokenizer_name=f"the tokenizer of {loaded.info.tokenizer}",
        )
        keys.append(d.subject.key)
        questions.append([q for q, _ in pairs])
        encoded.append(enc)
    _check_trained_context(loaded, encoded)
    return Prepared(keys, questions, encoded)


def _check_trained_context(loaded: LoadedModel, encoded: list[list[Encoded]]) -> None:
    """A converted checkpoint (harness.families) computes the original's mathematics only within
    its trained context (Qwen-1 rescales rotary and attention past it): longer prompts are refused."""
    fmt = loaded.info.extra.get("source_format")
    limit = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
    if not fmt or not isinstance(limit, int):
        return
    longest = max((len(e.input_ids) for enc in encoded for e in enc), default=0)
    if longest > limit:
        raise ModelError(
            f"{loaded.info.name}: the longest prompt is {longest} tokens, past the {limit} this {fmt} checkpoint was "
            f"trained for, beyond which its native loading does not reproduce the original; use fewer --shots"
        )


def run_settings(data: list[SubjectData], settings: EvalSettings, data_info: dict) -> RunSettings:
    """What the run measures: these prompts on these questions of this data."""
    fmt = settings.fmt
    run = RunSettings.of(
        fmt.protocol.name, fmt.protocol.version, fmt.shots, fmt.chat, [d.subject.key for d in data],
        settings.limit, data_info.get("normalize", "none"), {d.subject.key: d.sources for d in data},
    )
    return with_selection(run, data_info.get("selection"))


LOCK = ".lock"  # in a run directory while a `harness eval` writes it: the holder's pid


def check_run_dir(out_dir: Path, settings: RunSettings, model: ModelInfo | None = None) -> bool:
    """Whether `out_dir` holds a run started with these settings (False: it is absent or empty).
    A run of other settings, or a directory holding something else, is a RunError. Without
    `model`, this is the check made before the model is loaded."""
    import json

    settings_file = out_dir / SETTINGS
    if settings_file.is_file():
        try:
            old = json.loads(settings_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{settings_file} is corrupt ({e}); choose another --output") from None
        if not isinstance(old, dict):
            raise RunError(f"{settings_file} is corrupt (it holds {json_kind(old)}, not a JSON object); choose another --output")
        diff = settings.resume_difference(old, model)
        if diff:
            why = " (the model's files changed since that run)" if diff.field == "model.weights" else ""
            more = f"; {diff.count} settings differ" if diff.count > 1 else ""
            raise RunError(
                f"{out_dir} holds a run with other settings ({diff.field}: {_brief(diff.ours)} there, {_brief(diff.theirs)} now"
                f"{more}){why}; choose another --output"
            )
        return True
    if out_dir.exists() and any(p.name != LOCK for p in out_dir.iterdir()):
        raise RunError(f"{out_dir} exists and is not a run directory of this harness; choose another --output")
    return False


def _brief(value, width: int = 80) -> str:
    """A recorded value as a one-line message can hold it: long lists and objects summarised."""
    if isinstance(value, list) and len(repr(value)) > width:
        return f"{len(value)} items [{_brief(value[0], width // 2) if value else ''}, ...]"
    if isinstance(value, dict) and len(repr(value)) > width:
        return f"an object of {len(value)} fields ({', '.join(list(map(str, value))[:4])}{', ...' if len(value) > 4 else ''})"
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class _RunDir:
    """A run directory this process writes: what it created (to remove again on an early failure)
    and the lock it holds (an flock on the directory itself; `.lock` beside it names the holder)."""

    path: Path
    created: list[Path]  # the directories made, outermost first (`files.make_directories`)
    started: bool  # settings.json written by this process
    lock: int | None = None  # fd of the flock'ed directory

    def __enter__(self) -> _RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            with contextlib.suppress(OSError):  # the note first, then the lock: a next holder writes its own
                (self.path / LOCK).unlink(missing_ok=True)
            os.close(self.lock)
            self.lock = None

    def discard(self) -> None:
        """Leave nothing half-written behind: the directories made, or the emptied directory as it was."""
        self.release()
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            remove_empty(self.created)  # the parents, if nothing else was put there meanwhile
        else:  # the directory was there, empty: empty it again
            for path in self.path.iterdir():
                path.unlink(missing_ok=True)


def _open_run_dir(out_dir: Path, settings: RunSettings, model: ModelInfo, lock: bool = True) -> _RunDir:
    """Create the run directory or check that it holds the same run, and take its lock: two
    processes writing one run directory would each score every question."""
    if check_run_dir(out_dir, settings, model):
        run_dir = _RunDir(out_dir, [], False)
        if lock:
            run_dir.lock = _lock(out_dir)
        return run_dir
    created: list[Path] = []
    try:
        make_directories(out_dir, created)
    except OSError as e:
        remove_empty(created)
        raise RunError(f"cannot create {out_dir}: {e.strerror or e}") from None
    run_dir = _RunDir(out_dir, created, False)
    try:
        if lock:
            run_dir.lock = _lock(out_dir)
        if not check_run_dir(out_dir, settings, model):  # another process may have started it meanwhile
            write_json(out_dir / SETTINGS, settings.settings_json(model.resume_identity()))
            run_dir.started = True
    except BaseException:
        # Only what this process made and nobody else wrote into: another may have started it meanwhile.
        if run_dir.started or ((run_dir.lock is not None or not lock) and all(p.name == LOCK for p in out_dir.iterdir())):
            run_dir.discard()
        else:
            run_dir.release()
        raise
    return run_dir


def _lock(out_dir: Path) -> int | None:
    """An exclusive flock on the run directory, or a RunError naming its holder (the pid it left in
    `.lock`). Locking the directory itself needs no file, so a read-only finished run re-verifies."""
    try:
        import fcntl
    except ImportError:  # not on this platform: no lock, as before
        return None
    try:
        fd = os.open(out_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise RunError(f"cannot open {out_dir}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        try:
            holder = f"pid {(out_dir / LOCK).read_text(encoding='ascii').strip()}"
        except (OSError, UnicodeDecodeError):
            holder = "another process"
        raise RunError(
            f"{out_dir} is being written by another harness eval right now ({holder}); wait for it to finish "
            "(running this command again then reuses its answers) or choose another --output"
        ) from None
    with contextlib.suppress(OSError):  # who holds it, for whoever is refused; not needed for the lock
        (out_dir / LOCK).write_text(str(os.getpid()), encoding="ascii")
    return fd


@dataclass(frozen=True)
class Workers:
    """This process's place among data-parallel evaluation processes (torchrun, accelerate launch)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def agree(self, message: str | None) -> str | None:
        """The main worker's `message` on every worker (a barrier too): a refusal only the main
        worker can see (the run directory) stops them all, instead of leaving them at a barrier."""
        if self.world_size == 1:
            return message
        shared = [message]
        torch.distributed.broadcast_object_list(shared, src=0)
        return shared[0]


def assign(batches: list[Batch], cost, workers: Workers) -> list[Batch]:
    """This worker's share: batches dealt largest first to the least-loaded worker (by tokens)."""
    load = [0] * workers.world_size
    mine = []
    for batch in sorted(batches, key=lambda b: (-cost(b), b.group, b.items)):
        rank = min(range(workers.world_size), key=lambda r: (load[r], r))
        load[rank] += cost(batch)
        if rank == workers.rank:
            mine.append(batch)
    return sorted(mine, key=batches.index)  # back in plan order: one prefix cache per subject


def _process_age() -> float | None:
    """Seconds since this process started (Linux's /proc, to 1/100 s); None where that is not known."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")  # field 22
        with open("/proc/uptime", encoding="ascii") as f:
            return max(float(f.read().split()[0]) - started, 0.0)
    except (OSError, ValueError, IndexError):
        return None


def evaluate(
    loaded: LoadedModel,
    data: list[SubjectData],
    settings: EvalSettings,
    out_dir: Path,
    *,
    data_info: dict,
    workers: Workers = Workers(),
    progress: bool = True,
) -> RunRecord | None:
    """Score every question (resuming a partial run in `out_dir`) and write its run record.

    With several workers, each scores its share and the main worker writes the record (and
    returns it; the others return None).
    """
    started_at = _now()
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    prepared = prepare(loaded, data, settings)
    prepare_seconds = time.perf_counter() - t0
    run = run_settings(data, settings, data_info)
    out_dir = Path(out_dir)
    run_dir, refused = None, None
    if workers.is_main:
        try:
            run_dir = _open_run_dir(out_dir, run, loaded.info)
        except HarnessError as e:
            refused = e
    shared = workers.agree(str(refused) if refused else None)
    if refused:
        raise refused
    if shared:
        raise RunError(shared)  # the main worker's refusal, on this worker too
    with run_dir or contextlib.nullcontext():  # the lock is released however this ends
        done: dict = {}
        keys = [[(key, q.id) for q in qs] for key, qs in zip(prepared.subject_keys, prepared.questions)]
        wanted = [k for group in keys for k in group]
        answers = {k: q.answer for group, qs in zip(keys, prepared.questions) for k, q in zip(group, qs)}
        try:
            if not workers.is_main:
                _open_run_dir(out_dir, run, loaded.info, lock=False)
            if (out_dir / RESULTS).is_file():  # finished: verified, never rewritten
                finished = _finished_run(out_dir, run, answers)
                workers.barrier()
                return finished if workers.is_main else None
            own_log = rank_sample_log(out_dir, workers.rank, workers.world_size)
            own_log.repair()
            done = read_all_samples(out_dir)
            workers.barrier()  # every worker has read what is done before anyone appends
            _check_done(out_dir, done, answers)
            resumed = len(done)

            plan = plan_batches(
                prepared.encoded,
                batch_size=settings.batch_size,
                max_batch_tokens=settings.max_batch_tokens,
                prefix_cache=settings.prefix_cache,
            )
            pending = [b for b in plan if not all(keys[b.group][i] in done for i in b.items)]

            def cost(b: Batch) -> int:
                return sum(len(prepared.encoded[b.group][i].input_ids) - b.prefix_len for i in b.items)

            mine = assign(pending, cost, workers)
            scorer = letter_scorer(loaded)
            t1 = time.perf_counter()
            startup_seconds = _process_age()  # what a user waits before the first question is scored
            with tqdm(
                total=sum(len(b.items) for b in mine),
                unit="q",
                desc=f"{loaded.info.name} {settings.fmt.protocol.name} {settings.fmt.shots}-shot",
                file=sys.stderr,
                disable=not progress or not workers.is_main,
                dynamic_ncols=True,
            ) as bar:
                for batch in mine:
                    logits = scorer.score(batch, prepared.encoded[batch.group])
                    new = []
                    for i, row in zip(batch.items, logits):
                        key = keys[batch.group][i]
                        if key not in done:
                            new.append(Sample.scored(key[0], key[1], prepared.questions[batch.group][i].answer, row))
                    own_log.append(new)
                    done.update((s.key, s) for s in new)
                    bar.update(len(batch.items))
        except BaseException:
            if run_dir is not None and run_dir.started and not done and workers.world_size == 1:
                run_dir.discard()  # leave nothing half-written behind
            raise
        score_seconds = time.perf_counter() - t1
        workers.barrier()
        if not workers.is_main:
            return None
        done = read_all_samples(out_dir)
        missing = [k for k in wanted if k not in done]
        if missing:
            raise RunError(f"{out_dir}: question {missing[0]} was not scored by any worker; run again to resume")
        samples = [done[k] for k in wanted]
        samples_sha256 = write_samples(out_dir, samples)
        record = RunRecord(
            model=loaded.info,
            settings=run,
            scores=summarize(samples, prepared.subject_keys, run.parts),
            protocol_title=settings.fmt.protocol.title,
            continuations=tuple(settings.fmt.protocol.continuations()),
            aggregate=settings.fmt.protocol.aggregate,
            data_source={k: v for k, v in data_info.items() if k not in ("normalize", "selection")},
            harness={"version": __version__, **git_state()},
            runtime={
                "device": loaded.info.device,
                "backend": loaded.info.backend,
                "world_size": workers.world_size,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
                "batch_size": settings.batch_size,
                "max_batch_tokens": settings.max_batch_tokens,
                "prefix_cache": settings.prefix_cache and scorer.fast,
                "attention": getattr(scorer, "attention", None),
                "kernels": list(scorer.kernels.kinds) if getattr(scorer, "kernels", None) else [],
                "seed": settings.seed,
                "started_at": started_at,
                "finished_at": _now(),
                "resumed_from": resumed,
                "timings": {
                    "startup_seconds": None if startup_seconds is None else round(startup_seconds, 3),
                    "load_seconds": round(loaded.load_seconds, 3),
                    "prepare_seconds": round(prepare_seconds, 3),
                    "score_seconds": round(score_seconds, 3),
                    "scored_questions": prepared.n - resumed,
                    "questions_per_second": round((prepared.n - resumed) / score_seconds, 3)
                    if prepared.n > resumed and score_seconds
                    else None,
                    "prompt_tokens": sum(len(e.input_ids) for enc in prepared.encoded for e in enc),
                    "computed_tokens": sum(cost(b) for b in pending),
                },
            },
        )
        record = seal(record, samples_sha256, json.loads((out_dir / SETTINGS).read_text(encoding="utf-8")))
        write_json(out_dir / RESULTS, record.to_json())
        return record


def _check_done(out_dir: Path, done: dict, answers: dict) -> None:
    """What a resumed run finds scored must be questions of this run, with this data's answers."""
    stray = sorted(set(done) - set(answers))
    if stray:
        raise RunError(f"{out_dir} holds question {stray[0]} that this run does not score; choose another --output")
    for key, sample in done.items():
        if sample.gold != answers[key]:
            raise RunError(f"{out_dir}: {key[0]} #{key[1]} is recorded with gold {sample.gold}, but the data's answer is "
                           f"{answers[key]}; choose another --output")


def _finished_run(out_dir: Path, run: RunSettings, answers: dict) -> RunRecord:
    """A finished run in `out_dir`, read and checked against these settings and answers; it is not
    scored again nor written: a finished run's record never changes."""
    finished = load_run(out_dir)
    diff = finished.settings.comparison_difference(run)
    if diff:
        raise RunError(f"{out_dir / RESULTS} is a run with other settings ({diff.field}: {_brief(diff.ours)} there, "
                       f"{_brief(diff.theirs)} now); choose another --output")
    _check_done(out_dir, {s.key: s for s in finished.samples}, answers)
    missing = sorted(set(answers) - {s.key for s in finished.samples})
    if missing:
        raise RunError(f"{out_dir / RESULTS} is a finished run without question {missing[0]}; choose another --output")
    return finished.record


def letter_scorer(loaded: LoadedModel):
    """The scorer for the model's backend: transformers (default) or vLLM."""
    if loaded.info.backend == "vllm":
        from harness.vllm_backend import VllmLetterScorer

        return VllmLetterScorer(loaded.model)
    return LetterScorer(loaded.model, pad_id=_pad_id(loaded.tokenizer))


def _pad_id(tokenizer) -> int:
    # Right padding: real tokens never attend to pads, so any valid id does.
    for tid in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(tid, int):
            return tid
    return 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_state() -> dict:
    """The harness's git commit, and whether its tracked files were modified (None outside a checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": None, "git_dirty": None}
    if commit.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
