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
- ``interference``: the 5,000-fact background with each sequence's value drawn afresh
  (``values: fresh``: the same share of training, all gradient, nothing to store), at the
  primary sizes around each threshold: against ``no_background``'s 500 facts it tells
  capacity (storing the background) from interference (its gradient) as the cause of the
  5,000-fact background's higher threshold.
- ``sixth_size``: a 1.8M-parameter model, to see whether the slope flattens.
- ``lr``: three learning rates around 3e-3 at the smallest and largest size, each at a
  frequency near its threshold.
- ``bursts_matched``: even against bursts at twice each size's threshold frequency.
- ``rule``: ``reverse`` scored on held-out inputs (``search_spaces/study_rule.yaml``).
- ``longer``: 4x the primary tokens at 17K, 45K and 110K, 16x at 17K and 45K, each at its tuned
  learning rate: does the threshold stay one of exposures with longer training, or turn into
  one of frequency (Gu et al.), and does the size slope move?

Grids that depend on a size (frequencies around its threshold) are centred on the
thresholds of the committed primary grid, read from ``results.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
PRIMARY_SPACE = SPACES / "study_reproduction.yaml"
RULE_SPACE = SPACES / "study_rule.yaml"

ARMS = ("iso_flop", "exposures", "no_background", "sixth_size", "lr", "bursts_matched", "rule",
        "lr_sweep", "iso_flop_tuned", "interference", "longer")
SMALL, MIDDLE, LARGE = 17000, 110000, 620000  # model.params targets of the primary grid
SIXTH = 1_500_000  # shape_for gives 1,797,696 parameters (d 192, 4 layers)
LRS = (0.001, 0.003, 0.01)
TOKEN_FACTORS = (0.5, 2.0)
BACKGROUND_FACTS = (500, 1)  # a tenth of the 5,000, and one fact (removed)
BURST_DISTANCE = 2.0  # bursts_matched: the frequency is this multiple of each size's threshold

# Part three: the equal-FLOPs comparison with a learning rate tuned per size.
TUNED_SIZES = (45000, MIDDLE, LARGE)  # the small model, and two to grow it to
LR_BRACKETS = {45000: (0.001, 0.003, 0.01, 0.03), MIDDLE: (0.001, 0.003, 0.01), LARGE: (0.0003, 0.001, 0.003)}
"""lr_sweep: rates a factor ~3 apart per size, centred where part two's lr arm pointed (17K
wanted more than 3e-3, 621K less). 45K's first sweep (3e-3 to 3e-2) put its best at the
lower edge, so it reaches down to 1e-3."""
QUICK_RATES = {45000: (0.003, 0.01), MIDDLE: (0.001, 0.003)}  # --quick: two rates, the two smaller sizes
SEEDS3 = (0, 1, 2)
BASE_FREQ = 0.002  # iso_flop_tuned: the small model's fixed frequency, below its threshold
BOOSTS = (1, 4, 16)  # iso_flop_tuned: the small model at BASE_FREQ times these
TOKENS_PER_PARAM_TOP = 20.0  # the top budget gives the largest size this many tokens per parameter
CAPPED = {"b3": "b2"}
"""iso_flop_tuned: at b3 only the largest size trains; the smaller sizes stand in with their b2
trials, i.e. they spend at most the budget (at b3's FLOPs the 45K model would train 3,900 tokens
per parameter, 28 core-hours on a CPU). A capped option trains no longer than it could, so the
comparison favours growing: a boost that still wins, wins at b3 too."""

# longer: each size at its tuned rate. 45K and 110K: lr_sweep's 3e-3, the primary grid's rate, so
# the primary trials are their 1x baseline. 17K: part two's lr arm (1e-2 above 3e-3 on both
# seeds, 0.56 against 0.34), so its 1x baseline trains in the arm at that rate.
LONGER_RATES = {SMALL: 0.01, 45000: 0.003, MIDDLE: 0.003}
LONGER_FACTORS = (4, 16)  # x the primary tokens; 16x at LONGER16_SIZES and the first seed only
LONGER16_SIZES = (SMALL, 45000)
PRIMARY_TOKENS, PRIMARY_LR = 896000, 0.003  # the primary grid's tokens and peak learning rate


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


def iso_tuned_budgets(primary: dict) -> dict[str, float]:
    """iso_flop_tuned's training budgets: the middle and the largest primary size's FLOPs, and
    the FLOPs that give the largest size ``TOKENS_PER_PARAM_TOP`` tokens per parameter (the
    primary grid's FLOPs per token times those tokens)."""
    large = primary[LARGE]
    per_token = large["train_flops"] / 896000
    return {"b1": primary[MIDDLE]["train_flops"], "b2": large["train_flops"],
            "b3": per_token * TOKENS_PER_PARAM_TOP * large["params"]}


