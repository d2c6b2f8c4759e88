"""Planning queries over recorded trials: what a budget buys, what an accuracy costs, and
whether to raise the rare task's frequency or grow the model; and, before a search, what a
space's trials will cost. Pure: numpy, no MLflow or torch.

The queries ask the model of ``optimix.fit`` (the threshold law ``f_thres = c * N^-s * T^-u``
fitted to the trials, with bootstrap intervals). All are over finished ``ok`` trials:

- observed: the best trial under a budget; the cheapest trial reaching a target;
- predicted: the (size, frequency, tokens) with the best predicted accuracy under a budget,
  or the cheapest one predicted to reach a target, searched over the recorded sizes and
  frequencies (never outside their range; tokens may leave theirs, which is flagged);
- frequency against size: the predicted gain of doubling ``f`` against doubling ``N`` at equal
  FLOPs (fewer tokens). In logit terms the first adds ``k log 2`` and the second
  ``bN log 2 - bT log(fpt(2N) / fpt(N))`` wherever you stand, so the winner does not depend on
  the starting point; how much accuracy each buys does.

``optimix.verify`` trains the recommended config (``--verify``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimix.fit import N_BOOT, Fit, PlanError, TrialTable, fit, interval
from optimix.fit import cross_validate as cross_validate  # re-exported for callers of
from optimix.fit import simulate_trials as simulate_trials  # plan.X (benchmarks/plan_query.py)
from optimix.hardware import Hardware

TIE = 0.005
"""Predicted accuracies this close count as equal: the tie goes to the lower frequency, then fewer FLOPs."""


def choose_metric(objectives: Iterable[tuple[str, str]], rare_tasks: Iterable[str],
                  recorded: Iterable[str], task: str | None = None) -> str:
    """The accuracy metric to plan for: ``acc/TASK``, else the search's rare-task objective.

    ``rare_tasks`` are the trials' ``mixture.rare_task`` params, ``recorded`` the metric names
    the trials logged. ``PlanError`` names what is missing.
    """
    recorded = set(recorded)
    tasks = sorted(m.removeprefix("acc/") for m in recorded if m.startswith("acc/"))
    if task is not None:
        if f"acc/{task}" not in recorded:
            raise PlanError(f"--task: no trial recorded acc/{task} (tasks: {', '.join(tasks) or 'none'})")
        return f"acc/{task}"
    accs = [m for m, mode in objectives if m.startswith("acc/") and mode == "max"]
    if not accs:
        raise PlanError("the search has no accuracy objective (acc/<task>:max): name the task with --task")
    for rare in rare_tasks:
        if f"acc/{rare}" in accs:
            return f"acc/{rare}"
    return accs[0]


def search_table(record: Any, task: str | None = None) -> tuple[dict[str, Any], TrialTable]:
    """The head of the answer's document and the trial table of a recorded search
    (``records.SearchRecord``), for the metric ``choose_metric`` picks."""
    where = f"search {record.run_id} in {record.experiment!r}"
    if not record.objectives:
        raise PlanError(f"{where} has no objectives recorded")
    if not record.trials:
        raise PlanError(f"{where} has no trial")
    metric = choose_metric(
        record.objectives, [t.params.get("mixture.rare_task", "") for t in record.trials],
        {m for t in record.trials for m in t.metrics}, task)
    table = TrialTable.from_records(record.trials, metric)
    if not len(table.usable()):
        raise PlanError(f"{where} has no finished trial with {metric}")
    doc = {"experiment": record.experiment, "search_run_id": record.run_id,
           "task": metric.removeprefix("acc/"), "metric": metric}
    return doc, table


# ---------------------------------------------------------------------------------------------
# Observed answers


def best_under_budget(table: TrialTable, budget_flops: float) -> int | None:
    """Row of the most accurate ok trial with ``train_flops <= budget`` (ties: fewer FLOPs)."""
    rows = table.usable_rows()
    rows = rows[table.train_flops[rows] <= budget_flops]
    if not len(rows):
        return None
    return int(rows[np.lexsort((table.train_flops[rows], -table.acc[rows]))[0]])


def cheapest_reaching(table: TrialTable, target_acc: float) -> int | None:
    """Row of the ok trial with the fewest FLOPs whose accuracy is ``>= target`` (ties: more accurate)."""
    rows = table.usable_rows()
    rows = rows[table.acc[rows] >= target_acc]
    if not len(rows):
        return None
    return int(rows[np.lexsort((-table.acc[rows], table.train_flops[rows]))[0]])


# ---------------------------------------------------------------------------------------------
# Predicted answers


@dataclass(frozen=True)
class Config:
    params: float
    rare_freq: float
    tokens: float
    train_flops: float

    def to_dict(self) -> dict[str, float]:
        return {"params": round(self.params), "rare_freq": self.rare_freq,
                "tokens": round(self.tokens), "train_flops": self.train_flops}


def predict_under_budget(model: Fit, budget_flops: float) -> tuple[Config | None, list[str]]:
    """The config with the best predicted accuracy for at most ``budget_flops``."""
    n, f = np.meshgrid(model.sizes, model.freqs, indexing="ij")
    fpt = model.fpt(model.sizes)
    if model.used[1]:  # spend the budget on tokens, or fewer when the fit says more do not help
        full = budget_flops / fpt
        options = [np.minimum(full, t) for t in model.token_grid] + [full]
        t = np.stack([np.broadcast_to(o[:, None], n.shape) for o in options])
    else:
        t = np.broadcast_to(model.tokens_for(model.sizes)[:, None], n.shape)[None]
    n, f = np.broadcast_to(n, t.shape), np.broadcast_to(f, t.shape)
    flops = model.fpt(n) * t
    fits = flops <= budget_flops * (1 + 1e-9)
    if not fits.any():
        return None, [f"no recorded size fits {budget_flops:.3g} FLOPs with the trials' tokens"]
    acc = np.where(fits, model.predict(f, n, t).reshape(t.shape), -1.0)
    return _pick(f, n, t, flops, acc), []


def predict_reaching(model: Fit, target_acc: float) -> tuple[Config | None, list[str]]:
    """The cheapest config predicted to reach ``target_acc``."""
    if not 0 < target_acc < 1:
        return None, ["a target of 0 or 1 is a limit of the logistic model, never reached"]
    n, f = np.meshgrid(model.sizes, model.freqs, indexing="ij")
    if model.used[1]:
        t = np.broadcast_to(model.token_grid[:, None, None], (len(model.token_grid), *n.shape))
    else:
        t = np.broadcast_to(model.tokens_for(model.sizes)[:, None], n.shape)[None]
    n, f = np.broadcast_to(n, t.shape), np.broadcast_to(f, t.shape)
    acc = model.predict(f, n, t).reshape(t.shape)
    if not (acc >= target_acc).any() and model.used[1] and model.coef[3] > 0:
        # Nothing recorded reaches it: solve for the tokens that would (extrapolated).
        b0, k, bn, bt = model.coef
        need = (math.log(target_acc / (1 - target_acc)) - b0 - k * np.log(f[0]) - bn * np.log(n[0])) / bt
        t = np.maximum(np.exp(np.minimum(need, 700.0)), model.ranges["tokens"][1])[None]
        n, f = n[:1], f[:1]
        acc = model.predict(f, n, t).reshape(t.shape) + 1e-12
    reach = acc >= target_acc
    if not reach.any():
        return None, [f"no recorded size and frequency is predicted to reach {target_acc:g}"]
    flops = model.fpt(n) * t
    cost = np.where(reach, flops, np.inf)
    return _pick(f, n, t, flops, -cost, relative=True), []


def _pick(f, n, t, flops, score, *, relative: bool = False) -> Config:
    """The best-scoring candidate; near-ties go to the lower frequency, then to fewer FLOPs."""
    best = score.max()
    tie = TIE if not relative else 1e-3 * abs(best)
    near = np.flatnonzero((score >= best - tie).ravel())
    order = np.lexsort((flops.ravel()[near], f.ravel()[near]))
    i = near[order[0]]
    return Config(params=float(n.ravel()[i]), rare_freq=float(f.ravel()[i]),
                  tokens=float(t.ravel()[i]), train_flops=float(flops.ravel()[i]))


def outside(model: Fit, config: Config) -> list[str]:
    """Where ``config`` leaves the recorded trials (empty: inside)."""
    out = []
    for name in ("params", "rare_freq", "tokens"):
        lo, hi = model.ranges[name]
        value = getattr(config, name)
        if value < lo * (1 - 1e-6):
            out.append(f"{name} {value:.3g} below the recorded {lo:.3g}")
        elif value > hi * (1 + 1e-6):
            out.append(f"{name} {value:.3g} above the recorded {hi:.3g}")
    return out


def frequency_vs_size(model: Fit, base: Config) -> dict[str, Any]:
    """Doubling ``f`` against doubling ``N`` at equal FLOPs, from ``base``."""
    n2 = 2 * base.params
    t2 = base.tokens * float(model.fpt(base.params) / model.fpt(n2))
    if not model.used[1]:
        t2 = base.tokens  # tokens are not in the model: the fewer tokens cost nothing in it
    points = ([base.rare_freq, 2 * base.rare_freq, base.rare_freq],
              [base.params, base.params, n2], [base.tokens, base.tokens, t2])
    now, freq, size = model.predict(*points)
    boot = model.predict_boot(*points)
    gain_f, gain_n = boot[:, 1] - boot[:, 0], boot[:, 2] - boot[:, 0]
    zb = model.logit(*points, coef=model.boot)
    winner = "frequency" if freq - now >= size - now else "size"
    notes = []
    if 2 * base.rare_freq > model.ranges["rare_freq"][1] * (1 + 1e-6):
        notes.append("doubled rare_freq is above the recorded range")
    if n2 > model.ranges["params"][1] * (1 + 1e-6):
        notes.append("doubled params are above the recorded range")
    if not model.used[1]:
        notes.append("tokens are not in the model: the size gain ignores the tokens equal FLOPs take away")
    if not model.used[0]:
        notes.append("params are not in the model: it predicts no gain from size")
    return {
        "base": base.to_dict(),
        "acc": float(now),
        "double_frequency": {"rare_freq": 2 * base.rare_freq, "acc_gain": float(freq - now),
                             "interval": interval(gain_f)},
        "double_params": {"params": n2, "tokens": t2, "acc_gain": float(size - now),
                          "interval": interval(gain_n)},
        "winner": winner,
        "p_frequency_wins": float(np.mean(zb[:, 1] > zb[:, 2])),
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------
# The whole answer


def answer(table: TrialTable, *, metric: str, budget_flops: float | None = None,
           target_acc: float | None = None, hardware: Hardware, n_boot: int = N_BOOT,
           seed: int = 0) -> dict[str, Any]:
    """Observed and predicted answers to one query, with costs: the ``--json`` document's body."""
    if (budget_flops is None) == (target_acc is None):
        raise PlanError("give exactly one of --budget-flops or --target-acc")
    if budget_flops is not None and not (math.isfinite(budget_flops) and budget_flops > 0):
        raise PlanError(f"--budget-flops: expected a positive number, got {budget_flops:g}")
    if target_acc is not None and not (math.isfinite(target_acc) and 0 < target_acc <= 1):
        raise PlanError(f"--target-acc: expected a number in (0, 1], got {target_acc:g}")
    ok = table.usable()
    if not len(ok):
        raise PlanError(f"no finished trial with {metric} to plan from")
    doc: dict[str, Any] = {
        "metric": metric,
        "query": {"budget_flops": budget_flops} if budget_flops is not None else {"target_acc": target_acc},
        "trials": {"recorded": len(table), "ok": len(ok)},
    }
    row = (best_under_budget(table, budget_flops) if budget_flops is not None
           else cheapest_reaching(table, target_acc))
    doc["observed"] = None if row is None else {
        "run_id": str(table.run_id[row]),
        "train_flops": float(table.train_flops[row]),
        metric: float(table.acc[row]),
        "config": {"params": round(table.params[row]), "rare_freq": float(table.rare_freq[row]),
                   "tokens": round(table.tokens[row])},
        **_costs(hardware, float(table.train_flops[row])),
    }
    try:
        model = fit(table, n_boot=n_boot, seed=seed)
    except PlanError as err:
        doc["predicted"], doc["predicted_error"] = None, str(err)
        doc["fit"] = doc["frequency_vs_size"] = None
        best = doc["observed"]
        doc.update(_costs(hardware, best["train_flops"]) if best else {"gpu_hours": None, "cost_usd": None})
        doc["hardware"] = hardware.to_dict()
        return doc
    if budget_flops is not None:
        config, why = predict_under_budget(model, budget_flops)
    else:
        config, why = predict_reaching(model, target_acc)
    if config is None:
        doc["predicted"], doc["predicted_error"] = None, "; ".join(why)
    else:
        where = outside(model, config) + _query_outside(model, metric, budget_flops, target_acc)
        doc["predicted"] = _predicted(model, config, metric, where, target_acc, hardware)
    base = config or (Config(doc["observed"]["config"]["params"], doc["observed"]["config"]["rare_freq"],
                             doc["observed"]["config"]["tokens"], doc["observed"]["train_flops"])
                      if doc["observed"] else None)
    doc["fit"] = model.summary(*(base_nt(base, model)))
    doc["fit"]["notes"] = model.notes
    doc["frequency_vs_size"] = frequency_vs_size(model, base) if base else None
    spend = doc["predicted"] or doc["observed"]
    doc.update(_costs(hardware, spend["train_flops"]) if spend else {"gpu_hours": None, "cost_usd": None})
    doc["hardware"] = hardware.to_dict()
    return doc


