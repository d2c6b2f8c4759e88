"""Replicates: one config trained at several seeds, and what its seeds say together.

Rare skills are learned in sharp, seed-dependent jumps, so one trial's accuracy is a draw.
A search retrains the configs on its frontier at new seeds (``search.replicates``; the
searcher asks ``next_replicate`` before it explores) and reports each config by the mean of
its seeds, with their spread, their number and a 90% interval (``Summary``). Trials of one
config share its ``config_id``: the resolved config without its seed.

Seed noise where a config has one seed, or few: a config's own spread is shrunk toward the
search's pooled spread over its replicated configs (``pooled_sd``); where no config was
replicated the spread is unmeasured and a conservative prior stands in (``PRIOR_SD`` for
accuracies, a coin flip's spread between about 0.2 and 0.8). Pure: no Ray, MLflow or torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from optimix.core.config import ReplicatesConfig, SearchConfig, TrialConfig
from optimix.core.space import Space

SEED_KEY = "seed"
PLANNED = ("train_flops", "tokens", "params", "non_embedding_params")
"""Metrics a trial's plan fixes (``budget.Plan.known_metrics``): the same at every seed."""
PRIOR_SD = 0.3
"""Seed spread assumed for an accuracy where none was measured (stated as such)."""
PRIOR_DF = 1.0
"""How many degrees of freedom the pooled (or prior) spread counts for against a config's own."""
MIN_SD = 0.05
"""The least seed spread an accuracy's interval assumes: seeds that all agreed (all 0, all 1)
in the few configs replicated so far would otherwise give a zero-width interval."""
SPLIT_GAP = 0.25
"""Seeds of one config whose accuracies part by a gap this wide: some learned it, some did not."""
_STRIDE = 1_000_003
TUNE_SEED = "optimix_seed"
"""In a Tune trial's config (a point): the seed of a replicate."""


def settings(search: SearchConfig) -> ReplicatesConfig | None:
    """The replicate settings in force: ``auto`` is on where the search has a FLOPs budget or
    more than 6 trials (a handful of trials has no room for them)."""
    value = search.replicates
    if value == "off":
        return None
    if value == "auto":
        return ReplicatesConfig() if search.budget_flops is not None or search.trials > 6 else None
    return value


def seed_for(base: int, j: int) -> int:
    """The seed of a config's ``j``-th replicate (``j = 0``: the search's own seed)."""
    return (base + _STRIDE * j) % 2**32


