"""The planning model: the trial table, the fitted threshold law with its draws, and trials
drawn from a known law. Pure: numpy, no MLflow, torch, Ray or Optuna.

The model (docs/science.md, Gu et al. arXiv:2505.18091): rare-task accuracy jumps once the rare
frequency ``f`` passes a threshold that falls with model size ``N`` (and with training tokens
``T``)::

    acc = sigmoid(k * (log f - log f_thres(N, T)))

``optimix.core.law`` fits it in two stages: the threshold of each recorded size, then a curve over
sizes whose misfit and seed noise go into every interval. A feature that does not vary in the
trials, or that is tied to the others (iso-FLOP trials tie tokens to size), is left out: the
answer then follows the trials' own design for it (the tokens a size was trained on). The
queries over the fit are in ``optimix.plan.plan``, the held-out checks in ``optimix.plan.validate``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimix.core.law import SAME_SIZE, Draws, Law, draw, fit_law, k_at, log_threshold, own_bin

N_BOOT = 1000
"""Joint draws of the law behind every interval."""
INTERVAL = (5.0, 95.0)
"""Percentiles of the draws: a 90% interval."""


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
    train_s: np.ndarray
    """Seconds of training (NaN where not recorded): the recorded hardware's achieved rate."""
    met: np.ndarray | None = None
    """Whether each trial met the search's outcome constraints (all True without any)."""

    def __post_init__(self) -> None:
        n = len(self.run_id)
        if self.met is None:
            object.__setattr__(self, "met", np.ones(n, dtype=bool))
        for name in _COLUMNS[1:]:
            if len(getattr(self, name)) != n:
                raise ValueError(f"TrialTable.{name}: {len(getattr(self, name))} rows, run_id has {n}")

    @classmethod
    def from_columns(cls, *, run_id: Iterable[str], rare_freq: Iterable[float],
                     params: Iterable[float], tokens: Iterable[float], train_flops: Iterable[float],
                     acc: Iterable[float], status: Iterable[str] | None = None,
                     train_s: Iterable[float] | None = None, met: Iterable[bool] | None = None) -> TrialTable:
        run_id = np.asarray(list(run_id), dtype=object)
        status = np.asarray(list(status) if status is not None else ["ok"] * len(run_id), dtype=object)
        train_s = list(train_s) if train_s is not None else [math.nan] * len(run_id)
        as_float = {name: np.asarray(list(values), dtype=float) for name, values in
                    (("rare_freq", rare_freq), ("params", params), ("tokens", tokens),
                     ("train_flops", train_flops), ("acc", acc), ("train_s", train_s))}
        met = None if met is None else np.asarray(list(met), dtype=bool)
        return cls(run_id=run_id, status=status, met=met, **as_float)

    @classmethod
    def from_records(cls, records: Iterable[Any], metric: str, freq_key: str = "mixture.rare_freq") -> TrialTable:
        """From ``records.TrialRecord``-like objects (``run_id``, ``status``, ``params``, ``metrics``).

        ``rare_freq`` is the ``freq_key`` param (the primary rare task's ``mixture.rare_freq``,
        or one of several rare tasks' ``mixture.rare.NAME``), ``params``, ``tokens`` and
        ``train_flops`` the metrics of those names, ``acc`` the metric ``metric``; a missing
        value is NaN (failed trials have no accuracy). ``met``: the ``constraints_met`` tag.
        """
        rows = list(records)

        def num(value: Any) -> float:
            try:
                return float(value)
            except (TypeError, ValueError):
                return math.nan

        return cls.from_columns(
            run_id=[r.run_id for r in rows],
            rare_freq=[num(r.params.get(freq_key)) for r in rows],
            params=[num(r.metrics.get("params")) for r in rows],
            tokens=[num(r.metrics.get("tokens")) for r in rows],
            train_flops=[num(r.metrics.get("train_flops")) for r in rows],
            acc=[num(r.metrics.get(metric)) for r in rows],
            status=[r.status for r in rows],
            train_s=[num(r.metrics.get("train_s")) for r in rows],
            met=[getattr(r, "constraints_met", None) is not False for r in rows],
        )

    def seeds_of(self, row: int) -> np.ndarray:
        """The usable rows of ``row``'s config (its frequency, size and tokens): its seeds."""
        rows = self.usable_rows()
        same = ((np.abs(np.log(self.rare_freq[rows] / self.rare_freq[row])) < 1e-6)
                & (self.params[rows] == self.params[row]) & (self.tokens[rows] == self.tokens[row]))
        return rows[same]

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


