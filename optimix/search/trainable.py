"""What runs in a Ray worker: one trial (or a stacked group of trials) and the pruning board.

The trainable never raises for a trial that fails: any exception becomes a ``failed`` result
with its error, reported like any other. What reaches Ray Tune as an error is a worker or
node that died; Tune starts such a trial once more (``FailureConfig(max_failures=1)``).
Frontier models are written straight into the search's folder (shared storage on a
cluster), so a model never travels through Tune's checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path

from optimix.core import faults, frontier, metrics, replicates
from optimix.core.metrics import GROUP_KEY, PROGRESS_KEY, RESULT_KEY, STATUS_KEY
from optimix.core.space import Space
from optimix.trial import hub

log = logging.getLogger(__name__)



def trainable(point: dict, space: Space, models_dir: str | None, board=None, snapshots=None) -> None:
    """Ray Tune's function trainable: train ``point`` (or a stacked group), report once.
    ``snapshots``: the search's copies of its hub datasets, read in their place (``optimix.trial.hub``)."""
    started_at = time.time()
    faults.hold_at("trial_started")  # for tests only (OPTIMIX_HOLD_AT); unset, a dictionary lookup
    import ray
    from ray import tune

    hub.use(snapshots or {})

    context = tune.get_context()
    trial_id = context.get_trial_id()
    cpus = context.get_trial_resources().required_resources.get("CPU", 1)
    points = point[GROUP_KEY] if GROUP_KEY in point else [point]
    ids = [f"{trial_id}_{i}" for i in range(len(points))] if GROUP_KEY in point else [trial_id]
    save_dirs = [str(Path(models_dir) / i) for i in ids] if models_dir else None
    try:
        if GROUP_KEY in point:
            docs = _train_group(points, space, cpus, save_dirs)
        else:
            docs = [_train_one(point, space, cpus, trial_id, save_dirs[0] if save_dirs else None, board)]
    except Exception as err:  # outside run_trial (building the config, saving): still a result
        log.warning("trial %s failed: %s", trial_id, traceback.format_exc())
        error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        docs = [{"status": "failed", "error": error} for _ in points]
    node, ended_at = ray.get_runtime_context().get_node_id(), time.time()
    for doc, save_dir in zip(docs, save_dirs or [None] * len(docs), strict=True):
        doc.update(node=node, started_at=started_at, ended_at=ended_at)  # a timeline, for benchmarks
        if save_dir and doc["status"] == "ok" and os.path.isdir(save_dir):
            doc["model_dir"] = save_dir
    tune.report({STATUS_KEY: docs[0]["status"] if len(docs) == 1 else "group",
                 RESULT_KEY: json.dumps(docs)})


def _train_one(point: dict, space: Space, cpus: float, trial_id: str, save_dir: str | None,
               board) -> dict:
    import ray
    from ray import tune

    from optimix.trial.train import plan_trial, run_trial

    config = replicates.resolve(space, point)
    planned = plan_trial(config)
    sizes = {"params": planned.shape.params, "non_embedding_params": planned.shape.non_embedding_params}

    def on_eval(curve_point) -> bool:
        tune.report({PROGRESS_KEY: curve_point.train_flops})  # what a dead worker had spent
        if board is None:
            return False
        values = metrics.point_metrics(
            sizes, {"train_flops": curve_point.train_flops, "tokens": curve_point.tokens,
                    "accuracy": curve_point.accuracy, "loss": curve_point.loss})
        return ray.get(board.observe.remote(trial_id, values, curve_point.step / planned.steps))

    return run_trial(config, cpus=cpus, on_eval=on_eval, save_dir=save_dir).to_dict()


def _train_group(points: list[dict], space: Space, cpus: float, save_dirs: list[str] | None) -> list[dict]:
    """Several points trained stacked in this one Tune trial; one result document each."""
    from optimix.trial.stacked import run_stacked

    configs = [replicates.resolve(space, p) for p in points]
    return [r.to_dict() for r in run_stacked(configs, cpus=cpus, save_dirs=save_dirs)]


def board_class():
    import ray

    @ray.remote(num_cpus=0)
    class PruningBoard:
        """Multi-fidelity stopping that is correct with several objectives.

        Holds the current frontier (pushed by the driver as trials finish) and the curve
        points running trials have reported. A trial at a curve point at least
        ``prune_from`` through its training is stopped when some other trial's point beats
        it by more than ``margin`` in every objective at no more FLOPs
        (``frontier.dominated_at_equal_flops``). The trial ends ``pruned`` and is told to
        Optuna as PRUNED; its curve points stay frontier candidates.
        """

        def __init__(self, objectives, margin: float, prune_from: float):
            self.objectives = objectives
            self.margin = margin
            self.prune_from = prune_from
            self.front: list[frontier.Candidate] = []
            self.running: dict[str, list[frontier.Candidate]] = {}

        def update(self, front: list[frontier.Candidate]) -> None:
            self.front = front
            done = {c.trial_id for c in front}
            self.running = {t: pts for t, pts in self.running.items() if t not in done}

        def observe(self, trial_id: str, metrics: dict, progress: float) -> bool:
            others = [c for c in self.front if c.trial_id != trial_id]
            others += [c for t, pts in self.running.items() if t != trial_id for c in pts]
            stop = progress >= self.prune_from and progress < 1 and frontier.dominated_at_equal_flops(
                metrics, others, self.objectives, self.margin)
            self.running.setdefault(trial_id, []).append(
                frontier.Candidate(trial_id, 0, 0, False, metrics))
            return stop

    return PruningBoard
