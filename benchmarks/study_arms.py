"""The reproduction's second part: arms that separate frequency, exposures, FLOPs and crowding-out.

The primary grid (``results.csv``) trains every trial on the same tokens, so a threshold in
frequency is also one in exposures per fact, and FLOPs depend on size alone. Each arm here
changes one thing against it, through ``optimix search`` (grid sampler), and writes one CSV
under ``docs/reproduction/`` named after the arm:

- ``iso_flop``: every size at fixed training FLOPs (``train.flops``): the smallest model's and
  a middle model's FLOPs of the primary grid.
- ``exposures``: half and twice the tokens at 17K, 110K and 621K, over frequencies around
  each size's threshold: is the threshold one of frequency or of exposures per fact?
- ``no_background``: the same rare facts and exposures with the Zipf background cut to a tenth
  of its facts (500) or to one fact (nothing left to learn): crowding-out moves the threshold
  in exposures, memorisation speed does not.
- ``sixth_size``: a 1.8M-parameter model, to see whether the slope flattens.
- ``lr``: three learning rates around 3e-3 at the smallest and largest size, each at a
  frequency near its threshold.
- ``bursts_matched``: even against bursts at twice each size's threshold frequency.
- ``rule``: ``reverse`` scored on held-out inputs (``search_spaces/study_rule.yaml``).

Grids that depend on a size (frequencies around its threshold) are centred on the
thresholds of the committed primary grid, read from ``results.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
PRIMARY_SPACE = SPACES / "study_reproduction.yaml"
RULE_SPACE = SPACES / "study_rule.yaml"

ARMS = ("iso_flop", "exposures", "no_background", "sixth_size", "lr", "bursts_matched", "rule")
SMALL, MIDDLE, LARGE = 17000, 110000, 620000  # model.params targets of the primary grid
SIXTH = 1_500_000  # shape_for gives 1,797,696 parameters (d 192, 4 layers)
LRS = (0.001, 0.003, 0.01)
TOKEN_FACTORS = (0.5, 2.0)
BACKGROUND_FACTS = (500, 1)  # a tenth of the 5,000, and one fact (removed)
BURST_DISTANCE = 2.0  # bursts_matched: the frequency is this multiple of each size's threshold


@dataclass
class Search:
    """One ``optimix search``: its space, MLflow experiment and ``--set`` overrides."""

    space: Path
    experiment: str
    overrides: list[str] = field(default_factory=list)


def _sizes(values) -> str:
    return f"model.params={{dist: choice, values: {[int(v) for v in values]}}}"


def _freqs(values) -> str:
    values = sorted(float(v) for v in values)
    return (f"mixture.rare_freq={{dist: loguniform, low: {values[0] / 2:g}, "
            f"high: {min(1.0, values[-1] * 2):g}, grid: {values}}}")


def _seeds(values) -> str:
    return f"seed={{dist: choice, values: {[int(v) for v in values]}}}"


def around(centre: float, below: int, above: int) -> list[float]:
    """Factor-2 frequencies from ``centre / 2**below`` to ``centre * 2**above``."""
    return [round(centre * 2.0 ** k, 6) for k in range(-below, above + 1)]


def on_grid(value: float, grid: list[float]) -> float:
    """The grid frequency nearest ``value`` in log."""
    return min(grid, key=lambda g: abs(math.log(g / value)))


def primary_facts(rows: list[dict], per_size: list[dict]) -> dict:
    """What the arms are centred on: per target size, the primary grid's interpolated
    threshold (seed mean), its grid threshold, and its training FLOPs (``per_size``: the
    primary rows' ``thresholds``)."""
    by_target = {r["params"]: r["target_params"] for r in rows}
    out = {}
    for t in per_size:
        out[by_target[t["params"]]] = {"threshold": t["threshold_interp"], "grid": t["threshold_grid"],
                                       "train_flops": t["train_flops"], "params": t["params"]}
    return out


def arm_searches(arm: str, primary: dict, quick: bool = False) -> list[Search]:
    """The searches that make up ``arm`` (``quick``: the smallest sizes, one seed, few points)."""
    grid = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256]
    centre = {size: on_grid(p["threshold"], grid) for size, p in primary.items()}
    seeds0 = [_seeds([0])]
    if arm == "iso_flop":
        budgets = {"small": primary[SMALL]["train_flops"], "middle": primary[MIDDLE]["train_flops"]}
        sizes = sorted(primary)
        plans = {"small": ([0.008, 0.016, 0.032, 0.064, 0.128, 0.256], [0, 1]),
                 "middle": ([0.002, 0.004, 0.008, 0.016, 0.032, 0.064], [0])}
        if quick:
            sizes, budgets = [SMALL, 45000, MIDDLE], {"small": budgets["small"]}
            plans = {"small": ([0.016, 0.064, 0.256], [0])}
        return [Search(PRIMARY_SPACE, f"study_iso_flop_{name}",
                       ["train.tokens=null", f"train.flops={budgets[name]:.6g}", _sizes(sizes),
                        _freqs(plans[name][0]), _seeds(plans[name][1])])
                for name in budgets]
    if arm == "exposures":
        sizes = [SMALL] if quick else [SMALL, MIDDLE, LARGE]
        tokens = [int(896000 * k) for k in TOKEN_FACTORS]
        return [Search(PRIMARY_SPACE, f"study_exposures_{size}",
                       [_sizes([size]), f"train.tokens={{dist: choice, values: {tokens}}}",
                        _freqs(around(centre[size], 1 if quick else 2, 1 if quick else 2)), *seeds0])
                for size in sizes]
    if arm == "no_background":
        sizes = [SMALL] if quick else [SMALL, MIDDLE, LARGE]
        facts = list(BACKGROUND_FACTS)
        return [Search(PRIMARY_SPACE, f"study_no_background_{size}",
                       [_sizes([size]), f"tasks.background.n_facts={{dist: choice, values: {facts}}}",
                        _freqs(around(centre[size], 2 if quick else 3, 0 if quick else 1)), *seeds0])
                for size in sizes]
    if arm == "sixth_size":
        size, freqs, seeds = SIXTH, [0.001, 0.002, 0.004, 0.008], [0, 1]
        if quick:  # no 1.8M model in a CI-sized check: the shape rule's next step up, 235K
            size, freqs, seeds = 235000, [0.004, 0.008], [0]
        return [Search(PRIMARY_SPACE, "study_sixth_size", [_sizes([size]), _freqs(freqs), _seeds(seeds)])]
    if arm == "lr":
        sizes = [SMALL] if quick else [SMALL, LARGE]
        return [Search(PRIMARY_SPACE, f"study_lr_{size}",
                       [_sizes([size]), _freqs([centre[size]]),
                        f"train.lr={{dist: choice, values: {list(LRS)}}}", _seeds([0] if quick else [0, 1])])
                for size in sizes]
    if arm == "bursts_matched":
        sizes = [SMALL] if quick else sorted(primary)
        matched = {size: float(f"{BURST_DISTANCE * primary[size]['threshold']:.2g}") for size in sizes}
        return [Search(PRIMARY_SPACE, f"study_bursts_matched_{size}",
                       [_sizes([size]), f"mixture.rare_freq={matched[size]}",
                        "mixture.delivery={dist: choice, values: [even, bursts]}",
                        _seeds([0] if quick else [0, 1])])
                for size in sizes]
    if arm == "rule":
        overrides = []
        if quick:
            overrides = [_sizes([SMALL, 45000]), _freqs([0.064, 0.256]), _seeds([0])]
        return [Search(RULE_SPACE, "study_rule", overrides)]
    raise ValueError(f"unknown arm {arm!r} (arms: {', '.join(ARMS)})")
