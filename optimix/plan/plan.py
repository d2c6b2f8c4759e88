"""Planning queries over recorded trials: what a budget buys, what an accuracy costs, and
whether to raise the rare task's frequency or grow the model; and, before a search, what a
space's trials will cost. Pure: numpy, no MLflow or torch.

The queries ask the model of ``optimix.core.fit`` (the threshold law ``f_thres = c * N^-s * T^-u``
fitted to the trials, with bootstrap intervals). All are over finished ``ok`` trials:

- observed: the best trial under a budget; the cheapest trial reaching a target;
- predicted: the (size, frequency, tokens) with the best predicted accuracy under a budget,
  or the cheapest one predicted to reach a target, searched over the recorded sizes and
  frequencies (never outside their range; tokens may leave theirs, which is flagged);
- frequency against size: the predicted gain of doubling ``f`` against doubling ``N`` at equal
  FLOPs (fewer tokens). In logit terms the first adds ``k log 2`` and the second
  ``bN log 2 - bT log(fpt(2N) / fpt(N))`` wherever you stand, so the winner does not depend on
  the starting point; how much accuracy each buys does.

``optimix.plan.verify`` trains the recommended config (``--verify``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimix.core.fit import N_BOOT, Fit, PlanError, TrialTable, fit, interval
from optimix.core.fit import simulate_trials as simulate_trials  # re-exported for callers of plan.X
from optimix.core.hardware import Hardware
from optimix.core.outlook import space_outlook as space_outlook  # (the CLI, search proposals)
from optimix.plan.plan_table import choose_metric as choose_metric  # re-exported (tests, the CLI)
from optimix.plan.plan_table import constraint_sizes, constraints_doc
from optimix.plan.plan_table import search_constraints as search_constraints  # (the CLI)
from optimix.plan.plan_table import search_table as search_table  # (the CLI, benchmarks)
from optimix.plan.validate import cross_validate as cross_validate  # (the CLI, benchmarks)

TIE = 0.005
"""Predicted accuracies this close count as equal: the tie goes to the lower frequency, then fewer FLOPs."""


# ---------------------------------------------------------------------------------------------
# Observed answers


def best_under_budget(table: TrialTable, budget_flops: float) -> int | None:
    """Row of the most accurate ok trial with ``train_flops <= budget`` (ties: fewer FLOPs)
    among those that met the search's outcome constraints."""
    rows = table.usable_rows()
    rows = rows[(table.train_flops[rows] <= budget_flops) & table.met[rows]]
    if not len(rows):
        return None
    return int(rows[np.lexsort((table.train_flops[rows], -table.acc[rows]))[0]])


def cheapest_reaching(table: TrialTable, target_acc: float) -> int | None:
    """Row of the ok trial with the fewest FLOPs whose accuracy is ``>= target`` (ties: more
    accurate) among those that met the search's outcome constraints."""
    rows = table.usable_rows()
    rows = rows[(table.acc[rows] >= target_acc) & table.met[rows]]
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


def _sizes(model: Fit, params: float | None, allowed: np.ndarray | None = None) -> np.ndarray:
    if params is not None:
        return np.array([float(params)])
    if allowed is None:
        return model.sizes
    return model.sizes[np.isclose(model.sizes[:, None], allowed[None, :], rtol=1e-6).any(axis=1)]


def predict_under_budget(model: Fit, budget_flops: float, *, params: float | None = None,
                         allowed: np.ndarray | None = None) -> tuple[Config | None, list[str]]:
    """The config with the best predicted accuracy for at most ``budget_flops`` (at ``params``
    when given, else over the recorded sizes, or those ``allowed`` by the constraints)."""
    sizes = _sizes(model, params, allowed)
    if not len(sizes):
        return None, ["no recorded size has a trial that met the search's constraints"]
    n, f = np.meshgrid(sizes, model.freqs, indexing="ij")
    fpt = model.fpt(sizes)
    if model.used[1]:  # spend the budget on tokens, or fewer when the fit says more do not help
        full = budget_flops / fpt
        options = [np.minimum(full, t) for t in model.token_grid] + [full]
        t = np.stack([np.broadcast_to(o[:, None], n.shape) for o in options])
    else:
        t = np.broadcast_to(model.tokens_for(sizes)[:, None], n.shape)[None]
    n, f = np.broadcast_to(n, t.shape), np.broadcast_to(f, t.shape)
    flops = model.fpt(n) * t
    fits = flops <= budget_flops * (1 + 1e-6)
    if not fits.any():
        what = f"{params:,.0f} params" if params is not None else "no recorded size"
        return None, [f"{what} fits {budget_flops:.3g} FLOPs with the trials' tokens"
                      if params is None else f"{what} with the trials' tokens need more than {budget_flops:.3g} FLOPs"]
    acc = np.where(fits, model.predict(f, n, t).reshape(t.shape), -1.0)
    return _pick(f, n, t, flops, acc), []


