"""The planning model: the trial table, the threshold-law fit, its bootstrap, and how well it
predicts held-out trials. Pure: numpy, no MLflow, torch, Ray or Optuna.

The model (docs/science.md, Gu et al. arXiv:2505.18091): rare-task accuracy jumps once the rare
frequency ``f`` passes a threshold that falls with model size ``N`` (and with training tokens
``T``), ``f_thres = c * N^-s * T^-u``. Across the jump accuracy is logistic in log frequency::

    acc = sigmoid(k * (log f - log f_thres(N, T)))
        = sigmoid(b0 + k log f + bN log N + bT log T),   s = bN / k,  u = bT / k,  log c = -b0 / k

so the fit is a logistic regression of the accuracy (a fraction in [0, 1]) on (log f, log N,
log T): convex, solved by Newton's method (``optimix.logistic``) with a small ridge (exact 0/1
accuracies separate the data and would send ``k`` to infinity otherwise). A feature that does not vary in the trials, or
that is tied to the others (iso-FLOP trials tie tokens to size), is left out: the answer then
follows the trials' own design for it (the tokens a size was trained on). Intervals come from
refitting on bootstrap resamples of the trials (200 by default, seeded). The queries over the
fit are in ``optimix.plan``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimix import logistic

N_BOOT = 200
INTERVAL = (5.0, 95.0)
"""Percentiles of the bootstrap predictions: a 90% interval."""
RIDGE = 1e-2
"""L2 penalty on the standardised slopes: keeps separable (0/1) data finite, barely biases the rest."""
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
        """From ``records.TrialRecord``-like objects (``run_id``, ``status``, ``params``, ``metrics``).

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
            doc[f"{key}_interval"] = interval([x[key] for x in valid]) if used and valid else None
        doc["at"] = {"params": n, "tokens": t}
        doc["threshold_freq"] = self.threshold(n, t)
        doc["threshold_interval"] = interval([self.threshold(n, t, c) for c in self.boot])
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
    beta = logistic.newton(x, y, np.ones((1, len(ok))), np.zeros((1, x.shape[1])), ridge)
    rng = np.random.default_rng(seed)
    n = len(ok)
    draws = rng.integers(0, n, size=(n_boot, n))
    counts = np.bincount((draws + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
    boot = logistic.refit(x, y, counts.reshape(n_boot, n).astype(np.float32), beta, ridge)

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
# Trials drawn from a known law (tests, benchmarks, and to see what a fit can recover)


def simulate_trials(n: int, rng: np.random.Generator, *, c: float = 9.5, s: float = 0.56,
                    u: float = 0.0, k: float = 5.0, sizes: tuple[float, float] = (2e4, 1e6),
                    freqs: tuple[float, float] = (1e-3, 0.2), tokens: tuple[float, float] = (9e5, 9e5),
                    eval_size: int = 512, flops_per_param_token: float = 6.0) -> TrialTable:
    """``n`` trials at log-uniform (N, f, T) whose accuracy follows the threshold law.

    Accuracy is a binomial draw of ``eval_size`` answers at ``sigmoid(k (log f - log f_thres))``;
    ``train_flops = flops_per_param_token * N * T``. The defaults are the docs/science.md CPU probe's
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


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def interval(values: Iterable[float]) -> list[float] | None:
    """The ``INTERVAL`` percentiles of the finite values (bootstrap draws), or None."""
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