def _query_outside(model: Fit, metric: str, budget_flops: float | None,
                   target_acc: float | None) -> list[str]:
    """Where the query itself leaves the recorded trials (empty: inside)."""
    out = []
    lo_flops, hi_flops = model.ranges["train_flops"]
    if budget_flops is not None and budget_flops > hi_flops * (1 + 1e-6):
        out.append(f"budget above the dearest recorded trial ({hi_flops:.3g} FLOPs)")
    if budget_flops is not None and budget_flops < lo_flops * (1 - 1e-6):
        out.append(f"budget below the cheapest recorded trial ({lo_flops:.3g} FLOPs)")
    if target_acc is not None and target_acc > model.ranges["acc"][1]:
        out.append(f"target above the best recorded {metric} ({model.ranges['acc'][1]:.3g})")
    return out


def _predicted(model: Fit, config: Config, metric: str, where: list[str], target_acc: float | None,
               hardware: Hardware) -> dict[str, Any]:
    """The predicted answer's document: ``config`` with its accuracy, interval and costs."""
    boot = model.predict_boot(config.rare_freq, config.params, config.tokens)[:, 0]
    return {
        "config": config.to_dict(),
        "train_flops": config.train_flops,
        metric: float(model.predict(config.rare_freq, config.params, config.tokens)),
        "interval": interval(boot),
        "extrapolated": bool(where),
        "outside": where,
        **({"p_reach": float(np.mean(boot >= target_acc))} if target_acc is not None else {}),
        **_costs(hardware, config.train_flops),
    }