def predict_reaching(model: Fit, target_acc: float, *, params: float | None = None,
                     allowed: np.ndarray | None = None) -> tuple[Config | None, list[str]]:
    """The cheapest config predicted to reach ``target_acc`` (at ``params`` when given, else
    over the recorded sizes, or those ``allowed`` by the constraints)."""
    if not 0 < target_acc < 1:
        return None, ["a target of 0 or 1 is a limit of the logistic model, never reached"]
    sizes = _sizes(model, params, allowed)
    if not len(sizes):
        return None, ["no recorded size has a trial that met the search's constraints"]
    n, f = np.meshgrid(sizes, model.freqs, indexing="ij")
    if model.used[1]:
        t = np.broadcast_to(model.token_grid[:, None, None], (len(model.token_grid), *n.shape))
    else:
        t = np.broadcast_to(model.tokens_for(sizes)[:, None], n.shape)[None]
    n, f = np.broadcast_to(n, t.shape), np.broadcast_to(f, t.shape)
    acc = model.predict(f, n, t).reshape(t.shape)
    need = model.tokens_to_reach(target_acc, f[0], n[0])
    if not (acc >= target_acc).any() and need is not None:
        # Nothing recorded reaches it: the tokens that would (extrapolated).
        t = np.maximum(need, model.ranges["tokens"][1])[None]
        n, f = n[:1], f[:1]
        acc = model.predict(f, n, t).reshape(t.shape) + 1e-9
    reach = acc >= target_acc
    if not reach.any():
        where = "no recorded size and frequency" if params is None else f"no frequency at {params:,.0f} params"
        return None, [f"{where} is predicted to reach {target_acc:g}"]
    flops = model.fpt(n) * t
    cost = np.where(reach, flops, np.inf)
    return _pick(f, n, t, flops, -cost, relative=True), []


def _pick(f, n, t, flops, score, *, relative: bool = False) -> Config:
    """The best-scoring candidate; near-ties go to fewer FLOPs, then to the lower frequency
    (the rare task takes less of the mixture from the other tasks)."""
    best = score.max()
    tie = TIE if not relative else 1e-3 * abs(best)
    near = np.flatnonzero((score >= best - tie).ravel())
    order = np.lexsort((f.ravel()[near], flops.ravel()[near]))
    i = near[order[0]]
    return Config(params=float(n.ravel()[i]), rare_freq=float(f.ravel()[i]),
                  tokens=float(t.ravel()[i]), train_flops=float(flops.ravel()[i]))


def outside(model: Fit, config: Config) -> list[str]:
    """Where ``config`` leaves the recorded trials (empty: inside); a size outside says how far."""
    out = []
    for name in ("params", "rare_freq", "tokens"):
        lo, hi = model.ranges[name]
        value = getattr(config, name)
        if value < lo * (1 - 1e-6):
            out.append(f"{name} {value:.3g} below the recorded {lo:.3g} ({lo / value:.2g}x)")
        elif value > hi * (1 + 1e-6):
            out.append(f"{name} {value:.3g} above the recorded {hi:.3g} ({value / hi:.2g}x)")
    return out


AGREE = 0.9
"""Share of the draws that must agree before the frequency-or-size verdict names a winner."""