_COLUMNS = ("run_id", "rare_freq", "params", "tokens", "train_flops", "acc", "status", "train_s", "met")


# ---------------------------------------------------------------------------------------------
# The fit


@dataclass
class Fit:
    """The fitted law (``optimix.core.law``), its joint draws, and the trials' design."""

    law: Law
    draws: Draws
    used: tuple[bool, bool]
    """Whether log N and log T are in the model."""
    flops_per_token: tuple[float, float]
    """(a, b): log(train_flops / tokens) = a + b log N, fitted on the trials."""
    size_fpt: tuple[np.ndarray, np.ndarray]
    """(log size, log FLOPs per token) of each recorded size: exact where a size was recorded."""
    design_tokens: tuple[float, float]
    """(a, b): log T = a + b log N over the trials (used where T is not in the model)."""
    ranges: dict[str, tuple[float, float]]
    sizes: np.ndarray
    freqs: np.ndarray
    token_grid: np.ndarray
    n: int
    resolution: float
    """The recorded accuracies' step (1 / the answers an evaluation scores), estimated."""
    notes: list[str] = field(default_factory=list)

    # -- predictions -----------------------------------------------------------------------

    def _logs(self, f, n, t):
        f, n, t = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (f, n, t)))
        return np.log(f).ravel(), np.log(n).ravel(), np.log(t).ravel(), f.shape

    def logit(self, f, n, t) -> np.ndarray:
        lf, lx, lt, shape = self._logs(f, n, t)
        return (k_at(self.law.stage1, lx) * (lf - log_threshold(self.law, lx, lt))).reshape(shape)

    def predict(self, f, n, t) -> np.ndarray:
        """The expected accuracy (the mean over seeds) at the estimate."""
        return _sigmoid(self.logit(f, n, t))

    def logit_draws(self, f, n, t, *, seeds: int = 0) -> np.ndarray:
        """(M, points) draws of the expected accuracy on the logit scale (the law's uncertainty
        and misfit); ``seeds`` > 0: of the mean of that many trained trials (seed noise added)."""
        lf, lx, lt, _ = self._logs(f, n, t)
        d = self.draws
        z = k_at(self.law.stage1, lx, d) * (lf[None, :] - log_threshold(self.law, lx, lt, d)) + d.cell[:, None]
        return z + d.seed[:, None] / math.sqrt(seeds) if seeds else z

    def predict_draws(self, f, n, t, *, seeds: int = 0) -> np.ndarray:
        """(M, points) draws of the expected accuracy; ``seeds`` > 0: of what the mean of that
        many trained trials measures (seed noise, and the evaluation's finite answers: a binomial
        draw at the recorded resolution). ``seeds=1``: one trial. NaN where the law has no draws
        (a size whose threshold no trial places, and no curve over sizes)."""
        p = _sigmoid(self.logit_draws(f, n, t, seeds=seeds))
        if not seeds:
            return p
        answers = round(1 / self.resolution) * seeds
        measured = np.random.default_rng(len(p)).binomial(answers, np.nan_to_num(p)) / answers
        return np.where(np.isnan(p), np.nan, measured)

    def fpt(self, n) -> np.ndarray:
        """FLOPs per token at size ``n``: the recorded value at a recorded size, else the line."""
        a, b = self.flops_per_token
        ln = np.log(np.asarray(n, dtype=float))
        out = a + b * ln
        sizes, values = self.size_fpt
        if len(sizes):
            near = np.abs(np.asarray(ln)[..., None] - sizes)
            out = np.where(near.min(-1) <= SAME_SIZE, values[near.argmin(-1)], out)
        return np.exp(out)

    def tokens_for(self, n) -> np.ndarray:
        """The tokens the trials' design gives a model of size ``n``."""
        a, b = self.design_tokens
        return np.exp(a + b * np.log(np.asarray(n, dtype=float)))

    def tokens_to_reach(self, target: float, f: np.ndarray, n: np.ndarray) -> np.ndarray | None:
        """Tokens at which (f, n) is predicted to reach ``target``; None unless tokens help."""
        s1 = self.law.stage1
        if not self.used[1] or s1.bt <= 0:
            return None
        lx = np.log(np.asarray(n, dtype=float))
        theta0 = log_threshold(self.law, lx, np.full(lx.shape, s1.mean_lt)).reshape(lx.shape)
        k = k_at(s1, lx).reshape(lx.shape)
        need = math.log(target / (1 - target)) - k * (np.log(f) - theta0)
        return np.exp(np.minimum(s1.mean_lt + need / s1.bt, 700.0))

    # -- the threshold law ----------------------------------------------------------------

    def threshold(self, n: float, t: float) -> float:
        """The 50% rare frequency at size ``n`` and tokens ``t``."""
        return float(np.exp(log_threshold(self.law, math.log(n), math.log(t)))[0])

    def threshold_draws(self, n: float, t: float) -> np.ndarray:
        """Draws of where the expected accuracy crosses 0.5: the law's, shifted by the configs'
        misfit (``cell / k`` in log f), as a recorded size's seeds' mean would show it."""
        d, lx = self.draws, math.log(n)
        return np.exp(log_threshold(self.law, lx, math.log(t), d)[:, 0] - d.cell / k_at(self.law.stage1, lx, d)[:, 0])

    def threshold_undetermined(self, n: float, value: float) -> str | None:
        """Why the trials cannot place the threshold at size ``n`` (``value``: the fit's), or None:
        it rests on a size with no trial near its threshold and no curve over sizes stands in
        (the ridge placed it; its draws are NaN), or it lies outside (0, 1]."""
        law, lx = self.law, math.log(n)
        b = int(own_bin(law, lx)[0])
        if law.curve is None and not np.isfinite(law.stage1.theta_se[max(b, 0)]):
            size = math.exp(law.stage1.x[max(b, 0)])
            return (f"no trial at {size:,.0f} params sits near its threshold and no curve over sizes "
                    "stands in: the data cannot place it")
        if not 0 < value <= 1:
            return f"the fit puts it at {value:.3g}, outside (0, 1]: no share of the mixture reaches it"
        return None

    def size_distance(self, n: float) -> float:
        """How far ``n`` lies outside the recorded sizes, as a factor (1: inside)."""
        lo, hi = self.ranges["params"]
        return max(lo / n, n / hi, 1.0)

    def quality(self) -> dict[str, Any]:
        """Goodness of fit: of the power law, and of the curve the answers use."""
        lw, s1 = self.law, self.law.stage1
        doc: dict[str, Any] = {"sizes": len(s1.theta), "seed_sd_logit": s1.seed_sd, "config_sd_logit": s1.cell_sd,
                               "seed_noise": "measured" if s1.seed_measured else "unmeasured",
                               "threshold_se": [float(v) for v in s1.theta_se]}
        for key, curve in (("power_law", lw.line), ("curve", lw.curve)):
            if curve is None:
                doc[key] = None
                continue
            p = curve.p_value()
            doc[key] = {"kind": "power law (straight in log N)" if curve.degree == 1
                        else "quadratic in log N (a line past the recorded sizes)",
                        "chi2": curve.q, "df": curve.df, "p_value": p,
                        "misfit_sd": curve.tau, "misfit_assumed": curve.assumed,
                        "fits_badly": bool(p is not None and p < BAD_FIT)}
        return doc

    def power_law(self) -> dict[str, Any] | None:
        """``f_thres = c N^-s T^-u`` from the straight line over sizes, with 90% intervals."""
        line = self.law.line
        s1 = self.law.stage1
        if line is None:
            return None
        a, b = line.coef
        rng = np.random.default_rng(0)
        scale = np.sqrt(line.df / rng.chisquare(line.df, 2000)) if line.df >= 1 else np.ones(2000)
        slopes = b + scale * math.sqrt(line.cov[1, 1]) * rng.standard_normal(2000)
        u = s1.bt / s1.k
        return {"c": math.exp(a - b * line.x0 + u * s1.mean_lt), "s": float(-b),
                "s_interval": None if line.df < 1 else interval(-slopes),
                "u": u if self.used[1] else None,
                "u_interval": [(s1.bt - 1.645 * s1.bt_se) / s1.k, (s1.bt + 1.645 * s1.bt_se) / s1.k]
                if self.used[1] else None}

    def summary(self, n: float, t: float) -> dict[str, Any]:
        """The law, its fit, and the threshold at (n, t) with its 90% interval."""
        doc: dict[str, Any] = {
            "model": "acc = sigmoid(k * (log f - log f_thres(N, T))); log f_thres per recorded size, "
                     "a curve in log N between and beyond them",
            "trials": self.n, "draws": len(self.draws.seed), "uses_params": self.used[0],
            "uses_tokens": self.used[1], "k": self.law.stage1.k,
            "power_law": self.power_law(), "quality": self.quality(),
            "at": {"params": n, "tokens": t}, "threshold_freq": self.threshold(n, t),
            "threshold_interval": interval(self.threshold_draws(n, t)),
        }
        why = self.threshold_undetermined(n, doc["threshold_freq"])
        if why:
            doc.update(threshold_freq=None, threshold_interval=None, threshold_undetermined=why)
        if self.size_distance(n) > 1:
            doc["extrapolation"] = f"{n:,.0f} params is {self.size_distance(n):.2g}x outside the recorded sizes"
        return doc


