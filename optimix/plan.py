"""Planning queries over recorded trials: what a budget buys, what an accuracy costs, and
whether to raise the rare task's frequency or grow the model. Pure: numpy, no MLflow or torch.

The model (SCIENCE.md, Gu et al. arXiv:2505.18091): rare-task accuracy jumps once the rare
frequency ``f`` passes a threshold that falls with model size ``N`` (and with training tokens
``T``), ``f_thres = c * N^-s * T^-u``. Across the jump accuracy is logistic in log frequency::

    acc = sigmoid(k * (log f - log f_thres(N, T)))
        = sigmoid(b0 + k log f + bN log N + bT log T),   s = bN / k,  u = bT / k,  log c = -b0 / k

so the fit is a logistic regression of the accuracy (a fraction in [0, 1]) on (log f, log N,
log T): convex, solved by Newton's method with a small ridge (exact 0/1 accuracies separate the
data and would send ``k`` to infinity otherwise). A feature that does not vary in the trials, or
that is tied to the others (iso-FLOP trials tie tokens to size), is left out: the answer then
follows the trials' own design for it (the tokens a size was trained on). Intervals come from
refitting on bootstrap resamples of the trials (200 by default, seeded).

Queries (all over finished ``ok`` trials):

- observed: the best trial under a budget; the cheapest trial reaching a target;
- predicted: the (size, frequency, tokens) with the best predicted accuracy under a budget,
  or the cheapest one predicted to reach a target, searched over the recorded sizes and
  frequencies (never outside their range; tokens may leave theirs, which is flagged);
- frequency against size: the predicted gain of doubling ``f`` against doubling ``N`` at equal
  FLOPs (fewer tokens). In logit terms the first adds ``k log 2`` and the second
  ``bN log 2 - bT log(fpt(2N) / fpt(N))`` wherever you stand, so the winner does not depend on
  the starting point; how much accuracy each buys does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimix.hardware import Hardware

log = logging.getLogger(__name__)

N_BOOT = 200
INTERVAL = (5.0, 95.0)
"""Percentiles of the bootstrap predictions: a 90% interval."""
RIDGE = 1e-2
"""L2 penalty on the standardised slopes: keeps separable (0/1) data finite, barely biases the rest."""
TIE = 0.005
"""Predicted accuracies this close count as equal: the tie goes to the lower frequency, then fewer FLOPs."""
GOAL = {"spearman": 0.9, "mae": 0.08}
"""What ``optimix plan --validate`` should reach on the study reproduction's trials."""


class PlanError(ValueError):
    """A query the trials cannot answer; the message is one line."""


# ---------------------------------------------------------------------------------------------
# The trial table


