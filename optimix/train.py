"""One trial: build the data and the model, train in one plain loop, evaluate.

``run_trial(config) -> TrialResult`` needs no Ray: ``optimix train`` calls it directly and
``optimix.search`` adapts it to Ray Tune. A trial whose loss turns NaN or blows up ends as
``diverged`` (a search records it as infeasible); an exception inside the trial ends it as
``failed`` with the error. Neither ever reports an accuracy.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from optimix.model import Shape, shape_for
from optimix.space import TrainConfig, TrialConfig
from optimix.tasks import TaskSet, cached_tasks

log = logging.getLogger(__name__)

Status = Literal["ok", "diverged", "failed", "pruned"]


@dataclass
class CurvePoint:
    """One evaluation along training: a learning-curve point, and a frontier candidate."""

    step: int
    tokens: int
    train_flops: float
    train_loss: float
    train_s: float
    accuracy: dict[str, float]
    loss: dict[str, float]


@dataclass
class TrialResult:
    status: Status
    params: int
    non_embedding_params: int
    tokens: int
    train_flops: float
    accuracy: dict[str, float] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    train_s: float = 0.0
    """Seconds in the training loop, generating its batches included, evaluations excluded."""
    tokens_per_s: float = 0.0
    steps: int = 0
    planned_steps: int = 0
    device: str = "cpu"
    shape: dict[str, int] = field(default_factory=dict)
    curve: list[CurvePoint] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """What a trial will cost, known before it runs (the search's budget uses it)."""

    shape: Shape
    steps: int
    tokens: int
    train_flops: float


def plan_trial(config: TrialConfig, taskset: TaskSet | None = None) -> Plan:
    """Shape, steps, tokens and FLOPs of a trial, without training (task data is cached)."""
    taskset = taskset or cached_tasks(config)
    n_ctx = taskset.seq_len
    shape = shape_for(config.model, taskset.vocab.size, n_ctx)
    tokens_per_step = config.train.batch_size * n_ctx
    if config.train.tokens is not None:
        steps = max(1, math.ceil(config.train.tokens / tokens_per_step))
    else:
        steps = max(1, math.floor(config.train.flops / (shape.train_flops_per_token * tokens_per_step)))
    tokens = steps * tokens_per_step
    return Plan(shape, steps, tokens, shape.train_flops_per_token * tokens)


def lr_at(step: int, total: int, train: TrainConfig) -> float:
    """Learning rate at ``step`` (1-based): linear warmup, then cosine or WSD decay to ``min_lr``."""
    warmup = max(1, round(train.warmup_frac * total))
    if step <= warmup:
        return train.lr * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = train.min_lr_frac
    if train.schedule == "cosine":
        return train.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    # WSD (warmup-stable-decay): flat, then a linear decay over the last 20% of training.
    decay_from = 0.8
    if progress <= decay_from:
        return train.lr
    return train.lr * (1 - (1 - floor) * (progress - decay_from) / (1 - decay_from))


def eval_steps(total: int, points: int) -> list[int]:
    """Steps at which to evaluate: ``points`` spread evenly, the last at the end."""
    return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})


def curve_tasks(config: TrialConfig, step: int, steps: int) -> list[str] | None:
    """The tasks to evaluate at ``step``: every task at the end, ``eval.curve_tasks`` before."""
    return None if step >= steps else config.eval.curve_tasks


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda was asked for but torch sees no CUDA device")
    return name


OnEval = Callable[[CurvePoint], bool | None]
"""Called at each evaluation; returning True stops the trial (it ends as ``pruned``)."""


def run_trial(
    config: TrialConfig,
    *,
    taskset: TaskSet | None = None,
    cpus: float | None = None,
    on_eval: OnEval | None = None,
    save_dir: str | Path | None = None,
) -> TrialResult:
    """Train and evaluate one config. Never raises for a failing trial: see ``status``."""
    started = time.perf_counter()
    plan = plan_trial(config, taskset)
    result = TrialResult(
        status="ok",
        params=plan.shape.params,
        non_embedding_params=plan.shape.non_embedding_params,
        tokens=0,
        train_flops=0.0,
        steps=0,
        planned_steps=plan.steps,
        shape={k: v for k, v in asdict(plan.shape).items() if isinstance(v, int) and not isinstance(v, bool)},
    )
    try:
        _train(config, plan, taskset, cpus, on_eval, save_dir, result)
    except Exception as err:  # a crashing trial is recorded, not raised
        result.status = "failed"
        result.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        log.warning("trial failed: %s\n%s", result.error, traceback.format_exc())
    result.wall_s = time.perf_counter() - started
    result.tokens_per_s = result.tokens / result.train_s if result.train_s > 0 else 0.0
    if result.status != "ok":
        result.accuracy, result.loss = {}, {}
    return result