BAD_FIT = 0.01
"""A curve whose misfit is this unlikely (chi-square p-value) fits badly."""


def fit(table: TrialTable, *, n_boot: int = N_BOOT, seed: int = 0) -> Fit:
    """Fit the law to the table's usable trials; ``PlanError`` when it cannot.

    ``n_boot`` joint draws (seeded) give every interval.
    """
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
    fitted = fit_law(logs[:, 0], logs[:, 1], logs[:, 2] if 2 in keep else None,
                         np.clip(ok.acc, 0.0, 1.0), use_size=1 in keep)
    if fitted.stage1.k <= 0:
        raise PlanError("accuracy does not rise with mixture.rare_freq in these trials: no threshold to fit")
    notes += fitted.notes
    log_fpt = np.log(ok.train_flops / ok.tokens)
    log_n = logs[:, 1]
    rounded = np.round(log_n / SAME_SIZE)
    distinct = np.unique(rounded)
    size_fpt = ((np.array([np.median(log_n[rounded == r]) for r in distinct]),
                 np.array([np.median(log_fpt[rounded == r]) for r in distinct]))
                if len(distinct) <= 64 else (np.array([]), np.array([])))
    return Fit(
        law=fitted, draws=draw(fitted, n_boot, np.random.default_rng(seed)),
        used=(1 in keep, 2 in keep), flops_per_token=_line(log_n, log_fpt, slope_if_flat=1.0),
        size_fpt=size_fpt, design_tokens=_line(log_n, logs[:, 2], slope_if_flat=0.0),
        ranges={name: (float(v.min()), float(v.max())) for name, v in
                (("rare_freq", ok.rare_freq), ("params", ok.params), ("tokens", ok.tokens),
                 ("train_flops", ok.train_flops), ("acc", ok.acc))},
        sizes=_grid(ok.params, 33), freqs=_grid(ok.rare_freq, 49), token_grid=_grid(ok.tokens, 17),
        n=len(ok), resolution=_resolution(ok.acc), notes=notes,
    )


def _resolution(acc: np.ndarray) -> float:
    """The smallest step between distinct recorded accuracies, within [1e-4, 0.05]."""
    steps = np.diff(np.unique(np.round(acc, 6)))
    steps = steps[steps > 5e-7]
    return float(np.clip(steps.min(), 1e-4, 0.05)) if len(steps) else 0.05


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