def base_nt(base: Config | None, model: Fit) -> tuple[float, float]:
    """Where to quote the threshold: the answer's size and tokens, else the trials' middle."""
    if base is not None:
        return base.params, base.tokens
    (n0, n1), (t0, t1) = model.ranges["params"], model.ranges["tokens"]
    return math.sqrt(n0 * n1), math.sqrt(t0 * t1)


def _costs(hardware: Hardware, flops: float) -> dict[str, float]:
    return {"gpu_hours": hardware.hours(flops), "cost_usd": hardware.cost_usd(flops)}


# ---------------------------------------------------------------------------------------------
# Before a search: what a budget buys


def space_outlook(space: Any, *, hardware: Hardware, budget_flops: float | None = None,
                  workers: int | None = None, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Cheapest and dearest trial, trials per budget, wall time and money: from the space alone.

    The cost of a trial is known before it runs (``search.trial_flops``); the sampler's points
    are not, so the expected cost is the mean over ``samples`` points drawn uniformly (in log
    scale for log dimensions), and the dearest is the largest over those and every corner.
    """
    from optimix.budget import cheapest_flops, cost_corners, trial_flops
    from optimix.config import SpaceError

    search = space.base.search
    workers = workers or search.max_concurrent
    if workers < 1:
        raise PlanError(f"--workers: expected at least 1, got {workers}")
    budget = budget_flops if budget_flops is not None else search.budget_flops
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise PlanError(f"--budget-flops: expected a positive number, got {budget:g}")
    rng = np.random.default_rng(seed)
    corners, drawn = [], []
    for points, out in ((cost_corners(space.dimensions, 64), corners),
                        ((_draw(space.dimensions, rng) for _ in range(samples)), drawn)):
        for point in points:
            try:
                out.append(trial_flops(space, point))
            except SpaceError:
                continue  # an invalid combination is never started by a search either
    if not drawn:
        raise PlanError("no point drawn from the space is a valid trial")
    drawn = np.array(drawn)
    cheapest = min([cheapest_flops(space), *corners, drawn.min()])
    dearest = max([*corners, drawn.max()])
    mean = float(drawn.mean())
    doc: dict[str, Any] = {
        "space": space.name, "dimensions": list(space.dimensions),
        "trial_flops": {"cheapest": cheapest, "mean": mean, "dearest": dearest,
                        "samples": len(drawn)},
        "trials_cap": search.trials, "workers": workers, "budget_flops": budget,
        "hardware": hardware.to_dict(),
        "trial_hours": {"cheapest": hardware.hours(cheapest), "mean": hardware.hours(mean),
                        "dearest": hardware.hours(dearest)},
    }
    if budget is not None and budget < cheapest:
        raise PlanError(f"--budget-flops: {budget:.3g} is below the cheapest trial ({cheapest:.3g} FLOPs)")
    cases = {}
    for case, per_trial in (("expected", mean), ("worst", dearest)):
        if budget is None:
            trials = search.trials
            flops = trials * per_trial
        else:
            trials = min(search.trials, int(budget // per_trial))
            flops = trials * per_trial
        rounds = math.ceil(trials / workers)
        cases[case] = {
            "trials": trials, "train_flops": flops,
            "device_hours": hardware.hours(flops),
            "wall_hours": rounds * hardware.hours(per_trial),
            "cost_usd": hardware.cost_usd(flops),
        }
    cases["worst"]["note"] = "every trial at the dearest point"
    doc.update(cases)
    doc["note"] = ("times count training FLOPs at the profile's rate only: start-up, data, "
                   "evaluation and idle workers come on top")
    return doc


def _draw(dimensions: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A uniform draw of the space: a grid's values, else ``Dimension.at`` a uniform number."""
    return {key: dim.grid[rng.integers(len(dim.grid))] if dim.grid is not None else dim.at(rng.uniform())
            for key, dim in dimensions.items()}


# ---------------------------------------------------------------------------------------------
# Small helpers


def jsonable(value: Any) -> Any:
    """A document with numpy scalars as Python numbers and NaN / inf as None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

