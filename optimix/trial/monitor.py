"""The trial monitor: what a training loop reports, and the rules that end a trial early.

``optimix.trial.train`` trains one model in a plain loop, ``optimix.trial.stacked`` K models in one; both
hand the monitor their losses once a step and it keeps every model's ``TrialResult`` by the
same rules:

- result: a ``TrialResult`` per model, with its shape, parameters and planned steps, before
  anything can fail;
- device: threads, the device (``train.device``), bf16 autocast and ``torch.compile`` on CUDA;
- faults (``train.fault``, for tests and the reliability benchmark): ``raise`` fails the
  model at step 1 before it counts a step, ``exit`` ends the process as a crashed Ray worker
  would, ``nan`` makes its loss NaN from step 1;
- divergence: a loss that is not finite, or above ``train.diverge_factor`` times the first
  loss read, ends the model as ``diverged`` with the reason (a search records it infeasible);
- time: past ``train.max_wall_s`` seconds of training the model ends ``failed``, with what it
  spent still counted;
- progress: steps, tokens, training FLOPs and ``train_s`` (the loop's time, evaluations
  excluded) after every step;
- evaluation: at each of ``eval.points`` steps a curve point, the latest scores, and the
  trial's ``on_eval``, whose True ends the model as ``pruned``;
- errors: an exception in the loop fails every model still training, with a one-line error.

A model that ends early never reports a score. torch is imported only where it is used.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from optimix.core.metrics import Status, aggregates, with_aggregates

if TYPE_CHECKING:
    import torch

    from optimix.core.config import TrialConfig
    from optimix.trial.model import Shape
    from optimix.trial.tasks import TaskSet

log = logging.getLogger(__name__)



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
    time_ms: int = 0
    """When it was measured (Unix milliseconds): MLflow plots the curve on this time axis."""


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


OnEval = Callable[[CurvePoint], bool | None]
"""Called at each evaluation; returning True stops the trial (it ends as ``pruned``)."""


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


def error_text(err: BaseException) -> str:
    """How a failed trial names its error: type and first line, at most 500 characters."""
    return f"{type(err).__name__}: {err}".splitlines()[0][:500]


def inject_fault(fault: str, loss: Any) -> Any:
    """``loss`` under ``train.fault``: ``raise`` raises, ``exit`` ends the process at once (the
    worker dies: Ray sees a crashed trial), ``nan`` turns it NaN, ``none`` leaves it."""
    if fault == "raise":
        raise RuntimeError("injected fault (train.fault=raise)")
    if fault == "exit":
        os._exit(3)
    return loss * math.nan if fault == "nan" else loss


class TrialMonitor:
    """The results of K models (K = 1 for ``run_trial``) trained in one loop of ``steps`` steps.

    The loop calls ``setup_device``, ``start``, then at each step ``inject_faults`` on the
    loss before backward and ``after_step`` after the update; it stops when ``done``. The
    caller wraps the loop in ``run``. ``losses`` is the loss of each model (``[K]``, or a
    scalar tensor when K = 1); a stopped model is no longer ``live`` and its result is final.
    """

    def __init__(self, configs: Sequence[TrialConfig], tasksets: Sequence[TaskSet], shape: Shape,
                 steps: int, *, on_evals: Sequence[OnEval | None] | None = None,
                 started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.configs, self.tasksets = list(configs), list(tasksets)
        self.shape, self.steps = shape, steps
        self.on_evals = list(on_evals or [None] * len(self.configs))
        sizes = {k: v for k, v in asdict(shape).items() if isinstance(v, int) and not isinstance(v, bool)}
        self.results = [TrialResult(status="ok", params=shape.params,
                                    non_embedding_params=shape.non_embedding_params, tokens=0,
                                    train_flops=0.0, steps=0, planned_steps=steps, shape=dict(sizes))
                        for _ in self.configs]
        self.active = [True] * len(self.configs)
        self.checkpoints = [set(eval_steps(steps, c.eval.points)) for c in self.configs]
        self.tokens_per_step = self.configs[0].train.batch_size * shape.n_ctx
        self.initial_loss: list[float | None] = [None] * len(self.configs)
        self.values: list[float] = []  # the losses read at this step (none when no model is due)
        self.device: torch.device | None = None
        self.autocast: torch.dtype | None = None
        self.check_every = 1
        self.loop_started, self.eval_s = 0.0, 0.0
        self._stopped: list[int] = []  # models stopped during this step
        self._faults = any(c.train.fault != "none" for c in self.configs)
        self._nan: torch.Tensor | None = None

    @property
    def live(self) -> list[int]:
        return [k for k, active in enumerate(self.active) if active]

    @property
    def done(self) -> bool:
        return not any(self.active)

    def stop(self, k: int, status: Status, error: str | None) -> None:
        """End model k with ``status``; its result is final from now on."""
        self.results[k].status, self.results[k].error = status, error
        self.active[k] = False
        self._stopped.append(k)

    def fail(self, k: int, error: str) -> None:
        """End model k as ``failed`` with ``error`` (one line, see ``error_text``)."""
        log.warning("trial failed: %s", error)
        self.stop(k, "failed", error)

    def setup_device(self, cpus: float | None) -> torch.device:
        """Threads and device (shared by every model), bf16 autocast on CUDA."""
        import torch

        train = self.configs[0].train
        torch.set_num_threads(train.threads or max(1, int(cpus or os.cpu_count() or 1)))
        self.device = torch.device(resolve_device(train.device))
        for result in self.results:
            result.device = self.device.type
        self.autocast = torch.bfloat16 if self.device.type == "cuda" else None
        self.check_every = 1 if self.device.type == "cpu" else 25  # reading a loss is a CPU-GPU sync
        if any(c.train.fault == "nan" for c in self.configs):
            nan = [math.nan if c.train.fault == "nan" else 1.0 for c in self.configs]
            self._nan = torch.tensor(nan, device=self.device)
        return self.device

    def compile(self, model):
        """``torch.compile(model)`` where ``train.compile`` asks for it on CUDA, else ``model``."""
        import torch

        return torch.compile(model) if self.configs[0].train.compile and self.device.type == "cuda" else model

    def start(self) -> None:
        """The training loop starts: ``train_s`` counts from here."""
        self.loop_started, self.eval_s = time.perf_counter(), 0.0

    def inject_faults(self, step: int, losses):
        """``losses`` under each model's ``train.fault``; a ``raise`` fails its model at step 1."""
        if not self._faults:
            return losses
        for k in self.live:
            fault = self.configs[k].train.fault
            if step == 1 and fault in ("raise", "exit"):
                try:
                    inject_fault(fault, losses)
                except Exception as err:  # this model's error: the others train on
                    self.fail(k, error_text(err))
        return losses if self._nan is None else losses * self._nan.view(losses.shape)

    def after_step(self, step: int, losses, model_of: Callable[[int], Any]) -> list[int]:
        """Judge and count ``step`` for every live model, then evaluate those at a checkpoint
        (``model_of(k)``: model k as a transformers model). Returns the models stopped in it."""
        live = self.live
        due = [k for k in live if step % self.check_every == 0 or step in self.checkpoints[k]]
        self.values = losses.detach().reshape(-1).tolist() if due else []
        now = time.perf_counter()
        for k in live:
            train, result = self.configs[k].train, self.results[k]
            result.train_s = now - self.loop_started - self.eval_s
            result.steps = step
            result.tokens = step * self.tokens_per_step
            result.train_flops = result.tokens * self.shape.train_flops_per_token
            reason = self._divergence(k, step) if k in due else None
            if reason is not None:
                self.stop(k, "diverged", reason)
            elif train.max_wall_s is not None and now - self.loop_started > train.max_wall_s:
                limit = f"time limit train.max_wall_s={train.max_wall_s:g} s reached at step {step} of {self.steps}"
                self.fail(k, error_text(TimeoutError(limit)))
        for k in self.live:
            if step in self.checkpoints[k]:
                self._evaluate(k, step, model_of)
        stopped, self._stopped = self._stopped, []
        return stopped

    def _divergence(self, k: int, step: int) -> str | None:
        """Why model k's loss read at ``step`` counts as diverged, or None."""
        value = self.values[k]
        if self.initial_loss[k] is None:
            self.initial_loss[k] = value
        initial = self.initial_loss[k]
        if not math.isfinite(value) or value > self.configs[k].train.diverge_factor * max(initial, 1e-3):
            return f"training loss {value:.4g} at step {step} (initial {initial:.4g})"
        return None

    def _evaluate(self, k: int, step: int, model_of: Callable[[int], Any]) -> None:
        from optimix.trial.evaluate import evaluate

        config, result = self.configs[k], self.results[k]
        tick = time.perf_counter()
        accuracy, task_loss = evaluate(model_of(k), self.tasksets[k], self.device, config.eval.batch_size,
                                       self.autocast, curve_tasks(config, step, self.steps))
        accuracy, task_loss = with_aggregates(aggregates(config), accuracy, task_loss)
        self.eval_s += time.perf_counter() - tick
        point = CurvePoint(step, result.tokens, result.train_flops, self.values[k], result.train_s,
                           accuracy, task_loss, int(time.time() * 1000))
        result.curve.append(point)
        result.accuracy, result.loss = accuracy, task_loss
        on_eval = self.on_evals[k]
        if on_eval is not None and on_eval(point) and step < self.steps:
            self.stop(k, "pruned", None)

    def run(self, train: Callable[[], None]) -> list[TrialResult]:
        """Run the training loop ``train``; never raises for a failing trial: an exception fails
        every model still training. Completes the results (wall time, rate, no scores unless ok)."""
        try:
            train()
        except Exception as err:  # a crashing trial is recorded, not raised
            log.warning("%s", traceback.format_exc())
            for k in self.live:
                self.fail(k, error_text(err))
        wall_s = time.perf_counter() - self.started
        for result in self.results:
            result.wall_s = wall_s
            result.tokens_per_s = result.tokens / result.train_s if result.train_s > 0 else 0.0
            if result.status != "ok":
                result.accuracy, result.loss = {}, {}
        return self.results