def frequency_vs_size(model: Fit, base: Config) -> dict[str, Any]:
    """Doubling ``f`` against doubling ``N`` (at equal FLOPs, or at equal tokens when tokens
    are not in the model), from ``base``; the verdict is "undetermined" with its reason when
    the trials cannot decide."""
    n2 = 2 * base.params
    equal = "FLOPs" if model.used[1] else "tokens"
    t2 = base.tokens * float(model.fpt(base.params) / model.fpt(n2)) if model.used[1] else base.tokens
    points = ([base.rare_freq, 2 * base.rare_freq, base.rare_freq],
              [base.params, base.params, n2], [base.tokens, base.tokens, t2])
    now, freq, size = model.predict(*points)
    draws = model.predict_draws(*points)
    gain_f, gain_n = draws[:, 1] - draws[:, 0], draws[:, 2] - draws[:, 0]
    zb = model.logit_draws(*points)
    drawn = np.isfinite(zb).all(axis=1)  # none where no trial places the threshold at this size
    p_freq = float(np.mean(zb[drawn, 1] > zb[drawn, 2])) if drawn.any() else None
    notes = []
    if 2 * base.rare_freq > model.ranges["rare_freq"][1] * (1 + 1e-6):
        notes.append("doubled rare_freq is above the recorded range")
    if n2 > model.ranges["params"][1] * (1 + 1e-6):
        notes.append(f"doubled params are {model.size_distance(n2):.2g}x above the recorded sizes")
    if not model.used[1]:
        notes.append("tokens are not in the model: size is compared at equal tokens (the larger "
                     "model costs more FLOPs), not at equal FLOPs")
    undetermined = _undetermined(model, p_freq)
    winner = ("undetermined" if undetermined else "frequency" if p_freq >= AGREE else "size")
    return {
        "base": base.to_dict(),
        "acc": float(now),
        "at_equal": equal,
        "double_frequency": {"rare_freq": 2 * base.rare_freq, "acc_gain": float(freq - now),
                             "interval": interval(gain_f)},
        "double_params": {"params": n2, "tokens": t2, "acc_gain": float(size - now),
                          "interval": interval(gain_n)},
        "tokens_per_param": {"base": base.tokens / base.params, "double_params": t2 / n2},
        "winner": winner,
        "undetermined": undetermined,
        "p_frequency_wins": p_freq,
        "notes": notes,
    }


def _undetermined(model: Fit, p_freq: float | None) -> str | None:
    """Why the trials cannot say whether frequency or size wins, or None."""
    if not model.used[0]:
        return "every trial has the same size (or sizes are tied to other inputs): nothing says what size does"
    quality = model.quality()
    if quality["curve"] is None:
        return "one recorded size: nothing says what size does"
    law = model.power_law()
    if law and law["s_interval"] is None:
        return "two recorded sizes: the size law cannot be checked"
    if law and law["s_interval"][0] <= 0 <= law["s_interval"][1]:
        lo, hi = law["s_interval"]
        return f"the size slope's 90% interval [{lo:.3g}, {hi:.3g}] spans zero"
    if quality["curve"]["fits_badly"]:
        return (f"the curve over sizes fits badly (chi2 {quality['curve']['chi2']:.3g} on "
                f"{quality['curve']['df']} df, p {quality['curve']['p_value']:.2g})")
    if p_freq is None:
        return "no trial places the threshold at this size: the law has no draws here"
    if 1 - AGREE < p_freq < AGREE:
        return f"the draws disagree: frequency wins in {p_freq:.0%} of them"
    return None


# ---------------------------------------------------------------------------------------------
# The whole answer