@dataclass(frozen=True)
class TrialTable:
    """One row per trial; the columns are numpy arrays of equal length."""

    run_id: np.ndarray
    rare_freq: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    train_flops: np.ndarray
    acc: np.ndarray
    status: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.run_id)
        for name in ("rare_freq", "params", "tokens", "train_flops", "acc", "status"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TrialTable.{name}: {len(getattr(self, name))} rows, run_id has {n}")

    @classmethod
    def from_columns(cls, *, run_id: Iterable[str], rare_freq: Iterable[float],
                     params: Iterable[float], tokens: Iterable[float], train_flops: Iterable[float],
                     acc: Iterable[float], status: Iterable[str] | None = None) -> TrialTable:
        run_id = np.asarray(list(run_id), dtype=object)
        status = np.asarray(list(status) if status is not None else ["ok"] * len(run_id), dtype=object)
        as_float = {name: np.asarray(list(values), dtype=float) for name, values in
                    (("rare_freq", rare_freq), ("params", params), ("tokens", tokens),
                     ("train_flops", train_flops), ("acc", acc))}
        return cls(run_id=run_id, status=status, **as_float)

    @classmethod
    def from_records(cls, records: Iterable[Any], metric: str) -> TrialTable:
        """From ``tracking.TrialRecord``-like objects (``run_id``, ``status``, ``params``, ``metrics``).

        ``rare_freq`` is the ``mixture.rare_freq`` param, ``params``, ``tokens`` and
        ``train_flops`` the metrics of those names, ``acc`` the metric ``metric``; a missing
        value is NaN (failed trials have no accuracy).
        """
        rows = list(records)

        def num(value: Any) -> float:
            try:
                return float(value)
            except (TypeError, ValueError):
                return math.nan

        return cls.from_columns(
            run_id=[r.run_id for r in rows],
            rare_freq=[num(r.params.get("mixture.rare_freq")) for r in rows],
            params=[num(r.metrics.get("params")) for r in rows],
            tokens=[num(r.metrics.get("tokens")) for r in rows],
            train_flops=[num(r.metrics.get("train_flops")) for r in rows],
            acc=[num(r.metrics.get(metric)) for r in rows],
            status=[r.status for r in rows],
        )

    def __len__(self) -> int:
        return len(self.run_id)

    def take(self, index: np.ndarray) -> TrialTable:
        return TrialTable(**{name: getattr(self, name)[index] for name in _COLUMNS})

    def usable_rows(self) -> np.ndarray:
        """Rows of finished (``ok``) trials whose numbers are finite, and positive where they must be."""
        mask = (self.status == "ok") & np.isfinite(self.acc)
        for name in ("rare_freq", "params", "tokens", "train_flops"):
            values = getattr(self, name)
            mask &= np.isfinite(values) & (values > 0)
        return np.flatnonzero(mask)

    def usable(self) -> TrialTable:
        return self.take(self.usable_rows())


_COLUMNS = ("run_id", "rare_freq", "params", "tokens", "train_flops", "acc", "status")


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
# The fit


@dataclass
class Fit:
    """A fitted accuracy surface with its bootstrap refits and the trials' design."""

    coef: np.ndarray
    """(b0, k, bN, bT) in natural-log units; a left-out feature has 0."""
    boot: np.ndarray
    """(B, 4) bootstrap refits of ``coef``."""
    used: tuple[bool, bool]
    """Whether log N and log T are in the model."""
    flops_per_token: tuple[float, float]
    """(a, b): log(train_flops / tokens) = a + b log N, fitted on the trials."""
    design_tokens: tuple[float, float]
    """(a, b): log T = a + b log N over the trials (used where T is not in the model)."""
    ranges: dict[str, tuple[float, float]]
    sizes: np.ndarray
    freqs: np.ndarray
    token_grid: np.ndarray
    n: int
    notes: list[str] = field(default_factory=list)

    # -- predictions -----------------------------------------------------------------------

    def logit(self, f, n, t, coef: np.ndarray | None = None) -> np.ndarray:
        c = self.coef if coef is None else coef
        f, n, t = (np.log(np.asarray(x, dtype=float)) for x in (f, n, t))
        if c.ndim == 1:
            return c[0] + c[1] * f + c[2] * n + c[3] * t
        return (c[:, 0, None] + c[:, 1, None] * np.ravel(f) + c[:, 2, None] * np.ravel(n)
                + c[:, 3, None] * np.ravel(t))

    def predict(self, f, n, t) -> np.ndarray:
        return _sigmoid(self.logit(f, n, t))

    def predict_boot(self, f, n, t) -> np.ndarray:
        """(B, points) bootstrap predictions."""
        return _sigmoid(self.logit(f, n, t, self.boot))

    def fpt(self, n) -> np.ndarray:
        a, b = self.flops_per_token
        return np.exp(a + b * np.log(np.asarray(n, dtype=float)))

    def tokens_for(self, n) -> np.ndarray:
        """The tokens the trials' design gives a model of size ``n``."""
        a, b = self.design_tokens
        return np.exp(a + b * np.log(np.asarray(n, dtype=float)))

    # -- the threshold law ----------------------------------------------------------------

    def law(self, coef: np.ndarray | None = None) -> dict[str, float] | None:
        """``f_thres = c N^-s T^-u`` from the coefficients, or None when accuracy does not rise with f."""
        b0, k, bn, bt = self.coef if coef is None else coef
        if k <= 0:
            return None
        return {"k": float(k), "s": float(bn / k), "u": float(bt / k), "log_c": float(-b0 / k)}

    def threshold(self, n: float, t: float, coef: np.ndarray | None = None) -> float:
        """The 50% rare frequency at size ``n`` and tokens ``t``."""
        law = self.law(coef)
        if law is None:
            return math.nan
        return math.exp(law["log_c"] - law["s"] * math.log(n) - law["u"] * math.log(t))

    def summary(self, n: float, t: float) -> dict[str, Any]:
        """The law with bootstrap intervals, and the threshold at (n, t)."""
        law = self.law()
        doc: dict[str, Any] = {"model": "acc = sigmoid(k * (log f - log f_thres)), "
                                        "f_thres = c * N^-s * T^-u",
                               "trials": self.n, "bootstrap": len(self.boot),
                               "uses_params": self.used[0], "uses_tokens": self.used[1]}
        if law is None:
            doc["threshold_law"] = None
            return doc
        laws = [self.law(c) for c in self.boot]
        valid = [x for x in laws if x is not None]
        doc["k"] = law["k"]
        doc["c"] = math.exp(law["log_c"])
        for key in ("s", "u"):
            used = self.used[0] if key == "s" else self.used[1]
            doc[key] = law[key] if used else None
            doc[f"{key}_interval"] = _pct([x[key] for x in valid]) if used and valid else None
        doc["at"] = {"params": n, "tokens": t}
        doc["threshold_freq"] = self.threshold(n, t)
        doc["threshold_interval"] = _pct([self.threshold(n, t, c) for c in self.boot])
        return doc


def fit(table: TrialTable, *, n_boot: int = N_BOOT, seed: int = 0, ridge: float = RIDGE) -> Fit:
    """Fit the accuracy surface to the table's usable trials; ``PlanError`` when it cannot."""
    ok = table.usable()
    if len(ok) < 4:
        raise PlanError(f"fitting needs at least 4 finished trials, got {len(ok)}")
    logs = np.column_stack([np.log(ok.rare_freq), np.log(ok.params), np.log(ok.tokens)])
    if np.ptp(logs[:, 0]) < 1e-9:
        raise PlanError("every finished trial has the same mixture.rare_freq: no frequency to fit on")
    keep = [0]
    notes = []
    for j, what in ((1, "params"), (2, "tokens")):
        if np.ptp(logs[:, j]) < 1e-9:
            notes.append(f"every trial has the same {what}: the model cannot say what changing it does")
        elif _tied(logs[:, keep], logs[:, j]):
            notes.append(f"{what} are tied to the other inputs in these trials (e.g. iso-FLOP): "
                         f"left out of the model; answers follow the trials' {what}")
        else:
            keep.append(j)
    mean, scale = logs[:, keep].mean(0), logs[:, keep].std(0)
    x = np.column_stack([np.ones(len(ok)), (logs[:, keep] - mean) / scale])
    y = np.clip(ok.acc, 0.0, 1.0)
    beta = _newton(x, y, np.ones((1, len(ok))), np.zeros((1, x.shape[1])), ridge)
    rng = np.random.default_rng(seed)
    n = len(ok)
    draws = rng.integers(0, n, size=(n_boot, n))
    counts = np.bincount((draws + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
    boot = _refit(x, y, counts.reshape(n_boot, n).astype(np.float32), beta, ridge)

    def natural(b: np.ndarray) -> np.ndarray:
        out = np.zeros((len(b), 4))
        slopes = b[:, 1:] / scale
        out[:, [1 + j for j in keep]] = slopes
        out[:, 0] = b[:, 0] - slopes @ mean
        return out

    log_fpt = np.log(ok.train_flops / ok.tokens)
    log_n = logs[:, 1]
    return Fit(
        coef=natural(beta)[0], boot=natural(boot), used=(1 in keep, 2 in keep),
        flops_per_token=_line(log_n, log_fpt, slope_if_flat=1.0),
        design_tokens=_line(log_n, logs[:, 2], slope_if_flat=0.0),
        ranges={name: (float(v.min()), float(v.max())) for name, v in
                (("rare_freq", ok.rare_freq), ("params", ok.params), ("tokens", ok.tokens),
                 ("train_flops", ok.train_flops), ("acc", ok.acc))},
        sizes=_grid(ok.params, 33), freqs=_grid(ok.rare_freq, 49), token_grid=_grid(ok.tokens, 17),
        n=n, notes=notes,
    )


def _newton(x: np.ndarray, y: np.ndarray, w: np.ndarray, beta: np.ndarray, ridge: float,
            iters: int = 100, tol: float = 1e-9) -> np.ndarray:
    """Weighted logistic regression with fractional targets, B fits at once (rows of ``w``).

    Minimises ``sum w (log(1 + e^z) - y z) + ridge/2 |slopes|^2`` with Newton steps, halving a
    step that does not lower the loss (weights are bootstrap counts; each row is one fit).
    """
    pen = _penalty(x.shape[1], ridge)

    def loss(b: np.ndarray, wb: np.ndarray) -> np.ndarray:
        z = b @ x.T
        return (wb * (np.logaddexp(0.0, z) - y * z)).sum(1) + 0.5 * (pen * b * b).sum(1)

    beta = beta.copy()
    current = loss(beta, w)
    active = np.ones(len(beta), dtype=bool)
    for _ in range(iters):
        b, wa = beta[active], w[active]
        step, _ = _newton_step(x, y, wa, b, pen)
        t = np.ones(len(b))
        old = current[active]
        for _ in range(30):
            new = loss(b - t[:, None] * step, wa)
            bad = new > old + 1e-12 * np.abs(old)
            if not bad.any():
                break
            t[bad] /= 2
        new = np.minimum(new, old)
        moved = np.where(new < old, 1.0, 0.0)[:, None] * t[:, None] * step
        idx = np.flatnonzero(active)
        beta[idx] = b - moved
        current[idx] = new
        done = np.abs(moved).max(1) < tol * (1 + np.abs(b).max(1))
        active[idx[done]] = False
        if not active.any():
            break
    return beta


def _refit(x: np.ndarray, y: np.ndarray, w: np.ndarray, start: np.ndarray, ridge: float,
           iters: int = 8, tol: float = 1e-5) -> np.ndarray:
    """Many fits near ``start`` (bootstrap resamples): plain Newton steps, which converge in a
    few from a warm start; a row they leave unconverged is redone by the safe ``_newton``."""
    pen = _penalty(x.shape[1], ridge)
    beta = np.repeat(start, len(w), 0)
    w32 = w.astype(np.float32, copy=False)
    for _ in range(iters):
        step, _ = _newton_step(x, y, w32, beta, pen)
        beta = beta - step
        if np.abs(step).max() < tol * (1 + np.abs(beta).max()):
            break
    small = np.abs(step).max(1) < tol * (1 + np.abs(beta).max(1))
    bad = ~(np.isfinite(beta).all(1) & small)
    if bad.any():
        beta[bad] = _newton(x, y, w[bad].astype(float), np.repeat(start, int(bad.sum()), 0), ridge)
    return beta


def _newton_step(x, y, w, beta, pen) -> tuple[np.ndarray, np.ndarray]:
    """The Newton step and the gradient of the penalised loss, per row.

    The (B, n) work runs in ``w``'s dtype (float32 for the bootstrap: half the memory
    traffic, and its rounding is far below the resampling noise), in place where it can.
    """
    d = x.shape[1]
    xs, ys = x.astype(w.dtype, copy=False), y.astype(w.dtype, copy=False)
    p = beta.astype(w.dtype) @ xs.T
    np.multiply(p, 0.5, out=p)  # sigmoid(z) = (1 + tanh(z / 2)) / 2
    np.tanh(p, out=p)
    p += 1.0
    p *= 0.5
    r = p - ys
    r *= w
    grad = (r @ xs).astype(float) + pen * beta
    np.subtract(1.0, p, out=r)
    r *= p
    r *= w  # the Hessian's weights w p (1 - p)
    outer = (xs[:, :, None] * xs[:, None, :]).reshape(len(x), d * d)
    hess = (r @ outer).astype(float).reshape(-1, d, d) + np.diag(pen) + 1e-12 * np.eye(d)
    return np.linalg.solve(hess, grad[:, :, None])[:, :, 0], grad


def _penalty(d: int, ridge: float) -> np.ndarray:
    pen = np.full(d, ridge)
    pen[0] = 0.0  # never the intercept
    return pen


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
                             "interval": _pct(gain_f)},
        "double_params": {"params": n2, "tokens": t2, "acc_gain": float(size - now),
                          "interval": _pct(gain_n)},
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
    query_out = []
    lo_flops, hi_flops = model.ranges["train_flops"]
    if budget_flops is not None and budget_flops > hi_flops * (1 + 1e-6):
        query_out.append(f"budget above the dearest recorded trial ({hi_flops:.3g} FLOPs)")
    if budget_flops is not None and budget_flops < lo_flops * (1 - 1e-6):
        query_out.append(f"budget below the cheapest recorded trial ({lo_flops:.3g} FLOPs)")
    if target_acc is not None and target_acc > model.ranges["acc"][1]:
        query_out.append(f"target above the best recorded {metric} ({model.ranges['acc'][1]:.3g})")
    if config is None:
        doc["predicted"], doc["predicted_error"] = None, "; ".join(why)
    else:
        boot = model.predict_boot(config.rare_freq, config.params, config.tokens)[:, 0]
        where = outside(model, config) + query_out
        doc["predicted"] = {
            "config": config.to_dict(),
            "train_flops": config.train_flops,
            metric: float(model.predict(config.rare_freq, config.params, config.tokens)),
            "interval": _pct(boot),
            "extrapolated": bool(where),
            "outside": where,
            **({"p_reach": float(np.mean(boot >= target_acc))} if target_acc is not None else {}),
            **_costs(hardware, config.train_flops),
        }
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


def base_nt(base: Config | None, model: Fit) -> tuple[float, float]:
    """Where to quote the threshold: the answer's size and tokens, else the trials' middle."""
    if base is not None:
        return base.params, base.tokens
    (n0, n1), (t0, t1) = model.ranges["params"], model.ranges["tokens"]
    return math.sqrt(n0 * n1), math.sqrt(t0 * t1)


def _costs(hardware: Hardware, flops: float) -> dict[str, float]:
    return {"gpu_hours": hardware.hours(flops), "cost_usd": hardware.cost_usd(flops)}


# ---------------------------------------------------------------------------------------------
# How good are the predictions?


def cross_validate(table: TrialTable, *, folds: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Held-out predictions of every usable trial: leave-one-out up to 200 trials, else 10-fold.

    Reports the Spearman rank correlation and the mean absolute error of accuracy, and whether
    they meet ``GOAL``.
    """
    ok = table.usable()
    n = len(ok)
    if n < 5:
        raise PlanError(f"validation needs at least 5 finished trials, got {n}")
    folds = folds or (n if n <= 200 else 10)
    folds = min(folds, n)
    assign = np.random.default_rng(seed).permutation(n) % folds
    pred = np.full(n, np.nan)
    for k in range(folds):
        test = assign == k
        try:
            model = fit(ok.take(np.flatnonzero(~test)), n_boot=1, seed=seed)
        except PlanError:
            continue  # this fold's training trials cannot be fitted: its trials stay unpredicted
        pred[test] = model.predict(ok.rare_freq[test], ok.params[test], ok.tokens[test])
    done = np.isfinite(pred)
    rho = spearman(pred[done], ok.acc[done])
    mae = float(np.mean(np.abs(pred[done] - ok.acc[done]))) if done.any() else math.nan
    return {
        "method": "leave-one-out" if folds == n else f"{folds}-fold",
        "trials": n, "predicted": int(done.sum()),
        "spearman": rho, "mae": mae, "goal": dict(GOAL),
        "meets_goal": bool(rho >= GOAL["spearman"] and mae <= GOAL["mae"]),
        "run_id": [str(r) for r in ok.run_id], "acc": ok.acc.tolist(),
        "predicted_acc": [None if not math.isfinite(p) else float(p) for p in pred],
    }


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


# ---------------------------------------------------------------------------------------------
# Before a search: what a budget buys


def space_outlook(space: Any, *, hardware: Hardware, budget_flops: float | None = None,
                  workers: int | None = None, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Cheapest and dearest trial, trials per budget, wall time and money: from the space alone.

    The cost of a trial is known before it runs (``search.trial_flops``); the sampler's points
    are not, so the expected cost is the mean over ``samples`` points drawn uniformly (in log
    scale for log dimensions), and the dearest is the largest over those and every corner.
    """
    from optimix.budget import cheapest_flops, trial_flops
    from optimix.space import SpaceError

    search = space.base.search
    workers = workers or search.max_concurrent
    if workers < 1:
        raise PlanError(f"--workers: expected at least 1, got {workers}")
    budget = budget_flops if budget_flops is not None else search.budget_flops
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise PlanError(f"--budget-flops: expected a positive number, got {budget:g}")
    rng = np.random.default_rng(seed)
    corners, drawn = [], []
    for points, out in ((_corners(space.dimensions), corners),
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


def _corners(dimensions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each cost dimension at its ends, the others at their middle (at most 64 points)."""
    import itertools

    options = []
    for key, dim in dimensions.items():
        if key.split(".")[0] not in ("model", "train", "tasks"):
            continue
        if dim.dist == "choice":
            options.append([(key, v) for v in dim.values])
        else:
            ends = (int(dim.low), int(dim.high)) if dim.dist == "int" else (dim.low, dim.high)
            options.append([(key, v) for v in ends])
    return [dict(c) for c in itertools.islice(itertools.product(*options), 64)]


def _draw(dimensions: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    point = {}
    for key, dim in dimensions.items():
        if dim.grid is not None:
            point[key] = dim.grid[rng.integers(len(dim.grid))]
        elif dim.dist == "choice":
            point[key] = dim.values[rng.integers(len(dim.values))]
        elif dim.dist == "loguniform" or dim.log:
            point[key] = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
        else:
            point[key] = rng.uniform(dim.low, dim.high)
        if dim.dist == "int":
            step = int(dim.step or 1)
            point[key] = int(min(dim.high, dim.low + step * round((point[key] - dim.low) / step)))
    return point


# ---------------------------------------------------------------------------------------------
# Verify: the recommended config as a trial


def verify_tree(params: Mapping[str, str], config: Config, recorded_params: float) -> dict[str, Any]:
    """A trial config tree from a recorded trial's params (dotted key -> text), moved to ``config``.

    The recorded trial should be the one nearest in size. Params that are not config keys
    (``shape.*``: the shape the trial built) stay out of the tree. When the recommended size is
    the trial's own, its recorded shape is pinned (``model.d_model`` etc., no ``model.params``),
    so the tree builds the model that trained; else ``model.params`` sets the size by
    optimix's shape rule. Tokens are fixed (``train.tokens``), never derived from ``train.flops``.
    """
    from optimix.space import TrialConfig

    tree: dict[str, Any] = {}
    for key, text in params.items():
        if key.split(".")[0] not in TrialConfig.model_fields:
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _param_value(text)
    tree.setdefault("mixture", {})["rare_freq"] = config.rare_freq
    train = tree.setdefault("train", {})
    train["tokens"], train["flops"] = max(1, round(config.tokens)), None
    model = tree.setdefault("model", {})
    if not same_size(config.params, recorded_params):
        model["params"] = max(1000, round(config.params))
    elif all(f"shape.{name}" in params for name in _SHAPE_KEYS):
        model.update({name: int(params[f"shape.{name}"]) for name in _SHAPE_KEYS}, params=None)
    tree.pop("search", None)
    return tree


_SHAPE_KEYS = ("d_model", "n_layer", "n_head", "d_ff")


def same_size(params: float, recorded_params: float) -> bool:
    """Whether a recommended size is the recorded trial's own (to 0.1%): verify keeps its shape."""
    return abs(math.log(params / recorded_params)) <= 1e-3


def _param_value(text: str) -> Any:
    """A logged param's value: ``None``, a list or mapping (JSON, or YAML flow as in
    ``['facts']``), else the text itself.

    The typed config reads the text (``"64"`` as 64, ``"False"`` as False where those are the
    field's types), so a string field keeps its text whatever it looks like (``"on"``, ``"1"``).
    """
    from optimix.space import SpaceError, parse_override

    if text == "None":
        return None
    if text.startswith(("[", "{")):
        try:
            value = parse_override(f"value={text}")[1]
        except SpaceError:
            return text
        return value if isinstance(value, list | dict) else text
    return text


def nearest_size(table: TrialTable, params: float) -> int:
    """Row of the usable trial whose size is nearest (in log) to ``params``."""
    rows = table.usable_rows()
    return int(rows[np.argmin(np.abs(np.log(table.params[rows]) - math.log(params)))])


# ---------------------------------------------------------------------------------------------
# Trials drawn from a known law (tests, benchmarks, and to see what a fit can recover)


def simulate_trials(n: int, rng: np.random.Generator, *, c: float = 9.5, s: float = 0.56,
                    u: float = 0.0, k: float = 5.0, sizes: tuple[float, float] = (2e4, 1e6),
                    freqs: tuple[float, float] = (1e-3, 0.2), tokens: tuple[float, float] = (9e5, 9e5),
                    eval_size: int = 512, flops_per_param_token: float = 6.0) -> TrialTable:
    """``n`` trials at log-uniform (N, f, T) whose accuracy follows the threshold law.

    Accuracy is a binomial draw of ``eval_size`` answers at ``sigmoid(k (log f - log f_thres))``;
    ``train_flops = flops_per_param_token * N * T``. The defaults are the SCIENCE.md CPU probe's
    law (c = 9.5, s = 0.56: f_thres 0.037 at 20K params, 0.0068 at 250K; k about 5).
    """
    def logu(lo_hi: tuple[float, float]) -> np.ndarray:
        lo, hi = lo_hi
        return np.exp(rng.uniform(math.log(lo), math.log(hi), n)) if hi > lo else np.full(n, lo)

    size, freq, tok = logu(sizes), logu(freqs), logu(tokens)
    thres = c * size ** -s * tok ** -u
    p = _sigmoid(k * (np.log(freq) - np.log(thres)))
    acc = rng.binomial(eval_size, p) / eval_size
    return TrialTable.from_columns(
        run_id=[f"sim-{i:05d}" for i in range(n)], rare_freq=freq, params=size, tokens=tok,
        train_flops=flops_per_param_token * size * tok, acc=acc)


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


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def _pct(values: Iterable[float]) -> list[float] | None:
    values = np.asarray(list(values), dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, INTERVAL)
    return [float(lo), float(hi)]


def _tied(kept: np.ndarray, new: np.ndarray) -> bool:
    """Whether ``new`` is (almost) a linear function of the kept columns: R^2 above 0.99."""
    x = np.column_stack([np.ones(len(new)), kept])
    residual = new - x @ np.linalg.lstsq(x, new, rcond=None)[0]
    return float(residual.var()) < 0.01 * float(new.var())


def _line(x: np.ndarray, y: np.ndarray, *, slope_if_flat: float) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; with no spread in ``x``, ``b = slope_if_flat``."""
    if np.ptp(x) < 1e-9:
        return float(np.mean(y - slope_if_flat * x)), slope_if_flat
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def _grid(values: np.ndarray, points: int) -> np.ndarray:
    """The recorded values when there are few (a choice or grid), else a log grid over their range."""
    distinct = np.unique(values)
    if len(distinct) <= 16:
        return distinct
    return np.exp(np.linspace(np.log(distinct[0]), np.log(distinct[-1]), points))
