"""Scoring the DevOps task during training: the harness engine runs on the model being trained at
every save, writes its run records under `OUT/devops-eval/step-N/shots-K/` and logs the accuracy.

The model is scored as it is in memory, which is what the checkpoint just saved holds: the same
predictions `harness eval --model OUT/checkpoint-N` gives (the record names that checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import TrainerCallback

from harness.errors import HarnessError
from harness.evaluate import EvalSettings, evaluate
from harness.models import LoadedModel

log = logging.getLogger("harness.training")
RECORDS = "devops-eval"


@dataclass(frozen=True)
class DevOpsEval:
    """What to score: the loaded subjects, where they came from, one EvalSettings per shots setting."""

    data: list
    data_info: dict
    settings: list[EvalSettings]


def devops_eval_plan(
    shots: list[int], protocol: str, chat: bool, limit: int | None, batch_size: int, data_dir: str | None
) -> DevOpsEval | None:
    """What `--eval_devops_shots` asks to score at each save, with the benchmark data loaded up front
    (from `data_dir`, else the Hub); None when no shots are asked for."""
    from harness.prompts import PromptFormat
    from tasks import get_protocol, load_benchmark

    if not shots:
        return None
    data, data_info = load_benchmark(data_dir, None, "none")
    prompt_protocol = get_protocol(protocol)
    settings = [
        EvalSettings(fmt=PromptFormat(prompt_protocol, k, "chatml" if chat else None), limit=limit, batch_size=batch_size)
        for k in shots
    ]
    return DevOpsEval(data, data_info, settings)


class DevOpsEvalCallback(TrainerCallback):
    """Runs `DevOpsEval` at each save on the main process; `log` receives the accuracies as scalars."""

    def __init__(self, plan: DevOpsEval, tokenizer, output_dir: str, model_info, log_scalars: Callable[[dict], None]):
        self.plan = plan
        self.tokenizer = tokenizer
        self.output_dir = Path(output_dir)
        self.model_info = model_info  # what the run record says about the model besides its name
        self.log_scalars = log_scalars
        self.scored_steps: set[int] = set()

    def on_save(self, args, state, control, model=None, **kwargs):
        checkpoint = self.output_dir / f"checkpoint-{state.global_step}"
        self.score(model, state.global_step, str(checkpoint), state.is_world_process_zero)

    def score(self, model, step: int, name: str, is_main: bool) -> None:
        """Score `model` (named `name` in the records) once per step; every process must call this."""
        if step in self.scored_steps:
            return
        self.scored_steps.add(step)
        scalars = {}
        with _full_weights(model):
            if is_main:
                try:
                    scalars = self._score(model, step, name)
                except HarnessError as e:  # e.g. a record of other settings in the way: keep training
                    log.error("devops eval at step %d failed, training goes on: %s", step, e)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # the other processes wait here, not in a collective that may time out
        if is_main and scalars:
            self.log_scalars(scalars)

    def _score(self, model, step: int, name: str) -> dict:
        was_training = model.training
        model.eval()
        first = next(model.parameters())
        training = self.model_info.extra["training"]
        lora = training["finetuning_type"] == "lora"
        where = str(Path(name).absolute())  # as `harness eval --model NAME` records a local model
        info = replace(
            self.model_info,
            name=name,  # as `harness eval --model NAME` loads it: a checkpoint, or an adapter on its base
            path=training["base_model"] if lora else where,
            adapter=where if lora else None,
            dtype=str(first.dtype).removeprefix("torch."),
            parameters=sum(p.numel() for p in model.parameters()),
            device=str(first.device),
            extra={**self.model_info.extra, "training_step": step},
        )
        loaded = LoadedModel(model=model, tokenizer=self.tokenizer, info=info, load_seconds=0.0)
        scalars = {}
        try:
            # The engine seeds torch; training's random state must not depend on whether it scored.
            with torch.random.fork_rng(devices=[first.device] if first.device.type == "cuda" else []):
                for settings in self.plan.settings:
                    shots = settings.fmt.shots
                    out = self.output_dir / RECORDS / f"step-{step}" / f"shots-{shots}"
                    record = evaluate(loaded, self.plan.data, settings, out, data_info=self.plan.data_info, progress=False)
                    o = record.scores.micro
                    scalars[f"eval_devops_{shots}shot_accuracy"] = o.accuracy
                    log.info("devops eval, step %d, %d-shot: %.2f%% (%d/%d) -> %s", step, shots, 100 * o.accuracy, o.correct, o.n, out)
        finally:
            model.train(was_training)
        return scalars


@contextlib.contextmanager
def _full_weights(model):
    """Under DeepSpeed ZeRO-3 each process holds a slice of every weight: gather them for scoring."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield
