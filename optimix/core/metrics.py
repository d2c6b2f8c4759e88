"""Every name optimix records under: metrics, statuses, tags, attributes; objective parsing.

One module owns them, so MLflow, the ledger, Optuna, the frontier and the CLI never spell a
name differently. Pure: the standard library and the typed configs only.

- **Metrics** of a trial (MLflow metric names, objectives chosen among them): ``acc/<task>``,
  ``loss/<task>``, the counts ``train_flops``, ``params``, ``non_embedding_params``,
  ``tokens``, the timings ``wall_s``, ``train_s``, ``tokens_per_s``; learning curves under
  ``curve/...`` by step.
- **Statuses**: what a trial's result says (``ok``, ``diverged``, ``failed``, ``pruned``) and
  what the records say (``ok``, ``failed``, ``infeasible``, ``pruned``: a diverged trial is
  infeasible, never scored).
- **Tags** on MLflow runs, **user attributes** on Optuna trials, and the keys of a trial's
  report to Ray Tune.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from optimix.core.config import Objective, SpaceError, TrialConfig

# ---------------------------------------------------------------------------------------------
# Statuses

Status = Literal["ok", "diverged", "failed", "pruned"]  # a TrialResult's
OK, FAILED, INFEASIBLE, PRUNED = "ok", "failed", "infeasible", "pruned"  # the records'
DIVERGED = "diverged"
_RECORDED = {OK: OK, DIVERGED: INFEASIBLE, INFEASIBLE: INFEASIBLE, PRUNED: PRUNED}


def record_status(result_status: str) -> str:
    """The records' status of a trial whose result says ``result_status``."""
    return _RECORDED.get(result_status, FAILED)


# ---------------------------------------------------------------------------------------------
# Tags on MLflow runs

ROLE = "optimix.role"
STATUS = "optimix.status"
PARETO = "optimix.pareto"
PARETO_STEPS = "optimix.pareto_steps"
TRIAL_ID = "optimix.trial_id"
OBJECTIVES = "optimix.objectives"
ERROR = "optimix.error"
SPACE = "optimix.space"
BUDGET = "optimix.budget_flops"
NODE = "optimix.node"
POINT = "optimix.point"
CONFIG = "optimix.config"  # on a trial: its config without its seed (``replicates.config_id``): replicates share it
STATE_DIR = "optimix.state_dir"
CONSTRAINTS = "optimix.constraints"  # on the parent: the search's outcome constraints, ";"-joined
MET = "optimix.constraints_met"  # on a trial: "true", or "false: <the constraints it missed>"
ENDED = "optimix.ended"  # on the parent: finished, SIGINT, SIGTERM, or the error that ended it
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
# MLflow run statuses after ``set_terminated``: only such a child run is a logged trial.
TERMINATED = ("FINISHED", "FAILED")

# ---------------------------------------------------------------------------------------------
# User attributes on Optuna trials

TRIAL_ID_ATTR = "optimix.trial_id"  # on each Optuna trial that ran: its ledger trial_id
FLOPS_ATTR = "optimix.train_flops"  # what it spent, as the ledger says
SKIPPED_ATTR = "optimix.skipped"  # a proposal never trained, and why
SEED_ATTR = "optimix.seed"  # on a replicate's Optuna trial: the seed it trains its config at
RERUN_ATTR = "optimix.rerun_of"  # a point queued again after its trial was interrupted
CONSTRAINT_ATTR = "optimix.constraints"  # Optuna's convention: one value per constraint, <= 0 met
CURVE_ATTR = "optimix.curve"  # [[log10 FLOPs, quality], ...] of a trial's learning-curve points

# ---------------------------------------------------------------------------------------------
# A trial's report to Ray Tune

STATUS_KEY = "optimix_status"
RESULT_KEY = "optimix_result"  # JSON: one TrialResult.to_dict() per trained point (a list)
PROGRESS_KEY = "optimix_progress_flops"  # FLOPs trained so far, reported at each curve point
GROUP_KEY = "optimix_group"  # a Tune trial's config when it trains several points stacked

# ---------------------------------------------------------------------------------------------
# Metrics

ACC, LOSS, CURVE = "acc/", "loss/", "curve/"
COUNTS = ("train_flops", "params", "non_embedding_params", "tokens")
TIMES = ("wall_s", "train_s", "tokens_per_s")
LOG_SCALE = COUNTS  # spans orders of magnitude: Optuna is told log10 of these


def acc(task: str) -> str:
    return f"{ACC}{task}"


def loss(task: str) -> str:
    return f"{LOSS}{task}"


def task_of(metric: str) -> str:
    """``acc/facts`` -> ``facts``."""
    return metric.removeprefix(ACC).removeprefix(LOSS)


def metric_names(tasks: Iterable[str]) -> dict[str, list[str]]:
    """The metric names a trial logs: objectives are chosen among these."""
    tasks = list(tasks)
    return {"acc": [acc(t) for t in tasks], "loss": [loss(t) for t in tasks],
            "cost": list(COUNTS), "time": list(TIMES)}


def curve_metric(metric: str) -> bool:
    """Whether ``metric`` is known at a learning-curve point."""
    return metric.startswith((ACC, LOSS)) or metric in COUNTS


def curve_usable(names: Iterable[str]) -> bool:
    """Whether every metric in ``names`` is known at a learning-curve point."""
    return all(curve_metric(m) for m in names)


def _task_metrics(accuracy: Mapping[str, float], losses: Mapping[str, float]) -> dict[str, float]:
    out = {acc(t): float(v) for t, v in accuracy.items()}
    out.update({loss(t): float(v) for t, v in losses.items()})
    return out


def final_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """Final metrics of a trial result (``TrialResult.to_dict()``), by their MLflow names."""
    out = {k: float(result[k]) for k in (*COUNTS, *TIMES)}
    out.update(_task_metrics(result.get("accuracy", {}), result.get("loss", {})))
    return out


def point_metrics(result: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, float]:
    """Metrics of one learning-curve point (``CurvePoint`` as a dict) of ``result``."""
    out = {"train_flops": float(point["train_flops"]), "tokens": float(point["tokens"]),
           "params": float(result["params"]),
           "non_embedding_params": float(result["non_embedding_params"])}
    out.update(_task_metrics(point["accuracy"], point["loss"]))
    return out


def curve_values(point: Mapping[str, Any]) -> dict[str, float]:
    """One learning-curve point as MLflow metrics (``curve/...``, logged at its step)."""
    values = {"tokens": point["tokens"], "train_flops": point["train_flops"],
              "train_loss": point["train_loss"], **_task_metrics(point["accuracy"], point["loss"])}
    return {f"{CURVE}{k}": v for k, v in values.items()}


# ---------------------------------------------------------------------------------------------
# Objectives


def objectives_tag(objectives: Iterable[Objective]) -> str:
    """The ``optimix.objectives`` tag: ``acc/facts:max,train_flops:min``."""
    return ",".join(map(str, objectives))


def parse_objectives_tag(text: str) -> list[Objective]:
    out = []
    for part in filter(None, text.split(",")):
        metric, _, mode = part.rpartition(":")
        out.append(Objective(metric=metric, mode=mode))
    return out


_AGGREGATE = re.compile(r"^(acc|loss)/(mean|min|max)(?:\(([^()]*)\)|\.(.+))$")


def canonical(metric: str) -> str:
    """An aggregate over tasks as optimix records it: ``acc/mean(facts,rev)`` (how a user may
    write it) -> ``acc/mean.facts.rev`` (an MLflow metric name; task names hold no dots).
    Any other metric as it is."""
    match = _AGGREGATE.match(metric.strip())
    if not match:
        return metric
    kind, how, listed, dotted = match.groups()
    tasks = [t.strip() for t in (listed.split(",") if listed is not None else dotted.split("."))]
    return f"{kind}/{how}." + ".".join(tasks)


def aggregate_of(metric: str) -> tuple[str, str, list[str]] | None:
    """``acc/mean.facts.rev`` -> (``acc``, ``mean``, [facts, rev]); None for any other metric."""
    match = _AGGREGATE.match(metric)
    if not match or match.group(3) is not None:
        return None
    return match.group(1), match.group(2), match.group(4).split(".")


def aggregates(config: TrialConfig) -> list[str]:
    """The aggregate metrics a trial computes: those its objectives and constraints name."""
    named = [canonical(s.rpartition(":")[0]) for s in config.search.objectives]
    named += [canonical(parse_constraint(c).metric) for c in config.search.constraints if _CONSTRAINT.match(c)]
    return [m for m in dict.fromkeys(named) if aggregate_of(m)]


def with_aggregates(names: Iterable[str], accuracy: Mapping[str, float],
                    losses: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """``accuracy`` and ``losses`` (by task) with each aggregate in ``names`` added under its
    task-like key (``mean.facts.rev``), where every task it covers was evaluated."""
    accuracy, losses = dict(accuracy), dict(losses)
    how = {"mean": lambda v: sum(v) / len(v), "min": min, "max": max}
    for name in names:
        kind, op, tasks = aggregate_of(name)
        source = accuracy if kind == "acc" else losses
        if all(t in source for t in tasks):
            source[name.partition("/")[2]] = float(how[op]([source[t] for t in tasks]))
    return accuracy, losses


def _unknown(config: TrialConfig, metric: str) -> str | None:
    """Why ``metric`` is not one a trial of ``config`` records, or None if it is one."""
    names = metric_names(config.tasks)
    if metric in {n for group in names.values() for n in group}:
        return None
    parts = aggregate_of(metric)
    if parts is None:
        return (f"unknown metric {metric!r} (e.g. "
                f"{', '.join(names['acc'][:2] + ['train_flops', 'params'])})")
    tasks = parts[2]
    missing = [t for t in tasks if t not in config.tasks]
    if missing:
        return f"unknown task {missing[0]!r} in {metric!r} (tasks: {', '.join(config.tasks)})"
    if len(set(tasks)) != len(tasks):
        return f"{metric!r} names a task twice"
    if len(tasks) < 2:
        return (f"{metric!r} aggregates one task: an aggregate needs two or more "
                f"(or name {parts[0]}/{tasks[0]} itself)")
    return None


def parse_objectives(config: TrialConfig) -> list[Objective]:
    """``search.objectives`` as typed pairs; default: rare-task accuracy up, FLOPs down. An
    objective may aggregate tasks: ``acc/mean(facts,rev):max`` (also ``min``, ``max``)."""
    specs = config.search.objectives or [f"{acc(config.mixture.rare_task)}:max", "train_flops:min"]
    out = []
    for i, spec in enumerate(specs):
        metric, sep, mode = spec.rpartition(":")
        if not sep or mode not in ("min", "max") or not metric:
            raise SpaceError(f"search.objectives.{i}: expected 'metric:max' or 'metric:min', got {spec!r}")
        out.append(Objective(metric=canonical(metric), mode=mode))
    if len({o.metric for o in out}) != len(out):
        raise SpaceError("search.objectives: a metric is named twice")
    for i, objective in enumerate(out):
        why = _unknown(config, objective.metric)
        if why:
            raise SpaceError(f"search.objectives.{i}: {why}")
    _check_search_fits(config, out)
    return out


MIN_FLOPS = Objective(metric="train_flops", mode="min")


def _check_search_fits(config: TrialConfig, objectives: list[Objective]) -> None:
    """What the search settings need of the objectives."""
    search = config.search
    if search.stack > 1 and search.prune != "none":
        raise SpaceError("search.stack: stacked trials cannot be pruned one by one; "
                         "set search.prune: none or search.stack: 1")
    if search.sampler == "frontier" and (len(objectives) != 2 or MIN_FLOPS not in objectives):
        raise SpaceError("search.sampler: 'frontier' needs two objectives, one of them train_flops:min")
    if search.prune == "dominated" and (MIN_FLOPS not in objectives or len(objectives) < 2
                                        or not curve_usable(o.metric for o in objectives)):
        raise SpaceError("search.prune: 'dominated' needs the objectives train_flops:min and "
                         "accuracies, losses or cost counts (known at every curve point)")


# ---------------------------------------------------------------------------------------------
# Outcome constraints

_CONSTRAINT = re.compile(r"^\s*([^<>=]+?)\s*(>=|<=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``: a trial counts only where every one holds."""

    metric: str
    op: str
    bound: float

    def violation(self, values: Mapping[str, float]) -> float:
        """Optuna's convention: <= 0 where met (how far inside), > 0 by how much it misses;
        ``inf`` where the metric is missing or NaN. A strict bound counts equality as a miss."""
        value = values.get(self.metric, math.nan)
        if not math.isfinite(value):
            return math.inf
        gap = self.bound - value if self.op in (">=", ">") else value - self.bound
        return gap if gap != 0 or self.op in (">=", "<=") else 1e-12

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def violations(constraints: Sequence[Constraint], values: Mapping[str, float]) -> list[float]:
    return [c.violation(values) for c in constraints]


def missed(constraints: Sequence[Constraint], values: Mapping[str, float]) -> list[Constraint]:
    return [c for c in constraints if c.violation(values) > 0]


def parse_constraint(text: str, key: str = "search.constraints") -> Constraint:
    match = _CONSTRAINT.match(str(text))
    if not match:
        raise SpaceError(f"{key}: expected 'metric >= value' (or <=, >, <), got {text!r}")
    metric, op, bound = match.groups()
    metric = canonical(metric)
    try:
        value = float(bound)
    except ValueError:
        raise SpaceError(f"{key}: {bound!r} is not a number") from None
    if not math.isfinite(value):
        raise SpaceError(f"{key}: the bound must be a finite number, got {bound!r}")
    return Constraint(metric, op, value)


def parse_constraints(config: TrialConfig) -> list[Constraint]:
    """``search.constraints`` as typed constraints on known metrics."""
    out = []
    for i, text in enumerate(config.search.constraints):
        constraint = parse_constraint(text, f"search.constraints.{i}")
        why = _unknown(config, constraint.metric)
        if why:
            raise SpaceError(f"search.constraints.{i}: {why}")
        out.append(constraint)
    return out


@dataclass(frozen=True)
class SearchSpec:
    """What a search optimises and requires, parsed once from its space (``Space.spec``) and
    carried as these types everywhere."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def of(cls, config: TrialConfig) -> SearchSpec:
        """``search.objectives`` and ``search.constraints`` of ``config``; ``SpaceError`` naming
        the entry that is wrong."""
        return cls(tuple(parse_objectives(config)), tuple(parse_constraints(config)))

    @property
    def quality(self) -> Objective | None:
        """The first objective that is not ``train_flops`` (what the frontier sampler models)."""
        return next((o for o in self.objectives if o.metric != "train_flops"), None)

    @property
    def directions(self) -> list[str]:
        """Optuna's study directions, one per objective."""
        return ["maximize" if o.maximize else "minimize" for o in self.objectives]


def constraints_tag(constraints: Iterable[Constraint]) -> str:
    return "; ".join(map(str, constraints))


def parse_constraints_tag(text: str) -> list[Constraint]:
    return [parse_constraint(part) for part in text.split(";") if part.strip()]