def tune_point(point: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
    """A point as a Tune trial's config: a replicate's carries its seed."""
    return dict(point) if seed is None else {**point, TUNE_SEED: int(seed)}


def resolve(space: Space, point: Mapping[str, Any]) -> TrialConfig:
    """The config a Tune trial's point (``tune_point``) trains."""
    seed = point.get(TUNE_SEED)
    config = space.resolve({k: v for k, v in point.items() if k != TUNE_SEED})
    return config if seed is None else config.model_copy(update={"seed": int(seed)})


def overrides(point: Mapping[str, Any]) -> list[str]:
    """``KEY=VALUE`` for ``optimix train --set``: the searched values of a point, but its seed
    (where the space searches it), which the retrain line gives as ``--seed``."""
    return [f"{k}={v}" for k, v in point.items() if k != SEED_KEY]


def config_id(params: Mapping[str, Any]) -> str:
    """What trials of one config share: the digest of the resolved config without its seed
    (``LedgerEntry.params``). Replicates of a config differ in their seed only."""
    doc = {k: v for k, v in params.items() if k != SEED_KEY}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bounded(metric: str) -> bool:
    """A metric known to lie in [0, 1] (an accuracy): intervals are clipped to it, a seed
    split is looked for, and the prior spread applies."""
    return metric.startswith("acc/")


@dataclass(frozen=True)
class Summary:
    """One metric over a config's seeds."""

    n: int
    mean: float
    sd: float | None
    """The seeds' own spread (None for one seed)."""
    interval: tuple[float, float] | None
    """90% interval of the config's mean over seeds (None where no spread is known)."""
    noise: str
    """Where the spread came from: ``measured`` (this config's seeds, with the search's
    pooled spread), ``pooled`` (the search's replicated configs only) or ``prior`` (none measured)."""
    learned: tuple[int, float] | None = None
    """Where the seeds split in two (a gap of ``SPLIT_GAP`` or more): (how many are above, the
    lowest value above the gap). None where they do not."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "mean": self.mean, "sd": self.sd,
                               "interval": list(self.interval) if self.interval else None, "noise": self.noise}
        if self.learned is not None:
            out["learned"] = {"seeds": self.learned[0], "of": self.n, "at_least": self.learned[1]}
        return out

    def text(self, digits: int = 3) -> str:
        """``mean ± sd (n)``, with the split where the seeds split."""
        out = f"{self.mean:.{digits}g} ± {self.sd:.2g} ({self.n})" if self.sd is not None \
            else f"{self.mean:.{digits}g} (1)"
        if self.learned is not None:
            out += f", {self.learned[0]} of {self.n} seeds learned it"
        return out


def summarize(values: Sequence[float], metric: str, pooled: float | None, level: float = 0.9) -> Summary:
    """``values`` of ``metric`` at a config's seeds, with ``pooled``: the search's seed spread
    (``pooled_sd``; None where it has no replicated config)."""
    vals = [float(v) for v in values]
    n = len(vals)
    mean = sum(vals) / n
    own_ss = sum((v - mean) ** 2 for v in vals)
    sd = math.sqrt(own_ss / (n - 1)) if n > 1 else None
    prior = pooled if pooled is not None else (PRIOR_SD if bounded(metric) else None)
    if prior is not None and bounded(metric):
        prior = max(prior, MIN_SD)  # a few seeds that agree do not show a config has no noise
    noise = "pooled" if pooled is not None else "prior"
    if n > 1:
        noise = "measured"
    if prior is None and sd is None:
        return Summary(n, mean, None, None, "unmeasured", None)
    df = (n - 1) + (PRIOR_DF if prior is not None else 0.0)
    var = (own_ss + PRIOR_DF * prior ** 2) / df if prior is not None else own_ss / df
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(var / n)
    lo, hi = mean - half, mean + half
    if bounded(metric):
        lo, hi = max(0.0, lo), min(1.0, hi)
    return Summary(n, mean, sd, (lo, hi), noise, split(vals) if bounded(metric) else None)


def split(values: Sequence[float]) -> tuple[int, float] | None:
    """(seeds above, lowest value above) where sorted values part by ``SPLIT_GAP`` or more."""
    if len(values) < 2:
        return None
    ordered = sorted(values)
    gaps = [(b - a, i) for i, (a, b) in enumerate(zip(ordered[:-1], ordered[1:], strict=True))]
    gap, at = max(gaps)
    if gap < SPLIT_GAP:
        return None
    return len(ordered) - at - 1, ordered[at + 1]


def pooled_sd(groups: Iterable[Sequence[float]]) -> float | None:
    """The seed spread pooled over configs with two or more seeds; None if there are none."""
    ss, df = 0.0, 0
    for vals in groups:
        if len(vals) > 1:
            mean = sum(vals) / len(vals)
            ss += sum((v - mean) ** 2 for v in vals)
            df += len(vals) - 1
    return math.sqrt(ss / df) if df else None


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Hill's approximation; exact enough for intervals at df >= 1)."""
    z = NormalDist().inv_cdf(p)
    if df > 1e6:
        return z
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


@dataclass(frozen=True)
class Group:
    """A config's trials so far, as ``next_replicate`` weighs them."""

    config: str
    point: Mapping[str, Any]
    seeds: frozenset[int]
    """Seeds trained or training (any outcome): a (config, seed) is never trained twice."""
    quality: float
    """The mean of its quality objective, in the direction where larger is better."""
    cost: float
    replicate_flops: float = 0.0
    """What its trials after the first spent."""


def next_replicate(groups: Sequence[Group], on_front: set[str], settings: ReplicatesConfig, base_seed: int,
                   fits: Any) -> tuple[Group, int] | None:
    """The frontier config to retrain next and its seed, or None: a config on the frontier
    (``on_front``: its mean final result or one of its mean curve points) with fewer than ``settings.seeds`` seeds, the fewest seeds first (each
    frontier config gets a second seed before any a third), then the best quality (the top
    row is the one a user trusts most), whose cost ``fits(cost)`` (the share and the budget)."""
    due = [g for g in groups if g.config in on_front and len(g.seeds) < settings.seeds]
    for group in sorted(due, key=lambda g: (len(g.seeds), -g.quality, g.cost)):
        if not fits(group.cost):
            continue
        j = 1
        while seed_for(base_seed, j) in group.seeds:
            j += 1
        return group, seed_for(base_seed, j)
    return None
