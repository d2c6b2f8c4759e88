"""``optimix search``: Ray Tune runs the trials, Optuna proposes them, MLflow records them.

The only module that talks to Ray and Optuna. Flow, all in the driver process except the
trainable:

    Space --(distributions)--> BudgetedOptunaSearch --(points)--> Ray Tune
        --> _trainable (a Ray worker: run_trial) --> final result
        --> _Driver callback: ledger line (fsync) -> MLflow child run -> frontier tags

Exactly once: every finished trial is appended to ``results.jsonl`` in the search's state
directory before MLflow hears of it, and MLflow child runs are created idempotently by
``optimix.trial_id``. The Optuna study lives in a journal file beside it. ``--resume``
reads both: finished trials are replayed into the budget and the frontier (never rerun or
logged twice), trials that were running when the driver died are told to Optuna as failed
(never left RUNNING) and queued to run again at the same point, and a fresh Tuner runs the
rest.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from optimix import frontier, tracking
from optimix.space import Dimension, Space, SpaceError, parse_objectives
from optimix.train import plan_trial

log = logging.getLogger(__name__)

STATUS_KEY = "optimix_status"
RESULT_KEY = "optimix_result"
GROUP_KEY = "optimix_group"  # a Tune trial's config when it trains several points stacked
# Dimensions that may differ between the models of one stacked group (optimix.stacked).
_PER_MODEL = ("seed", "mixture.", "eval.", "train.lr", "train.beta1", "train.beta2",
              "train.weight_decay", "train.warmup_frac", "train.schedule", "train.min_lr_frac",
              "train.grad_clip", "train.diverge_factor", "train.max_wall_s", "train.fault")
_MAX_BUDGET_RETRIES = 50
_LEDGER_LOCK = threading.Lock()  # ledger lines come from Tune's loop and the MLflow thread
_RERUN_ATTR = "optimix.rerun_of"  # on a trial queued again after a crash: the interrupted one
_AFFORDABLE_AFTER = 3  # proposals that do not fit before random ones that do are queued
_RETRY_S = 30.0  # after a failed MLflow write, wait this long before the next try


# ---------------------------------------------------------------------------------------------
# Search dimensions -> Optuna (the one place)


def distributions(space: Space) -> dict[str, Any]:
    """Each search dimension as an Optuna distribution, keyed by its dotted name."""
    import optuna.distributions as od

    out = {}
    for key, dim in space.dimensions.items():
        if dim.dist == "choice":
            out[key] = od.CategoricalDistribution(dim.values)
        elif dim.dist == "int":
            out[key] = od.IntDistribution(int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            out[key] = od.FloatDistribution(dim.low, dim.high, step=dim.step, log=dim.dist == "loguniform")
    return out


def grid_values(key: str, dim: Dimension) -> list[Any]:
    """The values the grid sampler tries for one dimension."""
    if dim.grid is not None:
        return list(dim.grid)
    if dim.dist == "choice":
        return list(dim.values)
    if dim.dist == "int":
        values = list(range(int(dim.low), int(dim.high) + 1, int(dim.step or 1)))
        if len(values) <= 64:
            return values
    raise SpaceError(f"{key}.grid: the grid sampler needs a list of values for this dimension")


def expected_trials(space: Space) -> int:
    """Trials the search is expected to run: ``search.trials``, or fewer if the budget buys
    fewer at the space's mean trial cost (``optimix plan SPACE``)."""
    search = space.base.search
    if search.budget_flops is None:
        return search.trials
    from optimix.hardware import resolve
    from optimix.plan import space_outlook

    return space_outlook(space, hardware=resolve("cpu"), samples=64)["expected"]["trials"]


def startup_trials(space: Space) -> int:
    """Space-filling first points before TPE or GP model the results.

    Optuna's default, 10, leaves a 12-trial search almost all random; a quarter of the
    trials the search is expected to run gives the model most of them, and 3 is the fewest
    it can fit anything to.
    """
    search = space.base.search
    if search.startup_trials is not None:
        return search.startup_trials
    return min(10, max(3, round(expected_trials(space) / 4)))


def sampler_name(space: Space) -> str:
    """The sampler ``search.sampler`` names; ``auto`` picks gp for small searches."""
    search = space.base.search
    if search.sampler != "auto":
        return search.sampler
    if expected_trials(space) > 100:
        return "tpe"
    pairs = [(o.metric, o.mode) for o in parse_objectives(space.base)]
    if len(pairs) == 2 and ("train_flops", "min") in pairs:
        return "frontier"
    return "gp" if len(pairs) <= 3 else "tpe"