def arm_searches(arm: str, primary: dict, quick: bool = False, tuned_lr: dict[int, float] | None = None,
                 budgets: tuple[str, ...] = ("b1", "b2"), seeds: list[int] | None = None) -> list[Search]:
    """The searches that make up ``arm`` (``quick``: the smallest sizes, one seed, few points).

    ``tuned_lr`` (iso_flop_tuned): each size's learning rate from the lr_sweep arm;
    ``budgets``: which of ``iso_tuned_budgets`` it trains at; ``seeds`` (exposures,
    no_background, interference): the seeds to run, seed 0 by default."""
    grid = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256]
    centre = {size: on_grid(p["threshold"], grid) for size, p in primary.items()}
    seeds0 = [_seeds(seeds or [0])]
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
    if arm == "interference":
        sizes = [SMALL] if quick else [SMALL, MIDDLE, LARGE]
        return [Search(PRIMARY_SPACE, f"study_interference_{size}",
                       [_sizes([size]), "tasks.background.values=fresh",
                        _freqs(around(centre[size], 1 if quick else 2, 1 if quick else 2)), *seeds0])
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
    if arm == "lr_sweep":
        sizes, seeds = (TUNED_SIZES[:2], [0]) if quick else (TUNED_SIZES, SEEDS3)
        rates = QUICK_RATES if quick else LR_BRACKETS
        return [Search(PRIMARY_SPACE, f"study_lr_sweep_{size}",
                       [_sizes([size]), f"mixture.rare_freq={centre[size]:g}",
                        f"train.lr={{dist: choice, values: {list(rates[size])}}}", _seeds(seeds)])
                for size in sizes]
    if arm == "iso_flop_tuned":
        sizes = TUNED_SIZES[:2] if quick else TUNED_SIZES
        if missing := [size for size in sizes if size not in (tuned_lr or {})]:
            raise ValueError(f"iso_flop_tuned trains each size at its tuned learning rate: no lr_sweep rows "
                             f"for {missing}; run --experiments lr_sweep first")
        all_budgets = iso_tuned_budgets(primary)
        seeds, boosts = ([0], (1, 16)) if quick else (SEEDS3, BOOSTS)
        chosen = ("b1",) if quick else budgets
        out = []
        for name in chosen:
            for size in ([LARGE] if name in CAPPED else sizes):
                freqs = [BASE_FREQ * b for b in boosts] if size == TUNED_SIZES[0] else [BASE_FREQ]
                freq = (f"mixture.rare_freq={freqs[0]:g}" if len(freqs) == 1 else _freqs(freqs))
                out.append(Search(PRIMARY_SPACE, f"study_iso_flop_tuned_{name}_{size}",
                                  ["train.tokens=null", f"train.flops={all_budgets[name]:.6g}", _sizes([size]),
                                   freq, f"train.lr={tuned_lr[size]:g}", _seeds(seeds)]))
        return out
    if arm == "longer":
        return _longer_searches(centre, quick, seeds or [0])
    if arm == "rule":
        overrides = []
        if quick:
            overrides = [_sizes([SMALL, 45000]), _freqs([0.064, 0.256]), _seeds([0])]
        return [Search(RULE_SPACE, "study_rule", overrides)]
    raise ValueError(f"unknown arm {arm!r} (arms: {', '.join(ARMS)})")


def _longer_searches(centre: dict, quick: bool, seeds: list[int]) -> list[Search]:
    """The ``longer`` arm: 4x the tokens at every size over frequencies from an eighth of its
    primary threshold (an exposures law's place at 4x) to twice it (a frequency law's), and
    16x at the two smallest sizes from a 32nd to half of it (one seed: each trial costs 16
    primary ones). A size whose tuned rate is not the primary grid's trains its 1x baseline here."""
    def tokens(*factors) -> str:
        return f"train.tokens={{dist: choice, values: {[PRIMARY_TOKENS * k for k in factors]}}}"

    def factors(lr: float) -> list[int]:  # the 1x baseline too, where the primary grid's rate is not the size's
        return [*([1] if lr != PRIMARY_LR else []), LONGER_FACTORS[0]]

    if quick:  # 45K: its rate is the primary grid's, so 4x alone is a comparison
        return [Search(PRIMARY_SPACE, "study_longer_45000",
                       [_sizes([45000]), tokens(*factors(LONGER_RATES[45000])), f"train.lr={LONGER_RATES[45000]:g}",
                        _freqs(around(centre[45000] / 2, 1, 0)), _seeds(seeds[:1])])]
    out = [Search(PRIMARY_SPACE, f"study_longer_{size}",
                  [_sizes([size]), tokens(*factors(lr)), f"train.lr={lr:g}",
                   _freqs(around(centre[size], 3, 1)), _seeds(seeds)])
           for size, lr in LONGER_RATES.items()]
    out += [Search(PRIMARY_SPACE, f"study_longer16_{size}",
                   [_sizes([size]), tokens(LONGER_FACTORS[1]), f"train.lr={LONGER_RATES[size]:g}",
                    _freqs(around(centre[size] / 8, 2, 2)), _seeds(seeds[:1])])
            for size in LONGER16_SIZES]
    return out


# ---------------------------------------------------------------------------------------------
# Analysis: one function per arm, over its rows (and the primary grid's, for a paired baseline)

CROWDING = 1.5  # no_background: a threshold in exposures that moves by more than this factor


def _threshold(rows: list[dict]) -> dict:
    """The one size's threshold in frequency and in exposures per fact (seed mean, level 0.5)."""
    from study_analysis import thresholds

    if not rows:
        return {"threshold": None, "how": "no trials", "seeds": 0, "exposures": None, "tokens": None}
    (t,) = thresholds(rows)
    per_fact = rows[0]["rare_per_item"] / rows[0]["rare_freq"]  # exposures per fact at f = 1
    value = t["threshold_interp"]
    return {"threshold": value, "how": t["how"], "seeds": t["seeds"],
            "exposures": None if value is None else value * per_fact, "tokens": rows[0]["tokens"]}


def _show(t: dict, key: str = "threshold", digits: str = ".4f") -> str:
    """A threshold as text: the value, an upper bound, or "never"."""
    value = t[key]
    return {"interpolated": lambda: format(value, digits), "below-grid": lambda: f"<= {value:{digits}}",
            "above-grid": lambda: "not reached", "no trials": lambda: "-"}[t["how"]]()


def _ok(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and all(r.get(k) == v for k, v in match.items())]


def paired_primary(primary_rows: list[dict], target: int, seeds=(0,)) -> list[dict]:
    """The primary grid's trials of one size at ``seeds``: the arms' baseline (same seeds: same
    facts, same initialisation, same sampling)."""
    return [r for r in _ok(primary_rows, target_params=target) if r["seed"] in seeds]


def _per_seed(rows: list[dict]) -> dict[int, dict]:
    """``_threshold`` of each seed's trials alone."""
    return {seed: _threshold([r for r in rows if r["seed"] == seed]) for seed in sorted({r["seed"] for r in rows})}


def _seed_spread(values: list[float]) -> dict:
    """Mean, sd and the 90% t interval of the mean of per-seed values (None where under two)."""
    from optimix.core.replicates import t_quantile

    n = len(values)
    if n < 2:
        return {"mean": values[0] if values else None, "sd": None, "n": n, "interval": None}
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = t_quantile(0.95, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "interval": [mean - half, mean + half]}


def analyze_exposures(rows: list[dict], primary_rows: list[dict]) -> list[dict]:
    """Per size: the threshold at half, equal and twice the tokens, and the exponent e in
    f_thres ~ tokens^-e: 0 for a threshold in frequency, 1 for one in exposures per fact."""
    out = []
    for target in sorted({r["target_params"] for r in rows}):
        seeds = sorted({r["seed"] for r in _ok(rows, target_params=target)})
        out.append(_exposures_entry(rows, target, seeds, *_size_runs(rows, primary_rows, target, seeds)))
    return out


def _size_runs(rows: list[dict], primary_rows: list[dict], target: int, seeds: list[int]) -> tuple[dict, dict]:
    """One size's trials by token count (``token_runs``) and each seed's threshold there."""
    runs = token_runs(rows, primary_rows, target, seeds)
    return runs, {tokens: _per_seed(rs) for tokens, rs in runs.items()}


def _exposures_entry(rows: list[dict], target: int, seeds: list[int], runs: dict, at_seed: dict) -> dict:
    """``analyze_exposures``'s entry for one size, from its trials and per-seed thresholds by
    token count."""
    per_tokens = {tokens: _threshold(rs) for tokens, rs in runs.items() if rs}
    exponent = _exponent(per_tokens)
    by_seed = {seed: _exponent({k: ts[seed] for k, ts in at_seed.items() if seed in ts}) for seed in seeds}
    spread = _seed_spread([e for e in by_seed.values() if e is not None])
    verdict = ("undetermined: fewer than two token counts put the threshold inside the grid"
               if exponent is None else _law(exponent))
    if spread["interval"] is not None:
        lo, hi = spread["interval"]
        verdict += (f"; per-seed exponents {', '.join('-' if e is None else f'{e:.2f}' for e in by_seed.values())}"
                    f", 90% interval of their mean [{lo:.2f}, {hi:.2f}]"
                    + ("" if lo <= 1 <= hi else ", which excludes 1 (a pure exposures law)"))
    return {"target_params": target, "params": _ok(rows, target_params=target)[0]["params"],
            "seeds": seeds, "by_tokens": per_tokens, "exponent": exponent,
            "exponent_by_seed": by_seed, "exponent_seed_spread": spread, "verdict": verdict}


def token_runs(rows: list[dict], primary_rows: list[dict], target: int, seeds: list[int]) -> dict[int, list[dict]]:
    """One size's trials by token count; at the primary tokens, the arm's own trials where it
    trained them (a size at another rate than the primary grid's), else the primary grid's."""
    runs = {tokens: rs for tokens in sorted({r["tokens"] for r in rows})
            if (rs := _ok(rows, target_params=target, tokens=tokens))}
    rates = {r["lr"] for rs in runs.values() for r in rs}
    if PRIMARY_TOKENS not in runs:  # the primary grid's trials only at the arm's rate
        runs[PRIMARY_TOKENS] = [r for r in paired_primary(primary_rows, target, seeds) if r.get("lr", PRIMARY_LR) in rates]
    return dict(sorted(runs.items()))


def analyze_longer(rows: list[dict], primary_rows: list[dict]) -> dict:
    """``longer``: per size, the exposures analysis over 1x, 4x (and 16x) the tokens; per token
    count, the size slope s in f_thres ~ params^-s over the sizes whose threshold is inside the
    grid, at the seed means and per seed (Gu et al. measured 1.15)."""
    sizes = []
    per_seed: dict[int, dict[int, list]] = {}  # tokens -> seed -> [(params, threshold)]
    for target in sorted({r["target_params"] for r in rows}):
        seeds = sorted({r["seed"] for r in _ok(rows, target_params=target)})
        runs, at_seed = _size_runs(rows, primary_rows, target, seeds)
        sizes.append(entry := _exposures_entry(rows, target, seeds, runs, at_seed))
        for tokens, by_seed in at_seed.items():
            for seed, t in by_seed.items():
                if t["how"] == "interpolated":
                    per_seed.setdefault(tokens, {}).setdefault(seed, []).append((entry["params"], t["threshold"]))
        entry["steps"] = [_step(a, b, at_seed[a], at_seed[b], entry["by_tokens"]) for a, b in pairwise(at_seed)]
    slopes = []
    for tokens in sorted({k for e in sizes for k in e["by_tokens"]}):
        inside = [(e["params"], e["by_tokens"][tokens]["threshold"]) for e in sizes
                  if tokens in e["by_tokens"] and e["by_tokens"][tokens]["how"] == "interpolated"]
        by_seed = {seed: _slope(points) for seed, points in per_seed.get(tokens, {}).items()
                   if len(points) == len(inside) >= 2}
        slopes.append({"tokens": tokens, "sizes": [p for p, _ in inside],
                       "slope": _slope(inside) if len(inside) >= 2 else None,
                       "slope_by_seed": by_seed, "slope_seed_spread": _seed_spread(list(by_seed.values()))})
    if len(slopes) >= 2:  # the slope's change from the first token count to the second, paired by seed
        first, second = slopes[0]["slope_by_seed"], slopes[1]["slope_by_seed"]
        change = {seed: second[seed] - first[seed] for seed in first if seed in second}
        slopes[1]["change_by_seed"], slopes[1]["change_seed_spread"] = change, _seed_spread(list(change.values()))
    return {"sizes": sizes, "slopes": slopes}


def _step(a: int, b: int, at_a: dict[int, dict], at_b: dict[int, dict], means: dict[int, dict]) -> dict:
    """The exponent from ``a`` to ``b`` tokens alone (a size's local law), at the seed means
    and per seed where both thresholds are inside the grid."""
    by_seed = {seed: _exponent({a: at_a[seed], b: at_b[seed]}) for seed in at_a if seed in at_b}
    by_seed = {seed: e for seed, e in by_seed.items() if e is not None}
    return {"from": a, "to": b, "exponent": _exponent({a: means[a], b: means[b]}), "exponent_by_seed": by_seed,
            "exponent_seed_spread": _seed_spread(list(by_seed.values()))}


def _slope(points: list[tuple[int, float]]) -> float:
    """s in f_thres ~ params^-s through (params, threshold) points."""
    return float(-np.polyfit(np.log([p for p, _ in points]), np.log([f for _, f in points]), 1)[0])


def _law(exponent: float) -> str:
    """What an exponent e in f_thres ~ tokens^-e says: within 0.25 of 1, a threshold in
    exposures; within 0.25 of 0, one in frequency; between, or beyond either, it says so."""
    if abs(exponent - 1.0) <= 0.25:
        return "exposures"
    if abs(exponent) <= 0.25:
        return "frequency"
    if exponent > 1.0:
        return f"steeper than exposures (exponent {exponent:.2f})"
    if exponent < 0.0:
        return f"a threshold that rises with tokens (exponent {exponent:.2f})"
    return f"between the two (exponent {exponent:.2f})"


def _exponent(per_tokens: dict[int, dict]) -> float | None:
    """e in f_thres ~ tokens^-e over the token counts whose threshold is inside the grid."""
    inside = [(k, t["threshold"]) for k, t in per_tokens.items() if t["how"] == "interpolated"]
    if len(inside) < 2:
        return None
    return float(-np.polyfit(np.log([k for k, _ in inside]), np.log([v for _, v in inside]), 1)[0])


def analyze_no_background(rows: list[dict], primary_rows: list[dict]) -> list[dict]:
    """Per size: the threshold in exposures per fact with the 5,000-fact background, a tenth of
    it and one fact; ``moved``: the ratio 5,000-fact / variant beyond ``CROWDING`` either way."""
    out = []
    for target in sorted({r["target_params"] for r in rows}):
        seeds = sorted({r["seed"] for r in _ok(rows, target_params=target)})
        primary = paired_primary(primary_rows, target, seeds)
        base, base_by_seed = _threshold(primary), _per_seed(primary)
        variants = {}
        for facts in sorted({r["background_facts"] for r in rows}, reverse=True):
            sub = _ok(rows, target_params=target, background_facts=facts)
            t = _threshold(sub)
            t["seeds"] = sorted({r["seed"] for r in sub})
            # the 5,000-fact threshold over the seeds this variant has (its ratio pairs like with like)
            base = _threshold(paired_primary(primary_rows, target, t["seeds"]))
            both = base["how"] == t["how"] == "interpolated"
            t["ratio"] = base["exposures"] / t["exposures"] if both else None
            by_seed = _per_seed(sub)
            # never reached on any seed: the threshold lies beyond the most exposures tried
            t["base_exposures"], t["top_exposures"] = base["exposures"], max((r["rare_per_item"] for r in sub), default=None)
            t["above_grid_every_seed"] = bool(sub) and all(v["how"] == "above-grid" for v in by_seed.values())
            t["moved"] = None if t["ratio"] is None else not (1 / CROWDING <= t["ratio"] <= CROWDING)
            # seed by seed: the ratio of the 5,000-fact threshold to this one (same seed), in log
            ratios = [base_by_seed[seed]["exposures"] / v["exposures"] for seed, v in by_seed.items()
                      if seed in base_by_seed and base_by_seed[seed]["how"] == v["how"] == "interpolated"]
            spread = _seed_spread([math.log(r) for r in ratios])
            t["ratio_by_seed"] = ratios
            t["ratio_interval"] = (None if spread["interval"] is None
                                   else [math.exp(spread["interval"][0]), math.exp(spread["interval"][1])])
            variants[facts] = t
        out.append({"target_params": target, "params": _ok(rows, target_params=target)[0]["params"],
                    "seeds": seeds, "background_5000": _threshold(primary), "by_background_facts": variants})
    return out


def capacity_or_interference(cut: list[dict], fresh: list[dict]) -> list[dict]:
    """Per size in both arms (``analyze_no_background`` of each): the 5,000-fact threshold in
    exposures over the 500-fact one and over the fresh-valued 5,000-fact one. The fresh
    background keeps the share and the gradient and removes what can be stored: where its
    threshold falls (ratio's 90% interval above 1), storing the background (capacity) raised
    it; where it rises (below 1), the gradient alone does (interference); else undetermined.
    Where no seed reaches the level inside the grid, the ratio is below the 5,000-fact
    threshold over the most exposures tried (``ratio_bound``): interference if that is below 1."""
    by_size = {e["target_params"]: e for e in cut}
    out = []
    for entry in fresh:
        size = entry["target_params"]
        t = next(iter(entry["by_background_facts"].values()), None)
        t500 = by_size.get(size, {}).get("by_background_facts", {}).get(500)
        interval = t["ratio_interval"] if t else None
        bound = (t["base_exposures"] / t["top_exposures"] if t and t["above_grid_every_seed"] and t["base_exposures"]
                 else None)
        if bound is not None and bound < 1:
            verdict = (f"interference: on every seed the fresh background's threshold lies above the grid "
                       f"(ratio below {bound:.2f})")
        elif t is None or t["ratio"] is None:
            verdict = "undetermined: the fresh background's threshold is not inside the grid"
        elif interval is None:
            verdict = f"undetermined: {len(t['seeds'])} seed(s), no interval"
        elif interval[0] > 1:
            verdict = "capacity: with nothing to store, the rare facts need fewer exposures"
        elif interval[1] < 1:
            verdict = "interference: a background that is all gradient raises the threshold"
        else:
            verdict = "undetermined: the ratio's interval spans 1"
        out.append({"target_params": size, "params": entry["params"], "seeds": t["seeds"] if t else [],
                    "ratio_500": t500["ratio"] if t500 else None, "ratio_fresh": t["ratio"] if t else None,
                    "fresh_interval": interval, "ratio_bound": bound, "verdict": verdict})
    return out


def analyze_iso_flop(rows: list[dict]) -> list[dict]:
    """Per FLOPs budget: each size's best rare accuracy over the frequencies (seed mean), and
    the smallest against the largest model."""
    from study_analysis import grid_table, mean_curve, threshold_interp

    out = []
    for experiment in sorted({r["experiment"] for r in rows}, key=lambda e: min(
            r["train_flops"] for r in rows if r["experiment"] == e)):
        sub = _ok(rows, experiment=experiment)
        sizes, freqs, table = grid_table(sub)
        best = []
        for size in sizes:
            curve = mean_curve(table, size, freqs)
            i = int(np.nanargmax(curve))
            trial = next(r for r in sub if r["params"] == size)
            value, how = threshold_interp(freqs, curve)
            best.append({"params": size, "tokens": trial["tokens"], "steps": trial["steps"],
                         "train_flops": trial["train_flops"], "best_acc": float(curve[i]),
                         "best_freq": freqs[i], "curve": [float(c) for c in curve],
                         "threshold": value, "how": how})
        small, large = best[0], best[-1]
        out.append({"experiment": experiment, "budget_flops": float(np.median([r["train_flops"] for r in sub])),
                    "freqs": freqs, "seeds": sorted({r["seed"] for r in sub}), "sizes": best,
                    "smallest_minus_largest": small["best_acc"] - large["best_acc"],
                    "best_size": max(best, key=lambda b: (b["best_acc"], -b["params"]))["params"]})
    return out


def analyze_lr(rows: list[dict]) -> list[dict]:
    """Per size: rare accuracy at each learning rate (per seed and mean); ``limited``: some
    other rate beats 3e-3 on every seed and by 0.1 or more in the mean."""
    out = []
    for target in sorted({r["target_params"] for r in rows}):
        sub = _ok(rows, target_params=target)
        by_lr = {}
        for lr in sorted({r["lr"] for r in sub}):
            trials = sorted(_ok(sub, lr=lr), key=lambda r: r["seed"])
            by_lr[lr] = {"rare_acc": float(np.mean([r["rare_acc"] for r in trials])),
                         "rare_acc_by_seed": [r["rare_acc"] for r in trials],
                         "rare_loss": float(np.mean([r["rare_loss"] for r in trials])),
                         "background_acc": float(np.mean([r["background_acc"] for r in trials]))}
        base = by_lr.get(0.003)
        better = [lr for lr, v in by_lr.items() if base and lr != 0.003
                  and v["rare_acc"] - base["rare_acc"] >= 0.1
                  and all(a > b for a, b in zip(v["rare_acc_by_seed"], base["rare_acc_by_seed"], strict=False))]
        out.append({"target_params": target, "params": sub[0]["params"], "rare_freq": sub[0]["rare_freq"],
                    "by_lr": by_lr, "limited": bool(better), "better_rates": better})
    return out


def analyze_lr_sweep(rows: list[dict]) -> list[dict]:
    """``analyze_lr`` per size, with the best rate (``tuned_rates``) and whether the sweep
    brackets it (a rate on either side of it was tried and did worse)."""
    best = tuned_rates(rows)
    out = []
    for entry in analyze_lr(rows):
        lrs = sorted(entry["by_lr"])
        lr = best[entry["target_params"]]
        entry.update(best_lr=lr, bracketed=0 < lrs.index(lr) < len(lrs) - 1,
                     tokens_per_param=_ok(rows, target_params=entry["target_params"])[0]["tokens"] / entry["params"])
        out.append(entry)
    return out


def _paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """Mean of a - b over the seeds both have, with its 90% t interval (``_seed_spread``)."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    spread = _seed_spread(diffs)
    interval = spread["interval"]  # a difference of accuracies lies in [-1, 1]
    return {"mean": spread["mean"], "n": spread["n"], "by_seed": diffs,
            "interval": None if interval is None else [max(-1.0, interval[0]), min(1.0, interval[1])]}


def analyze_iso_flop_tuned(rows: list[dict]) -> list[dict]:
    """Per FLOPs budget: the small model at its fixed frequency (the baseline), boosted (the
    same model at a higher frequency) and grown (a larger model at the fixed frequency), each
    at its tuned learning rate; rare and background accuracy per option, and each option's
    difference from the baseline, paired by seed, with a 90% interval. ``boost_vs_grow``: the
    best boost against the best grown model (best: highest mean rare accuracy). At a budget in
    ``CAPPED`` the sizes it did not train stand in with their trials at the smaller budget
    (``capped``: they spent less than the budget)."""
    out = []
    ok = _ok(rows)

    def budget_of(r: dict) -> str:
        return r["experiment"].split("_")[-2]

    for budget in sorted({budget_of(r) for r in ok}):
        sub = [r for r in ok if budget_of(r) == budget]
        budget_flops = float(np.median([r["train_flops"] for r in sub]))
        trained = {r["params"] for r in sub}
        if budget in CAPPED:  # sizes not trained here: their trials at CAPPED[budget]
            sub += [r for r in ok if budget_of(r) == CAPPED[budget] and r["params"] not in trained]
        small = min(r["params"] for r in sub)
        base_freq = min(r["rare_freq"] for r in sub if r["params"] == small)
        options = []
        for params, freq in sorted({(r["params"], r["rare_freq"]) for r in sub}):
            cell = sorted((r for r in sub if r["params"] == params and r["rare_freq"] == freq), key=lambda r: r["seed"])
            kind = "baseline" if (params, freq) == (small, base_freq) else "boost" if params == small else "grow"
            options.append({
                "kind": kind, "params": params, "rare_freq": freq, "lr": cell[0]["lr"], "tokens": cell[0]["tokens"],
                "steps": cell[0]["steps"], "tokens_per_param": cell[0]["tokens"] / params,
                "train_flops": float(np.median([r["train_flops"] for r in cell])),
                "rare_exposures": cell[0]["rare_per_item"], "capped": params not in trained,
                **{f"{k}_by_seed": {r["seed"]: r[k] for r in cell} for k in ("rare_acc", "background_acc")}})
        base = next((o for o in options if o["kind"] == "baseline"), None)
        for o in options:
            for k in ("rare_acc", "background_acc"):
                values = list(o[f"{k}_by_seed"].values())
                o[k] = float(np.mean(values))
                o[f"{k}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
                o[f"{k}_minus_baseline"] = None if o is base or base is None else \
                    _paired(o[f"{k}_by_seed"], base[f"{k}_by_seed"])
        entry = {"budget": budget, "budget_flops": budget_flops, "options": options}
        boosts = [o for o in options if o["kind"] == "boost"]
        grows = [o for o in options if o["kind"] == "grow"]
        if boosts and grows:
            boost, grow = (max(group, key=lambda o: o["rare_acc"]) for group in (boosts, grows))
            entry["boost_vs_grow"] = {
                "boost": {"params": boost["params"], "rare_freq": boost["rare_freq"]},
                "grow": {"params": grow["params"], "rare_freq": grow["rare_freq"]},
                **{k: _paired(boost[f"{k}_by_seed"], grow[f"{k}_by_seed"]) for k in ("rare_acc", "background_acc")}}
            entry["boost_vs_grow"]["verdict"] = _verdict(entry["boost_vs_grow"])
        out.append(entry)
    return out


TIE = 0.01
"""A difference of accuracies whose 90% interval lies within +-TIE is a tie: the scores are read
to two decimals, and at a ceiling (both near 1.00) a few facts in a thousand part them."""


def _verdict(cmp_: dict) -> str:
    """Boost against grow on rare and background accuracy together. Per score: an option wins it
    where the 90% interval of the difference excludes 0 and the mean is at least ``TIE``; a
    tie where the interval lies within +-``TIE``; else open. An option wins outright when it
    wins one score and does not lose the other."""
    def side(d: dict) -> str:
        if d["interval"] is None:
            return "open"
        lo, hi = d["interval"]
        if -TIE <= lo and hi <= TIE:
            return "tie"
        if lo > 0 and d["mean"] >= TIE:
            return "boost"
        if hi < 0 and d["mean"] <= -TIE:
            return "grow"
        return "open"

    sides = {"rare": side(cmp_["rare_acc"]), "background": side(cmp_["background_acc"])}
    won = {k: v for k, v in sides.items() if v in ("boost", "grow")}
    rest = "; ".join(f"{k} tied within {TIE:g}" if v == "tie" else f"{k} undetermined"
                     for k, v in sides.items() if k not in won)
    if len(set(won.values())) == 2:
        return f"a trade: {won['rare']} wins the rare task, {won['background']} the background"
    if won:
        (score, winner), *_ = won.items()
        return f"{winner} wins on both scores" if len(won) == 2 else f"{winner} wins ({score}; {rest})"
    if all(v == "tie" for v in sides.values()):
        return f"a tie: both differences lie within +-{TIE:g}"
    return f"undetermined: no score is won ({rest})"


def analyze_bursts_matched(rows: list[dict], primary: dict) -> list[dict]:
    """``bursts_comparison`` per size, with the frequency's distance above that size's threshold."""
    from study_analysis import bursts_comparison

    out = bursts_comparison(rows)
    by_params = {p["params"]: p for p in primary.values()}
    for entry in out:
        entry["times_threshold"] = entry["rare_freq"] / by_params[entry["params"]]["threshold"]
    return out


def analyze_sizes(primary_rows: list[dict], sixth_rows: list[dict]) -> dict:
    """The power law over the primary sizes and with the sixth: seed bootstrap, the fit's own
    interval across sizes, slopes of neighbouring and of three adjacent sizes."""
    from study_analysis import fit_with_bootstrap, thresholds

    five = fit_with_bootstrap(primary_rows)
    six_rows = primary_rows + _ok(sixth_rows)
    return {"five_sizes": five, "six_sizes": fit_with_bootstrap(six_rows),
            "sixth": [t for t in thresholds(six_rows) if t["params"] not in five["sizes"]
                      and t["params"] not in [e["params"] for e in five["excluded"]]]}


# ---------------------------------------------------------------------------------------------
# Report: every arm whose CSV is in ``out``: analysis, a markdown table, a figure


def _label(params: int) -> str:
    return f"{params / 1e6:.2f}M" if params >= 1e6 else f"{params / 1e3:.0f}K"


def report_arms(out: Path, primary_rows: list[dict]) -> dict:
    """Analyse, print and plot every arm found in ``out``; returns the summary entries."""
    import study_plots as plots
    from study_analysis import read_csv, threshold_table, thresholds

    primary = primary_facts(primary_rows, thresholds(primary_rows))
    summary: dict = {}
    data = {arm: read_csv(out / f"{arm}.csv") for arm in ARMS if (out / f"{arm}.csv").exists()}
    if "iso_flop" in data:
        summary["iso_flop"] = result = analyze_iso_flop(data["iso_flop"])
        for budget in result:
            print(f"\niso-FLOP at {budget['budget_flops']:.3g} FLOPs (seeds {budget['seeds']}): best rare "
                  "accuracy over the frequencies, and the threshold frequency at this budget\n"
                  "| params | tokens | steps | best accuracy | at f | threshold f |\n| ---: | ---: | ---: | ---: | ---: | ---: |")
            for b in budget["sizes"]:
                print(f"| {b['params']:,} | {b['tokens']:,} | {b['steps']:,} | {b['best_acc']:.2f} | "
                      f"{b['best_freq']:g} | {_show(b)} |")
        plots.plot_panels({f"{b['budget_flops']:.3g} training FLOPs": {
            f"{_label(p)} params": _ok(data["iso_flop"], experiment=b["experiment"], params=p)
            for p in sorted({r["params"] for r in _ok(data["iso_flop"], experiment=b["experiment"])})}
            for b in result}, "rare_freq", out / "iso_flop.png",
            "Equal training FLOPs: each size trains on the tokens the budget buys",
            "rare-task frequency (share of training sequences)")
    for arm, key, x_name in (("exposures", "tokens", "tokens"), ("no_background", "background_facts", "background facts"),
                             ("interference", "background_facts", "background facts, values drawn afresh")):
        if arm not in data:
            continue
        analyze = analyze_exposures if arm == "exposures" else analyze_no_background
        summary[arm] = result = analyze(data[arm], primary_rows)
        panels = {}
        for entry in result:
            target = entry["target_params"]
            seeds = entry["seeds"]
            lines = {"5,000 background facts" if arm != "exposures" else
                     f"896,000 tokens (primary, seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})":
                     paired_primary(primary_rows, target, seeds)}
            for value in sorted({r[key] for r in data[arm]}, reverse=arm != "exposures"):
                unit = x_name[:-1] if value == 1 else x_name  # "1 background fact"
                lines[f"{value:,} {unit}"] = _ok(data[arm], target_params=target, **{key: value})
            panels[f"{_label(entry['params'])} params"] = lines
        plots.plot_panels(panels, "rare_per_item", out / f"{arm}.png",
                          "Rare accuracy against exposures per fact" + (
                              ", at half, equal and twice the tokens" if arm == "exposures"
                              else ", with the background cut" if arm == "no_background"
                              else ", background values fresh"), "exposures per rare fact")
        _print_thresholds(arm, result)
    if "longer" in data:
        summary["longer"] = result = analyze_longer(data["longer"], primary_rows)
        plots.plot_panels({f"{_label(e['params'])} params, lr {LONGER_RATES[e['target_params']]:g}": {
            f"{tokens // PRIMARY_TOKENS}x the tokens ({tokens:,})": rs
            for tokens, rs in token_runs(data["longer"], primary_rows, e["target_params"], e["seeds"]).items()}
            for e in result["sizes"]}, "rare_per_item", out / "longer.png",
            "Longer training: rare accuracy against exposures per fact, each size at its tuned rate",
            "exposures per rare fact")
        _print_thresholds("longer", result["sizes"])
        for e in result["sizes"]:
            print(f"{e['params']:,} params, exponent by step: " + "; ".join(
                f"{st['from']:,} -> {st['to']:,} tokens {_num(st['exponent'])} "
                f"({', '.join(f'{v:.2f}' for v in st['exponent_by_seed'].values())}; "
                f"{_interval(st['exponent_seed_spread']['interval'])})" for st in e["steps"]))
        print("size slope s in f_thres ~ params^-s, per token count (per seed; 90% interval of their mean):")
        for e in result["slopes"]:
            spread = e["slope_seed_spread"]
            print(f"{e['tokens']:,} tokens: {_num(e['slope'])} over {len(e['sizes'])} sizes "
                  f"({', '.join(f'{v:.2f}' for v in e['slope_by_seed'].values())}; {_interval(spread['interval'])})"
                  + (f"; change {_num(e['change_seed_spread']['mean'])} "
                     f"{_interval(e['change_seed_spread']['interval'])}" if "change_by_seed" in e else ""))
    if "no_background" in summary and "interference" in summary:
        summary["capacity_or_interference"] = result = capacity_or_interference(
            summary["no_background"], summary["interference"])
        print("\ncapacity or interference (5,000-fact threshold in exposures over each variant's):")
        for e in result:
            print(f"{e['params']:,} params: 500 facts x{_num(e['ratio_500'])}, fresh values x{_num(e['ratio_fresh'])} "
                  f"{_interval(e['fresh_interval'])} -> {e['verdict']}")
    if "lr" in data:
        summary["lr"] = result = analyze_lr(data["lr"])
        print("\nlearning rate: rare accuracy (mean; per seed)")
        for e in result:
            print(f"{e['params']:,} params at f={e['rare_freq']:g}: {_by_lr(e)}; limited by lr: {e['limited']}")
        plots.plot_lr(result, out / "lr.png")
    if "lr_sweep" in data:
        summary["lr_sweep"] = result = analyze_lr_sweep(data["lr_sweep"])
        print("\nlr_sweep: rare accuracy (mean; per seed) at a frequency near each size's threshold")
        for e in result:
            print(f"{e['params']:,} params at f={e['rare_freq']:g}: {_by_lr(e)}; best {e['best_lr']:g}"
                  + ("" if e["bracketed"] else " (at the sweep's edge: not bracketed)"))
        plots.plot_lr(result, out / "lr_sweep.png")
    if "iso_flop_tuned" in data:
        summary["iso_flop_tuned"] = result = analyze_iso_flop_tuned(data["iso_flop_tuned"])
        for b in result:
            print(f"\niso_flop_tuned at {b['budget_flops']:.3g} FLOPs: rare and background accuracy "
                  "(mean ± sd over seeds), difference from the baseline [90% interval]\n"
                  "| option | params | f | lr | tokens/param | FLOPs | rare | background | rare - base | background - base |\n"
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for o in b["options"]:
                flops = f"{o['train_flops']:.3g}" + (" (capped)" if o.get("capped") else "")
                print(f"| {o['kind']} | {o['params']:,} | {o['rare_freq']:g} | {o['lr']:g} | "
                      f"{o['tokens_per_param']:,.1f} | {flops} | {_pm(o, 'rare_acc')} | {_pm(o, 'background_acc', '.3f')} | "
                      f"{_diff(o['rare_acc_minus_baseline'])} | {_diff(o['background_acc_minus_baseline'], '.3f')} |")
            if "boost_vs_grow" in b:
                c = b["boost_vs_grow"]
                print(f"boost ({c['boost']['params']:,} at f={c['boost']['rare_freq']:g}) - grow "
                      f"({c['grow']['params']:,} at f={c['grow']['rare_freq']:g}): rare {_diff(c['rare_acc'])}, "
                      f"background {_diff(c['background_acc'], '.3f')} -> {c['verdict']}")
        plots.plot_iso_tuned(result, out / "iso_flop_tuned.png")
    if "bursts_matched" in data:
        summary["bursts_matched"] = result = analyze_bursts_matched(data["bursts_matched"], primary)
        for e in result:
            print(f"bursts at {e['times_threshold']:.1f}x threshold, {e['params']:,} params, f={e['rare_freq']:g}: "
                  f"even {e['even']['rare_acc']:.2f}, bursts {e['bursts']['rare_acc']:.2f} "
                  f"(per seed {', '.join(f'{d:+.2f}' for d in e['diff_bursts_minus_even'])})")
        if result:
            plots.plot_bursts(result, out / "bursts_matched.png",
                              f"Even vs bursts at {BURST_DISTANCE:g}x each size's threshold frequency "
                              "(every 100 steps, duty 0.1)")
    if "sixth_size" in data:
        summary["sizes"] = result = analyze_sizes(primary_rows, data["sixth_size"])
        six_rows = primary_rows + _ok(data["sixth_size"])
        print("\nsix sizes:\n" + threshold_table(six_rows))
        for name in ("five_sizes", "six_sizes"):
            fit = result[name]
            if fit.get("slope") is not None:
                print(f"{name}: slope {fit['slope']:.2f}, seed bootstrap {_interval(fit['ci95'])}, across sizes "
                      f"{_interval(fit['ci95_across_sizes'])}, neighbours {_slopes(fit['local_slopes'])}, "
                      f"three adjacent {_slopes(fit['local3_slopes'])}")
        plots.plot_thresholds(six_rows, result["six_sizes"], out / "threshold_vs_size_six.png")
        from plan_calibration import extrapolation, load

        # optimix plan's model fitted on the five primary sizes, asked about the sixth
        table = load([ROOT / "docs" / "reproduction" / "results.csv", out / "sixth_size.csv"])
        result["plan_extrapolation"] = checks = extrapolation(table, len(result["five_sizes"]["sizes"]))
        for c in checks:
            observed = "none inside the grid" if c["observed"] is None else f"{c['observed']:.4f}"
            print(f"optimix plan fitted on {len(c['fitted_sizes'])} sizes, at {c['params']:,} params "
                  f"({c['distance']:.1f}x past): threshold {c['predicted']:.4f}, 90% interval "
                  f"[{c['interval'][0]:.4f}, {c['interval'][1]:.4f}]; observed {observed}; inside: {c['inside']}")
    if "rule" in data:
        from study_analysis import curve_table, fit_with_bootstrap

        rows = data["rule"]
        summary["rule"] = {"thresholds": thresholds(rows), "fit_params": fit_with_bootstrap(rows)}
        print("\nrule (reverse, held-out inputs): accuracy\n" + curve_table(rows))
        print("\nrule: background accuracy\n" + curve_table(rows, "background_acc"))
        print("\nrule: thresholds\n" + threshold_table(rows))
        plots.plot_curves(rows, out / "rule_acc_vs_freq.png",
                          "reverse (3 symbols) on inputs never trained on, against its frequency (dots = seeds)")
    return summary


def _by_lr(entry: dict) -> str:
    """Rare accuracy at each learning rate: ``0.003: 0.34 (0.27, 0.41)`` (mean, then per seed)."""
    return ", ".join(f"{lr:g}: {v['rare_acc']:.2f} ({', '.join(f'{a:.2f}' for a in v['rare_acc_by_seed'])})"
                     for lr, v in entry["by_lr"].items())


def _pm(option: dict, key: str, digits: str = ".2f") -> str:
    sd = option[f"{key}_sd"]
    return format(option[key], digits) + ("" if sd is None else f" ± {sd:{digits}}")


def _diff(d: dict | None, digits: str = ".2f") -> str:
    if d is None:
        return "-"
    interval = "" if d["interval"] is None else f" [{d['interval'][0]:+{digits}}, {d['interval'][1]:+{digits}}]"
    return f"{d['mean']:+{digits}}{interval}"


def _slopes(entries: list[dict]) -> str:
    return ", ".join(format(e["slope"], ".2f") for e in entries)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _interval(ci) -> str:
    return "-" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _print_thresholds(arm: str, result: list[dict]) -> None:
    by_tokens = arm in ("exposures", "longer")
    key = "by_tokens" if by_tokens else "by_background_facts"
    print(f"\n{arm}: threshold frequency / exposures per fact at threshold")
    for entry in result:
        cells = []
        if not by_tokens:
            cells.append(f"5000 facts: {_show(entry['background_5000'])} / "
                         f"{_show(entry['background_5000'], 'exposures', '.1f')}")
        for value, t in entry[key].items():
            extra = f" (x{t['ratio']:.2f})" if t.get("ratio") else ""
            if t.get("ratio_interval"):
                extra += (f" per seed {', '.join(f'{r:.2f}' for r in t['ratio_by_seed'])}, 90% interval "
                          f"[{t['ratio_interval'][0]:.2f}, {t['ratio_interval'][1]:.2f}]")
            cells.append(f"{value:,}{' fresh' * (arm == 'interference')}: {_show(t)} / {_show(t, 'exposures', '.1f')}{extra}")
        tail = f"; exponent {entry['exponent']:.2f} -> {entry['verdict']}" if by_tokens and entry["exponent"] is not None else ""
        print(f"{entry['params']:,} params: " + "; ".join(cells) + tail)


def tuned_rates(rows: list[dict]) -> dict[int, float]:
    """Per target size, the lr_sweep rate with the best mean rare accuracy over seeds (ties:
    the lower mean rare loss)."""
    best = {}
    for entry in analyze_lr(rows):
        by_lr = entry["by_lr"]
        best[entry["target_params"]] = min(by_lr, key=lambda lr: (-by_lr[lr]["rare_acc"], by_lr[lr]["rare_loss"]))
    return best
