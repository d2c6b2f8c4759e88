"""One trial: build the data and the model, train in one plain loop, evaluate.

``run_trial(config) -> TrialResult`` needs no Ray: ``optimix train`` calls it directly and
``optimix.search`` adapts it to Ray Tune. The loop hands its loss to the trial monitor
(``optimix.trial.monitor``), which keeps the result: a trial whose loss turns NaN or blows up ends as
``diverged`` (a search records it as infeasible); an exception inside the trial, or its time
limit, ends it as ``failed`` with the error. Neither ever reports an accuracy.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from optimix.core.budget import Plan, TaskGeometry, plan
from optimix.core.config import TrainConfig, TrialConfig
from optimix.trial import card
from optimix.trial.monitor import (  # the trial's records and device check, re-exported from here
    CurvePoint,
    OnEval,
    Status,
    TrialMonitor,
    TrialResult,
    eval_steps,
    resolve_device,
)
from optimix.trial.tasks import TASK_FIELDS, TaskSet, cached_tasks

__all__ = ["CurvePoint", "OnEval", "Plan", "Status", "TrialResult", "eval_steps", "geometry_of", "lr_at",
           "plan_trial", "resolve_device", "run_trial", "save_model", "task_geometry"]


_GEOMETRY: dict[str, TaskGeometry] = {}


def task_geometry(config: TrialConfig) -> TaskGeometry:
    """The vocabulary size and sequence length of ``config``'s tasks, measured once per task
    config (``tasks.TASK_FIELDS``) and kept: what pricing a trial needs of its data
    (``optimix.core.budget.Geometry``), so a search prices proposals without building any."""
    key = config.model_dump_json(include=TASK_FIELDS)
    if key not in _GEOMETRY:
        _GEOMETRY[key] = geometry_of(cached_tasks(config))
    return _GEOMETRY[key]


def geometry_of(taskset: TaskSet) -> TaskGeometry:
    return TaskGeometry(vocab_size=taskset.vocab.size, seq_len=taskset.seq_len)


def plan_trial(config: TrialConfig, taskset: TaskSet | None = None) -> Plan:
    """Shape, steps, tokens and FLOPs of a trial (``budget.plan``), from its built tasks when
    given, else from their geometry (``task_geometry``: measured once per task config)."""
    return plan(config, geometry_of(taskset) if taskset is not None else task_geometry(config))


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
    taskset = taskset or cached_tasks(config)
    plan = plan_trial(config, taskset)
    monitor = TrialMonitor([config], [taskset], plan.shape, plan.steps, on_evals=[on_eval], started=started)
    return monitor.run(lambda: _train(config, taskset, plan, monitor, cpus, save_dir))[0]


def _train(config: TrialConfig, taskset: TaskSet, plan: Plan, monitor: TrialMonitor,
           cpus: float | None, save_dir: str | Path | None) -> None:
    import torch
    import torch.nn.functional as F

    from optimix.trial.mixture import batches
    from optimix.trial.model import build_model

    train = config.train
    device = monitor.setup_device(cpus)
    model = build_model(plan.shape, config.seed).to(device)
    forward = monitor.compile(model)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.lr, betas=(train.beta1, train.beta2),
        weight_decay=train.weight_decay, fused=device.type == "cuda",
    )
    rng = np.random.default_rng([config.seed, 1])
    autocast = monitor.autocast
    model.train()
    monitor.start()
    for step, (ids, targets) in enumerate(batches(taskset, config.mixture, train.batch_size, plan.steps, rng), 1):
        lr = lr_at(step, plan.steps, train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(ids).to(device, non_blocking=True)
        y = torch.from_numpy(targets).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = forward(input_ids=x).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1), ignore_index=-100)
        loss = monitor.inject_faults(step, loss)
        loss.backward()
        if train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        monitor.after_step(step, loss, lambda k: model)  # divergence, progress, time, evaluation
        if monitor.done:  # diverged, failed, over its time or pruned: no save
            return
    if save_dir is not None:
        save_model(model, taskset, save_dir)


def save_model(model, taskset: TaskSet, path: str | Path) -> None:
    """``save_pretrained`` directory with the tokenizer: ``from_pretrained`` reloads both."""
    path = Path(path)
    model.save_pretrained(path)
    taskset.vocab.to_hf_tokenizer().save_pretrained(path)
    card.write_card(taskset, path)  # how each task's prompts are written, for serving