def startup_design(space: Space, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` space-filling first points (a Latin hypercube) for the model-based samplers.

    Random first points can all land in one corner (say, every rare frequency low), and the
    model then learns little from them; a Latin hypercube puts one point in each of ``n``
    equal slices of every dimension (in log scale for log dimensions). Points that are not
    valid trials are left out.
    """
    rng = np.random.default_rng([seed, 7])
    dims = space.dimensions
    slices = {key: (rng.permutation(n) + rng.random(n)) / n for key in dims}
    points = []
    for i in range(n):
        point = {key: _from_unit(dim, float(slices[key][i])) for key, dim in dims.items()}
        try:
            space.resolve(point)
        except SpaceError:
            continue
        points.append(point)
    return points


def _from_unit(dim: Dimension, u: float) -> Any:
    if dim.dist == "choice":
        return dim.values[min(int(u * len(dim.values)), len(dim.values) - 1)]
    log = dim.dist == "loguniform" or (dim.dist == "int" and dim.log)
    low, high = (math.log(dim.low), math.log(dim.high)) if log else (dim.low, dim.high)
    value = low + u * (high - low)
    value = math.exp(value) if log else value
    if dim.dist == "int":
        step = int(dim.step or 1)
        return int(min(dim.high, max(dim.low, dim.low + step * round((value - dim.low) / step))))
    if dim.step:
        value = dim.low + dim.step * round((value - dim.low) / dim.step)
    return float(min(dim.high, max(dim.low, value)))


def make_sampler(space: Space, seed: int):
    import optuna

    name = sampler_name(space)
    if name == "frontier":
        from optimix.sampler import FrontierSampler

        objectives = [(o.metric, o.mode) for o in parse_objectives(space.base)]
        q = next(i for i, (m, _) in enumerate(objectives) if m != "train_flops")

        def cost(point: Mapping[str, Any]) -> float:
            try:
                return trial_flops(space, point)
            except SpaceError:
                return math.inf

        return FrontierSampler(distributions(space), q, objectives[q][1] == "max", cost,
                               n_startup=startup_trials(space), seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(space))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials(space))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    from optimix.sampler import GridSampler

    return GridSampler({k: grid_values(k, d) for k, d in space.dimensions.items()}, seed=seed)


def grid_size(space: Space) -> int:
    return math.prod(len(grid_values(k, d)) for k, d in space.dimensions.items())


# ---------------------------------------------------------------------------------------------
# The budget


def trial_flops(space: Space, point: Mapping[str, Any]) -> float:
    """Training FLOPs of the trial at ``point``: known before it runs."""
    return plan_trial(space.resolve(point)).train_flops


def cheapest_flops(space: Space) -> float:
    """The cheapest trial the space allows (cost dims at each end, every choice)."""
    cost_dims = {k: d for k, d in space.dimensions.items()
                 if k.split(".")[0] in ("model", "train", "tasks")}
    options = []
    for key, dim in cost_dims.items():
        if dim.dist == "choice":
            options.append([(key, v) for v in dim.values])
        else:
            low, high = (int(dim.low), int(dim.high)) if dim.dist == "int" else (dim.low, dim.high)
            options.append([(key, low), (key, high)])
    best = math.inf
    for combo in itertools.islice(itertools.product(*options), 4096):
        try:
            best = min(best, trial_flops(space, dict(combo)))
        except SpaceError:
            continue  # an invalid corner (e.g. heads not dividing): other corners decide
    return best


_LOG_SCALE = ("train_flops", "params", "non_embedding_params", "tokens")


def _optuna_value(metric: str, value: float) -> float:
    """What Optuna is told for an objective: costs in log10. They span orders of magnitude,
    and a GP models them far better in log scale; the ordering TPE and NSGA-II use is the same.
    (MLflow, the ledger and the frontier keep the plain values.)"""
    return math.log10(value) if metric in _LOG_SCALE and value > 0 else value


def _optuna_search_class():
    from ray.tune.search.optuna import OptunaSearch

    class BudgetedOptunaSearch(OptunaSearch):
        """Ray Tune's ``OptunaSearch`` with a FLOPs budget and honest outcomes.

        - A proposed point whose FLOPs would not fit in what is left is never started: it
          is told to Optuna as failed (user attr ``optimix.skipped``) and another is asked
          for; when nothing can fit, the search is finished.
        - A trial that failed, diverged or crashed is told to Optuna as FAIL, so it never
          stays RUNNING and never enters the Pareto set with made-up values; a pruned trial
          is told as PRUNED (never COMPLETE with the values it had when it was stopped).
        """

        def __init__(self, *args, space_obj: Space, budget: float | None, spent: float,
                     cheapest: float, points_left: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.space_obj = space_obj
            self.budget = budget
            self.spent = spent
            self.cheapest = cheapest
            self.reserved: dict[str, float] = {}
            self.stack = space_obj.base.search.stack
            self.points_left = points_left
            self.group: dict[str, list] = {}  # Tune trial id -> the Optuna trials it trains

        def suggest(self, trial_id: str):
            from optuna.trial import TrialState
            from ray.tune.search import Searcher

            # Running trials hold a reservation of what they may spend; one that is pruned
            # gives part back. While any runs, "nothing fits" means "not now" (None).
            not_now = None if self.reserved else Searcher.FINISHED
            for attempt in range(_MAX_BUDGET_RETRIES):
                if self.points_left <= 0:
                    return Searcher.FINISHED
                if self.budget is not None and self.left() < self.cheapest:
                    return not_now
                if attempt >= _AFFORDABLE_AFTER and not self._enqueue_affordable():
                    return not_now
                point = super().suggest(trial_id)
                if point is None or point == Searcher.FINISHED:
                    return point
                try:
                    cost = trial_flops(self.space_obj, point)
                except SpaceError as err:  # an invalid combination: never started
                    self._skip(trial_id, str(err), TrialState.FAIL)
                    continue
                if self.budget is not None and cost > self.left():
                    self._skip(trial_id, f"needs {cost:.3g} FLOPs, {self.left():.3g} left", TrialState.FAIL)
                    continue
                self.reserved[trial_id] = cost
                self.points_left -= 1
                if self.stack > 1:
                    return self._fill_group(trial_id, point, cost)
                return point
            if not_now is None:
                return None
            log.warning("no proposal fitted the budget in %d tries: ending the search", _MAX_BUDGET_RETRIES)
            return Searcher.FINISHED

        def _fill_group(self, trial_id: str, point: dict, cost: float) -> dict:
            """Ask Optuna for up to ``stack - 1`` more points that share ``point``'s shape and
            length (its other dimensions fixed), to train stacked in one Tune trial."""
            from optuna.trial import TrialState

            fixed = {k: v for k, v in point.items() if not k.startswith(_PER_MODEL)}
            members = [(self._ot_trials[trial_id], point)]
            waiting = self._ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            while (len(members) < self.stack and self.points_left > 0 and not waiting
                   and (self.budget is None or cost <= self.left())):
                self._ot_study.enqueue_trial(fixed)
                ot_trial = self._ot_study.ask(fixed_distributions=self._space)
                members.append((ot_trial, dict(ot_trial.params)))
                self.reserved[trial_id] += cost
                self.points_left -= 1
            self.group[trial_id] = [ot for ot, _ in members]
            return {GROUP_KEY: [p for _, p in members]}

        def _tell_group(self, trial_id: str, result: dict | None) -> None:
            """Each point of a stacked trial told to Optuna by its own outcome."""
            from optuna.trial import TrialState

            self._ot_trials.pop(trial_id, None)
            docs = json.loads(result[RESULT_KEY]) if result and RESULT_KEY in result else []
            for i, ot_trial in enumerate(self.group.pop(trial_id)):
                doc = docs[i] if i < len(docs) else {"status": "failed"}
                if doc["status"] in ("ok", "pruned"):
                    self._set_curve(ot_trial, doc)
                if doc["status"] == "ok":
                    metrics = tracking.trial_metrics(doc)
                    self._ot_study.tell(ot_trial, [_optuna_value(m, metrics[m]) for m in self._metric])
                elif doc["status"] == "pruned":
                    self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                else:
                    self._ot_study.tell(ot_trial, state=TrialState.FAIL)

        def _set_curve(self, ot_trial, doc: dict) -> None:
            """The trial's learning-curve points, for the frontier sampler's current frontier."""
            from optimix.sampler import CURVE_ATTR

            quality = next((m for m in self._metric if m != "train_flops"), None)
            if quality is None or not frontier.curve_metric(quality):
                return
            points = []
            for point in doc.get("curve", []):
                value = frontier.point_metrics(doc, point).get(quality)
                if value is not None and point["train_flops"] > 0:
                    points.append([math.log10(point["train_flops"]), value])
            ot_trial.set_user_attr(CURVE_ATTR, points)

        def _enqueue_affordable(self) -> bool:
            """The sampler keeps proposing what the budget left cannot pay for: queue a random
            point that fits (Optuna's ``ask`` takes queued points first), so that the budget
            is spent rather than the search ended early. False if none of 256 draws fits."""
            rng = np.random.default_rng([len(self._ot_study.trials), 11])
            dims = self.space_obj.dimensions
            for _ in range(256):
                point = {key: _from_unit(dim, float(rng.random())) for key, dim in dims.items()}
                try:
                    if trial_flops(self.space_obj, point) <= self.left():
                        self._ot_study.enqueue_trial(point, skip_if_exists=True)
                        return True
                except SpaceError:
                    continue
            return False

        def left(self) -> float:
            return (self.budget or math.inf) - self.spent - sum(self.reserved.values())

        def _skip(self, trial_id: str, reason: str, state) -> None:
            ot_trial = self._ot_trials.pop(trial_id)
            ot_trial.set_user_attr("optimix.skipped", reason)
            self._ot_study.tell(ot_trial, state=state)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            planned = self.reserved.pop(trial_id, 0.0)
            ok = bool(result) and not error and result.get(STATUS_KEY) == tracking.OK
            docs = []
            if result and RESULT_KEY in result:
                docs = json.loads(result[RESULT_KEY])
                docs = docs if isinstance(docs, list) else [docs]
                self.spent += sum(float(doc["train_flops"]) for doc in docs)
            else:  # a crash we cannot measure: count what it was allowed to spend
                self.spent += planned
            if trial_id in self.group:
                self._tell_group(trial_id, result)
                return
            if trial_id not in self._ot_trials:
                return
            if ok:
                self._set_curve(self._ot_trials[trial_id], docs[0])
                view = {**result, **{m: _optuna_value(m, result[m]) for m in self._metric}}
                super().on_trial_complete(trial_id, result=view, error=False)
            elif result and result.get(STATUS_KEY) == tracking.PRUNED:
                # The truth: stopped early, not a complete trial with partial values.
                from optuna.trial import TrialState

                self._set_curve(self._ot_trials[trial_id], docs[0])
                self._ot_study.tell(self._ot_trials.pop(trial_id), state=TrialState.PRUNED)
            else:
                super().on_trial_complete(trial_id, result=None, error=True)

        # The Optuna journal and the ledger are the state; Ray's pickled copy is not used.
        def save(self, checkpoint_path: str) -> None:
            Path(checkpoint_path).write_text(json.dumps({"spent": self.spent}))

        def restore(self, checkpoint_path: str) -> None:
            self.spent = json.loads(Path(checkpoint_path).read_text())["spent"]

    return BudgetedOptunaSearch


# ---------------------------------------------------------------------------------------------
# The trainable (runs in a Ray worker)


def _trainable(point: dict, space: Space, save_models: bool, board=None) -> None:
    started_at = time.time()
    import ray
    from ray import tune

    from optimix.train import run_trial

    context = tune.get_context()
    resources = context.get_trial_resources().required_resources
    if GROUP_KEY in point:
        _train_group(point[GROUP_KEY], space, save_models, resources, started_at)
        return
    config = space.resolve(point)
    save_dir = tempfile.mkdtemp(prefix="optimix-model-") if save_models else None
    on_eval = None
    if board is not None:
        trial_id, planned = context.get_trial_id(), plan_trial(config)

        def on_eval(point) -> bool:
            metrics = frontier.point_metrics(
                {"params": planned.shape.params, "non_embedding_params": planned.shape.non_embedding_params},
                {"train_flops": point.train_flops, "tokens": point.tokens,
                 "accuracy": point.accuracy, "loss": point.loss})
            return ray.get(board.observe.remote(trial_id, metrics, point.step / planned.steps))

    result = run_trial(config, cpus=resources.get("CPU", 1), on_eval=on_eval, save_dir=save_dir)
    doc = result.to_dict()
    doc["node"] = ray.get_runtime_context().get_node_id()
    doc["started_at"], doc["ended_at"] = started_at, time.time()  # a timeline, for the overhead benchmark
    metrics = {STATUS_KEY: result.status, RESULT_KEY: json.dumps(doc),
               "train_flops": result.train_flops, "params": result.params, "tokens": result.tokens}
    metrics.update({f"acc/{t}": v for t, v in result.accuracy.items()})
    metrics.update({f"loss/{t}": v for t, v in result.loss.items()})
    checkpoint = None
    if save_dir and result.status == "ok":
        checkpoint = tune.Checkpoint.from_directory(save_dir)
    tune.report(metrics, checkpoint=checkpoint)
    if save_dir:
        shutil.rmtree(save_dir, ignore_errors=True)


def _board_class():
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


def _train_group(points: list[dict], space: Space, save_models: bool, resources, started_at: float) -> None:
    """Several points trained stacked in this one Tune trial; one result document each."""
    import ray
    from ray import tune

    from optimix.stacked import run_stacked

    configs = [space.resolve(p) for p in points]
    root = tempfile.mkdtemp(prefix="optimix-models-") if save_models else None
    save_dirs = [os.path.join(root, str(i)) for i in range(len(points))] if root else None
    results = run_stacked(configs, cpus=resources.get("CPU", 1), save_dirs=save_dirs)
    node, ended_at = ray.get_runtime_context().get_node_id(), time.time()
    docs = [{**r.to_dict(), "node": node, "started_at": started_at, "ended_at": ended_at} for r in results]
    checkpoint = tune.Checkpoint.from_directory(root) if root else None
    tune.report({STATUS_KEY: "group", RESULT_KEY: json.dumps(docs)}, checkpoint=checkpoint)
    if root:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# State on disk: the ledger of finished trials


@dataclass
class SearchState:
    """A search's directory: ``state.json``, ``results.jsonl`` (ledger), ``optuna.journal``."""

    path: Path

    @classmethod
    def create(cls, storage: Path, experiment: str) -> SearchState:
        root = storage / _slug(experiment)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = root / stamp
        path.mkdir(parents=True)
        (root / "latest").write_text(stamp)
        return cls(path)

    @classmethod
    def latest(cls, storage: Path, experiment: str) -> SearchState:
        root = storage / _slug(experiment)
        try:
            stamp = (root / "latest").read_text().strip()
        except OSError:
            raise SpaceError(f"--resume: no search of {experiment!r} under {storage}") from None
        return cls(root / stamp)

    @property
    def journal(self) -> Path:
        return self.path / "optuna.journal"

    def read(self) -> dict | None:
        """The saved state, or None if the search was stopped before writing it."""
        try:
            return json.loads((self.path / "state.json").read_text())
        except FileNotFoundError:
            return None

    def write(self, state: Mapping[str, Any]) -> None:
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.path / "state.json")

    def append(self, entry: Mapping[str, Any]) -> None:
        with _LEDGER_LOCK, open(self.path / "results.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict]:
        """Ledger lines; a torn last line (killed mid-write) is ignored."""
        path = self.path / "results.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("ignoring a torn ledger line in %s", path)
        return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "search"


# ---------------------------------------------------------------------------------------------
# The driver: records each finished trial, keeps the frontier current, reports progress


@dataclass
class Progress:
    done: int = 0
    running: int = 0
    failed: int = 0
    planned: int = 0
    spent_flops: float = 0.0
    budget_flops: float | None = None
    frontier: int = 0
    best: float | None = None
    best_metric: str = ""


@dataclass
class SearchSummary:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    state_dir: str
    objectives: list[tuple[str, str]]
    frontier: list[dict]
    trials: int
    ok: int
    pruned: int
    failed: int
    spent_flops: float
    budget_flops: float | None
    wall_s: float


class _Driver:
    """Everything the search does as trials finish. Lives in the driver process only."""

    def __init__(self, space: Space, state: SearchState, tracker: tracking.Tracker, parent_id: str,
                 objectives: list[tuple[str, str]], progress: Callable[[Progress], None] | None):
        self.space = space
        self.state = state
        self.tracker = tracker
        self.parent_id = parent_id
        self.objectives = objectives
        self.progress_fn = progress
        self._shown_frontier = -1
        self.entries: list[dict] = []
        self.curve = space.base.search.curve_candidates
        self.membership: dict[str, tuple[bool, list[int]]] = {}  # by run id, as tagged
        self.board = None  # the pruning board (an actor), while trials run
        self.running: dict[str, int] = {}  # Tune trial id -> models it trains (a stacked group: several)
        self.unsynced = 0
        self.retry_at = 0.0
        self.save_models = space.base.search.save_models
        # MLflow is written by one background thread, so a finished trial's slot is refilled
        # at once instead of after its logging; the ledger line is written before, in Tune's loop.
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.progress = Progress(planned=space.base.search.trials, budget_flops=space.base.search.budget_flops,
                                 best_metric=objectives[0][0])

    def replay(self, entries: list[dict]) -> None:
        """Take up a killed search's finished trials: log any MLflow missed, once."""
        for entry in entries:
            entry.setdefault("run_id", None)
            self.entries.append(entry)
        self._sync()

    def started(self, trial_id: str, models: int = 1) -> None:
        self.running[trial_id] = models
        self._report()

    def finished(self, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any] | None,
                 error: str | None, checkpoint_dir: str | None) -> None:
        self.running.pop(trial_id, None)
        if GROUP_KEY not in config:
            doc = json.loads(result[RESULT_KEY]) if result and RESULT_KEY in result else None
            self._record(trial_id, config, doc, error, checkpoint_dir)
        else:  # a stacked trial: one ledger entry (and MLflow run) per point, "<id>_<i>"
            docs = json.loads(result[RESULT_KEY]) if result and RESULT_KEY in result else []
            for i, point in enumerate(config[GROUP_KEY]):
                model_dir = os.path.join(checkpoint_dir, str(i)) if checkpoint_dir else None
                self._record(f"{trial_id}_{i}", point, docs[i] if i < len(docs) else None, error,
                             model_dir if model_dir and os.path.isdir(model_dir) else None)
        if self._thread is None:
            self._thread = threading.Thread(target=self._sync_loop, name="optimix-mlflow", daemon=True)
            self._thread.start()
        self._wake.set()
        self._report()

    def __getstate__(self) -> dict:
        # Ray Tune pickles its callbacks with the experiment (tuner.pkl); that copy is never
        # used (--resume rebuilds the driver from the ledger), but must pickle: no thread.
        state = dict(self.__dict__)
        for key in ("_wake", "_thread", "board"):
            state[key] = None
        return state

    def _sync_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            self._sync()

    def _stop_sync_thread(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _record(self, trial_id: str, config: Mapping[str, Any], doc: dict | None, error: str | None,
                checkpoint_dir: str | None) -> None:
        if any(e["trial_id"] == trial_id for e in self.entries):
            return
        if doc is None:  # the trainable itself crashed: cost as planned, no score
            plan = plan_trial(self.space.resolve(config))
            doc = {"status": "failed", "train_flops": plan.train_flops, "tokens": plan.tokens,
                   "params": plan.shape.params, "wall_s": 0.0, "accuracy": {}, "loss": {}, "curve": [],
                   "error": error or "trial crashed"}
        status = {"ok": tracking.OK, "diverged": tracking.INFEASIBLE, "pruned": tracking.PRUNED}.get(
            doc["status"], tracking.FAILED)
        entry = {
            "trial_id": trial_id,
            "index": len(self.entries),
            "name": _trial_name(len(self.entries), config),
            "status": status,
            "error": doc.get("error"),
            "point": dict(config),
            "params": tracking.flatten(self.space.resolve(config).model_dump(mode="json")),
            "result": doc,
            "node": doc.get("node"),
        }
        if checkpoint_dir:  # "all": uploaded with the run; "frontier": at the end, if on it
            entry["model_dir"] = checkpoint_dir
        self.state.append(entry)  # the ledger first: MLflow may fail, the result is kept
        entry["run_id"] = None
        self.entries.append(entry)

    def _sync(self, force: bool = False) -> None:
        """Log every ledger entry MLflow has not seen yet, then retag the frontier.

        If MLflow is unreachable the search goes on: results stay in the ledger and are
        logged at a later trial (tried again at most every ``_RETRY_S``), at the end, or by
        ``--resume``.
        """
        if not force and time.monotonic() < self.retry_at:
            self.unsynced = sum(e["run_id"] is None for e in self.entries)
            return
        try:
            for entry in list(self.entries):
                if entry["run_id"] is None:
                    run_id = self.tracker.log_trial(self.parent_id, entry, with_model=self.save_models == "all")
                    self.state.append({"logged": entry["trial_id"], "run_id": run_id})
                    entry["run_id"] = run_id
            self._update_frontier()
        except Exception as err:  # the store is down: keep training, say so
            self.unsynced = sum(e["run_id"] is None for e in self.entries)
            self.retry_at = time.monotonic() + _RETRY_S
            log.warning("MLflow write failed (%s); %d finished trials kept in %s until it is back",
                        tracking._one_line(err), self.unsynced, self.state.path)
            return
        self.unsynced = 0

    def candidates(self) -> list[frontier.Candidate]:
        return frontier.candidates(self.entries, self.objectives, self.curve)

    def frontier_rows(self) -> list[dict]:
        by_trial = {e["trial_id"]: e for e in self.entries}
        rows = []
        for c in frontier.front(self.candidates(), self.objectives):
            e = by_trial[c.trial_id]
            rows.append({"run_id": e["run_id"], "trial_id": c.trial_id, "name": e["name"],
                         "final": c.final, "step": c.step, "steps": c.steps,
                         **{metric: c.metrics.get(metric) for metric, _ in self.objectives},
                         "params": e["result"]["params"], "point": e["point"]})
        return rows

    def _update_frontier(self) -> None:
        """Recompute membership over the candidates; retag only runs whose membership changed."""
        cands = self.candidates()
        by_trial = frontier.membership(cands, self.objectives)
        current = {e["run_id"]: by_trial.get(e["trial_id"], (False, [])) for e in self.entries if e["run_id"]}
        changed = {rid: on for rid, on in current.items() if self.membership.get(rid, (False, [])) != on}
        if changed:
            self.tracker.set_frontier_tags(changed)
            self.membership.update(changed)
            self.tracker.log_frontier(self.parent_id, self.frontier_rows())
        if self.board is not None:
            self.board.update.remote(frontier.front(cands, self.objectives))
        self.progress.frontier = len(frontier.front(cands, self.objectives))

    def finish(self) -> list[dict]:
        """Final frontier artifacts, plots and the models kept with ``save_models: frontier``."""
        from optimix import plots

        self._stop_sync_thread()
        self._sync(force=True)
        if self.progress.frontier != self._shown_frontier:
            self._report()  # the last trials' effect on the frontier, synced after they were shown
        if self.unsynced:
            raise tracking.TrackingError(
                f"{self.unsynced} finished trials are not in MLflow yet (it is unreachable); "
                f"they are kept in {self.state.path}: run again with --resume to record them")
        rows = self.frontier_rows()
        ok = [e for e in self.entries if e["status"] == tracking.OK]
        cands = self.candidates()
        curve = [c for c in frontier.front(cands, self.objectives) if not c.final]
        membership = frontier.membership(cands, self.objectives)
        payloads = plots.frontier_plots(plots.rows_from_entries(self.entries, membership, curve),
                                        self.objectives) if ok else {}
        self.tracker.log_frontier(self.parent_id, rows, payloads)
        if self.save_models == "frontier":
            on = {r["trial_id"] for r in rows if r["final"]}
            for e in ok:
                if e["trial_id"] in on and e.get("model_dir") and Path(e["model_dir"]).exists():
                    self.tracker.log_model(e["run_id"], e["model_dir"])
        return rows

    def _report(self) -> None:
        p = self.progress
        p.done = len(self.entries)
        p.failed = sum(e["status"] in (tracking.FAILED, tracking.INFEASIBLE) for e in self.entries)
        p.running = sum(self.running.values())
        p.spent_flops = sum(float(e["result"]["train_flops"]) for e in self.entries)
        metric = self.objectives[0][0]
        scores = [tracking.trial_metrics(e["result"]).get(metric) for e in self.entries
                  if e["status"] == tracking.OK]
        scores = [s for s in scores if s is not None]
        if scores:
            p.best = max(scores) if self.objectives[0][1] == "max" else min(scores)
        self._shown_frontier = p.frontier
        if self.progress_fn:
            self.progress_fn(p)


def _trial_name(index: int, point: Mapping[str, Any]) -> str:
    parts = []
    for key, value in point.items():
        short = key.rsplit(".", 1)[-1]
        parts.append(f"{short}={value:.3g}" if isinstance(value, float) else f"{short}={value}")
    return f"trial-{index:03d} " + " ".join(parts)


def _callback_class():
    from ray.tune import Callback

    class DriverCallback(Callback):
        def __init__(self, driver: _Driver):
            self.driver = driver

        def on_trial_start(self, iteration, trials, trial, **info):
            self.driver.started(trial.trial_id, len(trial.config.get(GROUP_KEY, [None])))

        def on_trial_complete(self, iteration, trials, trial, **info):
            checkpoint = trial.checkpoint.path if trial.checkpoint else None
            self.driver.finished(trial.trial_id, trial.config, trial.last_result, None, checkpoint)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = None
            try:
                error = str(trial.get_error()).strip().splitlines()[-1][:500]
            except Exception:  # the error file may be missing; the trial still counts
                error = "trial errored"
            result = trial.last_result if trial.last_result and RESULT_KEY in trial.last_result else None
            self.driver.finished(trial.trial_id, trial.config, result, error, None)

    return DriverCallback


# ---------------------------------------------------------------------------------------------
# Entry point


@dataclass
class SearchOptions:
    address: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    storage_path: str = "optimix_runs"
    resume: bool = False
    seed: int | None = None
    progress: Callable[[Progress], None] | None = None


def check_budget(space: Space) -> float:
    """The cheapest trial's FLOPs; a budget below it is bad input (named key)."""
    cheapest = cheapest_flops(space)
    budget = space.base.search.budget_flops
    if budget is not None and budget < cheapest:
        raise SpaceError(f"search.budget_flops: {budget:.3g} is below the cheapest trial ({cheapest:.3g} FLOPs)")
    return cheapest


def run_search(space: Space, options: SearchOptions) -> SearchSummary:
    """Run (or resume) a search; see the module docstring."""
    import optuna

    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = space.base.search
    objectives = [(o.metric, o.mode) for o in parse_objectives(space.base)]
    if search.sampler == "grid":
        grid_size(space)  # raises a named SpaceError for a dimension with no grid
    for i, point in enumerate(search.points_to_evaluate):
        try:
            space.resolve(point)
        except SpaceError as err:
            raise SpaceError(f"search.points_to_evaluate.{i}: {err}") from None
    cheapest = check_budget(space)
    experiment = options.experiment or space.name
    seed = space.base.seed if options.seed is None else options.seed
    if "://" in options.storage_path:
        raise SpaceError(f"--storage-path: {options.storage_path!r} is a URI; give a file-system "
                         "path (on a cluster, a shared mount such as NFS)")
    storage = Path(options.storage_path).expanduser().resolve()

    tracker = tracking.Tracker(options.tracking_uri, experiment)  # fails fast, before training
    state = SearchState.latest(storage, experiment) if options.resume else SearchState.create(storage, experiment)
    saved = state.read() if options.resume else None
    if saved is None:
        # A new search, or one killed before it wrote its state: its parent run, if it got
        # that far, is found by the state folder it is tagged with, so there is only ever one.
        parent_id = tracker.find_search(str(state.path)) if options.resume else None
        parent_id = parent_id or tracker.start_search(
            f"{space.name}-search", tracking.objectives_tag(objectives),
            {**tracking.flatten({"search": search.model_dump(mode="json")}), "seed": seed},
            yaml.safe_dump(space.tree, sort_keys=False), search.budget_flops, str(state.path),
        )
        saved = {"parent_run_id": parent_id, "experiment": experiment, "tracking_uri": tracker.uri,
                 "attempts": -1}
    parent_id = saved["parent_run_id"]
    if options.resume:
        tracker.reopen_search(parent_id)
    entries = [e for e in state.entries() if "trial_id" in e]
    logged = {e["logged"]: e["run_id"] for e in state.entries() if "logged" in e}
    for e in entries:
        e["run_id"] = logged.get(e["trial_id"])
    attempt = saved["attempts"] + 1
    saved["attempts"] = attempt
    state.write(saved)

    driver = _Driver(space, state, tracker, parent_id, objectives, options.progress)
    driver.replay(entries)
    spent = sum(float(e["result"]["train_flops"]) for e in entries)

    storage_obj = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(state.journal)))
    _fail_stale_trials(storage_obj, experiment)
    remaining = search.trials - len(entries)
    if search.sampler == "grid":
        remaining = min(remaining, grid_size(space) - len(entries))
    summary_args = dict(experiment=experiment, parent_run_id=parent_id, tracking_uri=tracker.uri,
                        state_dir=str(state.path), objectives=objectives)
    failed_search = False
    try:
        if remaining > 0 and (search.budget_flops is None or search.budget_flops - spent >= cheapest):
            _run_tuner(space, options, state, driver, storage_obj, experiment, objectives, seed,
                       spent, cheapest, remaining, attempt, first=attempt == 0)
    except KeyboardInterrupt:
        failed_search = True
        raise
    finally:
        rows = driver.finish()
        total = sum(float(e["result"]["train_flops"]) for e in driver.entries)
        n_ok = sum(e["status"] == tracking.OK for e in driver.entries)
        tracker.finish_search(parent_id, {"trials": len(driver.entries), "trials_ok": n_ok,
                                          "spent_flops": total, "frontier_size": len(rows)},
                              failed=failed_search)
    n_pruned = sum(e["status"] == tracking.PRUNED for e in driver.entries)
    return SearchSummary(**summary_args, frontier=rows, trials=len(driver.entries), ok=n_ok,
                         pruned=n_pruned, failed=len(driver.entries) - n_ok - n_pruned, spent_flops=total,
                         budget_flops=search.budget_flops, wall_s=time.perf_counter() - started)


def _fail_stale_trials(storage, study_name: str) -> None:
    """Trials a killed driver left RUNNING are told to Optuna as FAIL, never left RUNNING,
    and queued to run again with the same point: a grid is completed, not patched with
    repeats, and an interrupted proposal is not lost. A rerun that is itself interrupted
    is not queued a third time (a trial that takes the driver down with it must not make
    every ``--resume`` die the same way)."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "optimix.skipped", "driver stopped while running")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if not trial.params:
            continue
        if _RERUN_ATTR in trial.user_attrs:
            log.warning("trial %d was interrupted twice: not run again", trial.user_attrs[_RERUN_ATTR])
        else:
            study.enqueue_trial(trial.params, user_attrs={_RERUN_ATTR: trial.number})


def _first_points(space: Space, seed: int) -> list[dict[str, Any]] | None:
    """The user's ``points_to_evaluate``, else a space-filling start for tpe and gp."""
    search = space.base.search
    if search.points_to_evaluate:
        return [dict(p) for p in search.points_to_evaluate]
    if sampler_name(space) in ("frontier", "tpe", "gp") and space.dimensions:
        return startup_design(space, startup_trials(space), seed) or None
    return None


def _run_tuner(space, options, state, driver, storage_obj, experiment, objectives, seed, spent,
               cheapest, remaining, attempt, first) -> None:
    import ray
    from ray import tune

    search = space.base.search
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no console tables: the CLI shows progress
    # A failed trial reports no objective values (never a made-up score): Tune must accept that.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    searcher = _optuna_search_class()(
        space=distributions(space),
        metric=[m for m, _ in objectives],
        mode=[d for _, d in objectives],
        points_to_evaluate=_first_points(space, seed) if first else None,
        sampler=make_sampler(space, seed),
        study_name=experiment,
        storage=storage_obj,
        space_obj=space,
        budget=search.budget_flops,
        spent=spent,
        cheapest=cheapest,
        points_left=remaining,
    )
    if hasattr(searcher._sampler, "budget_left"):  # the frontier sampler prices its proposals
        searcher._sampler.budget_left = searcher.left
    resources = {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial}
    if not ray.is_initialized():
        # "local": a fresh Ray on this machine, never a `ray start` cluster found by chance.
        address = options.address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False)
    if search.prune == "dominated":
        driver.board = _board_class().remote(objectives, search.prune_margin, search.prune_from)
        driver.board.update.remote(frontier.front(driver.candidates(), objectives))
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, space=space, save_models=search.save_models != "none",
                             board=driver.board),
        resources,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=remaining,
            max_concurrent_trials=search.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"ray-{attempt}",
            storage_path=str(state.path),
            callbacks=[_callback_class()(driver)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )
    try:
        tuner.fit()
    finally:
        if driver.board is not None:
            ray.kill(driver.board)
            driver.board = None