def answer(table: TrialTable, *, metric: str, budget_flops: float | None = None,
           target_acc: float | None = None, hardware: Hardware, params: float | None = None,
           n_boot: int = N_BOOT, seed: int = 0, constraints: Sequence[str] = ()) -> dict[str, Any]:
    """Observed and predicted answers to one query, with costs: the ``--json`` document's body.
    ``params``: answer for a model of that size (the one the user will train); ``constraints``:
    the search's outcome constraints as text (what ``table.met`` was judged by)."""
    _check_query(budget_flops, target_acc, params)
    ok = table.usable()
    if not len(ok):
        raise PlanError(f"no finished trial with {metric} to plan from")
    measured = recorded_rate(table)
    doc: dict[str, Any] = {
        "metric": metric,
        "query": ({"budget_flops": budget_flops} if budget_flops is not None else {"target_acc": target_acc})
        | ({"params": params} if params is not None else {}),
        "trials": {"recorded": len(table), "ok": len(ok)},
    }
    allowed = constraint_sizes(table)
    if allowed is not None:  # stated before the fit, which may fail
        doc["constraints"] = constraints_doc(table, allowed, constraints)
    row = (best_under_budget(table, budget_flops) if budget_flops is not None
           else cheapest_reaching(table, target_acc))
    doc["observed"] = None if row is None else {
        "run_id": str(table.run_id[row]),
        "train_flops": float(table.train_flops[row]),
        metric: float(table.acc[row]),
        "config": {"params": round(table.params[row]), "rare_freq": float(table.rare_freq[row]),
                   "tokens": round(table.tokens[row])},
        **_costs(hardware, measured, float(table.train_flops[row]), float(table.params[row])),
        **_seeds(table, row),
    }
    try:
        model = fit(table, n_boot=n_boot, seed=seed)
    except PlanError as err:  # the recorded answer alone
        doc["predicted"], doc["predicted_error"] = None, str(err)
        doc["fit"] = doc["frequency_vs_size"] = None
        best = doc["observed"]
        doc.update(_costs(hardware, measured, best["train_flops"], best["config"]["params"]) if best
                   else {"gpu_hours": None, "cost_usd": None})
        doc["hardware"] = hardware.to_dict()
        return doc
    return _answer_from_fit(doc, model, table, row, metric=metric, budget_flops=budget_flops,
                            target_acc=target_acc, params=params, allowed=allowed, hardware=hardware,
                            measured=measured)


def _seeds(table: TrialTable, row: int) -> dict[str, Any]:
    """How many seeds of the observed answer's config were recorded, and their mean: an answer
    that rests on one recorded trial says so (a new seed may land far from it)."""
    rows = table.seeds_of(row)
    out: dict[str, Any] = {"seeds": len(rows), "seeds_mean": float(np.mean(table.acc[rows]))}
    if len(rows) == 1:
        out["note"] = "rests on one recorded trial (one seed): a new seed may differ widely"
    return out


def _check_query(budget_flops: float | None, target_acc: float | None, params: float | None) -> None:
    if (budget_flops is None) == (target_acc is None):
        raise PlanError("give exactly one of --budget-flops or --target-acc")
    if budget_flops is not None and not (math.isfinite(budget_flops) and budget_flops > 0):
        raise PlanError(f"--budget-flops: expected a positive number, got {budget_flops:g}")
    if target_acc is not None and not (math.isfinite(target_acc) and 0 < target_acc <= 1):
        raise PlanError(f"--target-acc: expected a number in (0, 1], got {target_acc:g}")
    if params is not None and not (math.isfinite(params) and params >= 1):
        raise PlanError(f"--params: expected a model size of at least 1, got {params:g}")


def _answer_from_fit(doc: dict[str, Any], model: Fit, table: TrialTable, row, *, metric: str,
                     budget_flops: float | None, target_acc: float | None, params: float | None,
                     allowed, hardware: Hardware, measured) -> dict[str, Any]:
    """``answer``'s document completed from the fit: the predicted config (or the recorded
    trial, where it already answers at no more FLOPs), the fit's summary and the verdict."""
    if budget_flops is not None:
        config, why = predict_under_budget(model, budget_flops, params=params, allowed=allowed)
    else:
        config, why = predict_reaching(model, target_acc, params=params, allowed=allowed)
    observed_config = (Config(float(table.params[row]), float(table.rare_freq[row]), float(table.tokens[row]),
                              float(table.train_flops[row])) if row is not None else None)
    recorded_wins = config is not None and _observed_is_better(
        model, config, observed_config, None if row is None else float(table.acc[row]), params)
    if recorded_wins:
        config = observed_config
    if config is None:
        doc["predicted"], doc["predicted_error"] = None, "; ".join(why)
    else:
        where = outside(model, config) + _query_outside(model, metric, budget_flops, target_acc)
        doc["predicted"] = _predicted(model, config, metric, where, target_acc, hardware, measured)
        if recorded_wins:
            doc["predicted"]["recorded_run"] = doc["observed"]["run_id"]
            doc["predicted"]["why"] = ("a recorded trial already answers the query at no more FLOPs "
                                       "than the best predicted config: it is the recommendation")
    base = config or observed_config
    doc["fit"] = model.summary(*(base_nt(base, model)))
    doc["fit"]["notes"] = model.notes
    doc["frequency_vs_size"] = frequency_vs_size(model, base) if base else None
    spend = config or observed_config
    doc.update(_costs(hardware, measured, spend.train_flops, spend.params) if spend
               else {"gpu_hours": None, "cost_usd": None})
    doc["hardware"] = hardware.to_dict()
    doc["recorded_hardware"] = measured.to_dict() if measured else None
    return doc