def _train(config, plan: Plan, taskset, cpus, on_eval, save_dir, result: TrialResult) -> None:
    import torch
    import torch.nn.functional as F

    from optimix.evaluate import evaluate
    from optimix.mixture import batches
    from optimix.model import build_model

    train = config.train
    threads = train.threads or max(1, int(cpus or os.cpu_count() or 1))
    torch.set_num_threads(threads)
    device = torch.device(resolve_device(train.device))
    result.device = device.type
    taskset = taskset or cached_tasks(config)
    model = build_model(plan.shape, config.seed).to(device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    forward = torch.compile(model) if train.compile and device.type == "cuda" else model
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.lr, betas=(train.beta1, train.beta2),
        weight_decay=train.weight_decay, fused=device.type == "cuda",
    )
    rng = np.random.default_rng([config.seed, 1])
    checkpoints = set(eval_steps(plan.steps, config.eval.points))
    tokens_per_step = config.train.batch_size * taskset.seq_len
    flops_per_token = plan.shape.train_flops_per_token
    initial_loss = None
    check_every = 1 if device.type == "cpu" else 25  # .item() is a CPU-GPU sync point
    recent = torch.zeros((), device=device)
    model.train()
    loop_started, eval_s = time.perf_counter(), 0.0
    for step, (ids, targets) in enumerate(batches(taskset, config.mixture, train.batch_size, plan.steps, rng), 1):
        lr = lr_at(step, plan.steps, train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(ids).to(device, non_blocking=True)
        y = torch.from_numpy(targets).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = forward(input_ids=x).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1), ignore_index=-100)
        if train.fault != "none":
            loss = _inject_fault(train.fault, loss)
        loss.backward()
        if train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        recent = loss.detach()
        if step % check_every == 0 or step in checkpoints:
            value = float(recent)
            initial_loss = initial_loss if initial_loss is not None else value
            if not math.isfinite(value) or value > train.diverge_factor * max(initial_loss, 1e-3):
                result.status = "diverged"
                result.error = f"training loss {value:.4g} at step {step} (initial {initial_loss:.4g})"
        result.train_s = time.perf_counter() - loop_started - eval_s
        result.steps = step
        result.tokens = step * tokens_per_step
        result.train_flops = result.tokens * flops_per_token
        if result.status == "diverged":
            return
        if train.max_wall_s is not None and time.perf_counter() - loop_started > train.max_wall_s:
            raise TimeoutError(f"time limit train.max_wall_s={train.max_wall_s:g} s reached at step {step} of {plan.steps}")
        if step in checkpoints:
            tick = time.perf_counter()
            accuracy, task_loss = evaluate(model, taskset, device, config.eval.batch_size, autocast,
                                           curve_tasks(config, step, plan.steps))
            eval_s += time.perf_counter() - tick
            point = CurvePoint(step, result.tokens, result.train_flops, float(recent), result.train_s,
                               accuracy, task_loss)
            result.curve.append(point)
            result.accuracy, result.loss = accuracy, task_loss
            if on_eval is not None and on_eval(point) and step < plan.steps:
                result.status = "pruned"
                return
    if save_dir is not None:
        save_model(model, taskset, save_dir)


def _inject_fault(fault: str, loss):
    if fault == "raise":
        raise RuntimeError("injected fault (train.fault=raise)")
    if fault == "exit":
        os._exit(3)  # the worker process dies: Ray sees a crashed trial
    return loss * float("nan")


def save_model(model, taskset: TaskSet, path: str | Path) -> None:
    """``save_pretrained`` directory with the tokenizer: ``from_pretrained`` reloads both."""
    path = Path(path)
    model.save_pretrained(path)
    taskset.vocab.to_hf_tokenizer().save_pretrained(path)