def _observed_is_better(model: Fit, config: Config, observed: Config | None, measured: float | None,
                        params: float | None) -> bool:
    """Whether the recorded trial answering the query beats the predicted config: it meets
    the query (it is the observed answer) at no more FLOPs, and neither its measured nor its
    predicted accuracy falls short of the prediction by more than a tie."""
    if observed is None or observed.train_flops > config.train_flops * (1 + 1e-9):
        return False
    if params is not None and abs(math.log(observed.params / params)) > 5e-3:
        return False
    mine = float(model.predict(config.rare_freq, config.params, config.tokens))
    theirs = max(measured, float(model.predict(observed.rare_freq, observed.params, observed.tokens)))
    return theirs >= mine - TIE


def recorded_rate(table: TrialTable) -> Hardware | None:
    """The recorded hardware's achieved rate, from the trials' own training time."""
    from optimix.core.hardware import recorded

    ok = table.usable()
    timed = np.isfinite(ok.train_s) & (ok.train_s > 0)
    if not timed.any():
        return None
    return recorded(ok.params[timed], ok.train_flops[timed], ok.train_s[timed])


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
               hardware: Hardware, measured: Hardware | None) -> dict[str, Any]:
    """The predicted answer's document: ``config`` with its accuracy, intervals and costs.

    ``interval``: 90% for the expected accuracy (the mean over seeds); ``trial_interval``: 90%
    for what one trained trial measures (seed noise and the evaluation's finite answers).
    ``p_reach``: the share of one-trial draws that reach the target. All three are None where
    the law has no draws at the config (no trial places the threshold at its size).
    """
    point = (config.rare_freq, config.params, config.tokens)
    trial = model.predict_draws(*point, seeds=1)[:, 0]
    trial = trial[np.isfinite(trial)]
    return {
        "config": config.to_dict(),
        "train_flops": config.train_flops,
        metric: float(model.predict(*point)),
        "interval": interval(model.predict_draws(*point)[:, 0]),
        "trial_interval": interval(trial),
        "extrapolated": bool(where),
        "outside": where,
        **({"p_reach": float(np.mean(trial >= target_acc)) if len(trial) else None}
           if target_acc is not None else {}),
        **_costs(hardware, measured, config.train_flops, config.params),
    }


def base_nt(base: Config | None, model: Fit) -> tuple[float, float]:
    """Where to quote the threshold: the answer's size and tokens, else the trials' middle."""
    if base is not None:
        return base.params, base.tokens
    (n0, n1), (t0, t1) = model.ranges["params"], model.ranges["tokens"]
    return math.sqrt(n0 * n1), math.sqrt(t0 * t1)


def _costs(hardware: Hardware, measured: Hardware | None, flops: float, params: float) -> dict[str, Any]:
    """Hours and money on ``hardware`` at this size; hours at the recorded hardware's measured rate."""
    doc = {"gpu_hours": hardware.hours(flops, params=params),
           "cost_usd": hardware.cost_usd(flops, params=params),
           "recorded_hours": measured.hours(flops, params=params) if measured else None}
    note = hardware.note(params)
    return doc | ({"cost_note": note} if note else {})


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

