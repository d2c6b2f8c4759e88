"""benchmarks/study_arms.py: the reproduction's arms, their grids and their analysis.

The analysis is checked on tables built to have a known answer (a threshold in exposures or
in frequency, a background that crowds or does not); the grids against the committed
primary grid they are centred on. The arms' own runs are in docs/reproduction/.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import study_analysis  # noqa: E402
import study_arms  # noqa: E402

from optimix.core.space import load_space  # noqa: E402
from optimix.search import grid_size  # noqa: E402

SIZES = {17000: 17256, 110000: 109504, 620000: 620672}


@pytest.fixture(scope="module")
def primary_rows():
    return study_analysis.read_csv(ROOT / "docs" / "reproduction" / "results.csv")


@pytest.fixture(scope="module")
def primary(primary_rows):
    return study_arms.primary_facts(primary_rows, study_analysis.thresholds(primary_rows))


def trial(target: int, freq: float, acc: float, seed: int = 0, tokens: int = 896000, **extra) -> dict:
    """One ok trial as read_csv gives it (7-token sequences, 100 rare facts)."""
    return {"status": "ok", "experiment": extra.pop("experiment", "x"), "target_params": target,
            "params": SIZES.get(target, target), "non_embedding_params": target, "rare_freq": freq,
            "seed": seed, "tokens": tokens, "steps": tokens // 896, "rare_acc": acc, "rare_loss": 1 - acc,
            "background_acc": 0.1, "delivery": "even", "rare_per_item": tokens / 7 * freq / 100,
            "train_flops": 6.0 * target * tokens, "lr": 0.003, "background_facts": 5000, **extra}


def sigmoid_in_log(x: float, centre: float) -> float:
    return 1 / (1 + math.exp(-4 * (math.log(x) - math.log(centre))))


# ---------------------------------------------------------------------------------------------
# Grids


TUNED = {45000: 0.003, 110000: 0.003, 620000: 0.001}  # what lr_sweep found (docs/reproduction/lr_sweep.csv)


def test_every_arm_is_a_valid_grid_search_centred_on_the_primary(primary):
    counts = {}
    for arm in study_arms.ARMS:
        for search in study_arms.arm_searches(arm, primary, tuned_lr=TUNED):
            counts[search.experiment] = grid_size(load_space(search.space, search.overrides))
    assert counts["study_iso_flop_small"] == 60 and counts["study_iso_flop_middle"] == 30
    assert sum(v for k, v in counts.items() if k.startswith("study_lr_sweep")) == 12 + 9 + 9
    for budget in ("b1", "b2"):  # the small model at three frequencies, the grown ones at one; 3 seeds
        assert [counts[f"study_iso_flop_tuned_{budget}_{size}"] for size in TUNED] == [9, 3, 3]
    assert sum(v for k, v in counts.items() if k.startswith("study_exposures")) == 30
    assert counts["study_rule"] == 40
    (iso_small, iso_middle) = study_arms.arm_searches("iso_flop", primary)
    assert f"train.flops={primary[17000]['train_flops']:.6g}" in iso_small.overrides
    assert f"train.flops={primary[110000]['train_flops']:.6g}" in iso_middle.overrides
    for search in study_arms.arm_searches("exposures", primary):  # the threshold inside each grid
        size = int(search.experiment.rsplit("_", 1)[1])
        grid = load_space(search.space, search.overrides).dimensions["mixture.rare_freq"].grid
        assert min(grid) < primary[size]["threshold"] / 2 and max(grid) > primary[size]["threshold"] * 2
    assert [counts[f"study_longer_{size}"] for size in (17000, 45000, 110000)] == [10, 5, 5]
    assert counts["study_longer16_17000"] == counts["study_longer16_45000"] == 5
    for search in study_arms.arm_searches("longer", primary, seeds=[0, 1]):  # both laws' thresholds inside
        space = load_space(search.space, search.overrides)
        size, factor = int(search.experiment.rsplit("_", 1)[1]), max(space.dimensions["train.tokens"].values) / 896000
        grid, rate = space.dimensions["mixture.rare_freq"].grid, space.resolve({}).train.lr
        assert rate == study_arms.LONGER_RATES[size] and factor in (4, 16)
        assert min(grid) <= primary[size]["threshold"] / factor  # an exposures law's threshold
        if factor == 4:  # a frequency law's, and the 1x baseline at a rate other than the primary grid's
            assert max(grid) > primary[size]["threshold"]
            assert (896000 in space.dimensions["train.tokens"].values) == (rate != 0.003)
    for search in study_arms.arm_searches("bursts_matched", primary):
        size = int(search.experiment.rsplit("_", 1)[1])
        config = load_space(search.space, search.overrides).resolve({})
        assert config.mixture.rare_freq == pytest.approx(2 * primary[size]["threshold"], rel=0.05)


def test_quick_arms_are_small(primary):
    trials = sum(grid_size(load_space(s.space, s.overrides))
                 for arm in study_arms.ARMS for s in study_arms.arm_searches(arm, primary, quick=True, tuned_lr=TUNED))
    # 39 quick trials took 3.7 + 2.9 min (docs/reproduction.md's run tables); --quick's bar is 10
    assert trials <= 45


def test_iso_flop_tuned_trains_each_size_at_its_rate_and_equal_flops(primary):
    budgets = study_arms.iso_tuned_budgets(primary)
    # the top budget: the 621K model at 20 tokens per parameter
    assert budgets["b3"] / (primary[620000]["train_flops"] / 896000) / primary[620000]["params"] == pytest.approx(20)
    for search in study_arms.arm_searches("iso_flop_tuned", primary, tuned_lr=TUNED, budgets=("b1", "b2", "b3")):
        budget, size = search.experiment.rsplit("_", 2)[1:]
        config = load_space(search.space, search.overrides).resolve({})
        assert config.train.lr == TUNED[int(size)] and config.train.flops == pytest.approx(budgets[budget], rel=1e-5)
    with pytest.raises(ValueError, match="no lr_sweep rows for \\[620000\\]"):
        study_arms.arm_searches("iso_flop_tuned", primary, tuned_lr={45000: 0.003, 110000: 0.003})


# ---------------------------------------------------------------------------------------------
# Analysis


@pytest.mark.parametrize(("law", "exponent", "verdict"), [("exposures", 1.0, "exposures"),
                                                          ("frequency", 0.0, "frequency")])
def test_exposures_tells_a_threshold_in_exposures_from_one_in_frequency(law, exponent, verdict):
    def acc(freq, tokens):
        exposures = tokens / 7 * freq / 100
        return sigmoid_in_log(exposures, 20.0) if law == "exposures" else sigmoid_in_log(freq, 0.0156)

    freqs = [0.002 * 2 ** k for k in range(8)]
    primary_rows = [trial(17000, f, acc(f, 896000)) for f in freqs]
    rows = [trial(17000, f, acc(f, t), tokens=t) for t in (448000, 1792000) for f in freqs]
    (entry,) = study_arms.analyze_exposures(rows, primary_rows)
    assert entry["exponent"] == pytest.approx(exponent, abs=0.05)
    assert entry["verdict"] == verdict
    assert set(entry["by_tokens"]) == {448000, 896000, 1792000}


@pytest.mark.parametrize(("exponent", "verdict"), [
    (1.2, "exposures"), (0.8, "exposures"), (-0.2, "frequency"), (0.5, "between the two (exponent 0.50)"),
    (1.6, "steeper than exposures (exponent 1.60)"), (-0.6, "a threshold that rises with tokens (exponent -0.60)")])
def test_an_exponent_far_from_either_law_is_named_for_what_it_is(exponent, verdict):
    """An exponent of 1.6 is not an exposures law, nor -0.6 a frequency law."""
    assert study_arms._law(exponent) == verdict


@pytest.mark.parametrize("law", ["exposures", "frequency"])
def test_longer_reads_each_sizes_law_and_the_size_slope_at_each_token_count(law):
    """Thresholds that fall as params^-1 at every token count; at 4x the tokens they fall 4x
    (exposures) or stay put (frequency). 17K's 1x rows are the arm's own (its rate is not the
    primary grid's): the primary grid's 17K rows, at another threshold, must not be used."""
    def centre(size, tokens):  # 17K: 0.029 at 1x
        return 500 / SIZES[size] * 896000 / (tokens if law == "exposures" else 896000)

    freqs = [0.00005 * 2 ** k for k in range(13)]
    primary_rows = [trial(s, f, sigmoid_in_log(f, centre(s, 896000)), seed=seed)
                    for s in (110000, 620000) for f in freqs for seed in (0, 1)]
    primary_rows += [trial(17000, f, sigmoid_in_log(f, 0.5), seed=seed) for f in freqs for seed in (0, 1)]
    rows = [trial(s, f, sigmoid_in_log(f, centre(s, t)), seed=seed, tokens=t)
            for s in SIZES for t in (3584000,) for f in freqs for seed in (0, 1)]
    rows += [trial(17000, f, sigmoid_in_log(f, centre(17000, 896000)), seed=seed) for f in freqs for seed in (0, 1)]
    result = study_arms.analyze_longer(rows, primary_rows)
    verdicts = {e["target_params"]: e["verdict"].split(";")[0] for e in result["sizes"]}
    assert verdicts == dict.fromkeys(SIZES, law)
    slopes = {e["tokens"]: e for e in result["slopes"]}
    assert set(slopes) == {896000, 3584000}
    for entry in slopes.values():
        assert entry["slope"] == pytest.approx(1.0, abs=0.05) and len(entry["sizes"]) == 3
        assert set(entry["slope_by_seed"]) == {0, 1}
    assert slopes[3584000]["change_seed_spread"]["mean"] == pytest.approx(0.0, abs=0.05)
    # 17K's 4x trials alone, at a rate the primary grid did not train: no 1x baseline, not the primary's
    at_1e2 = [{**r, "lr": 0.01} for r in rows if r["target_params"] == 17000 and r["tokens"] == 3584000]
    assert study_arms.token_runs(at_1e2, primary_rows, 17000, [0, 1])[896000] == []
    for entry in result["sizes"]:  # one step, 1x -> 4x, on each seed
        (step,) = entry["steps"]
        assert (step["from"], step["to"]) == (896000, 3584000) and set(step["exponent_by_seed"]) == {0, 1}
        assert step["exponent"] == pytest.approx(1.0 if law == "exposures" else 0.0, abs=0.05)


def test_exposures_says_undetermined_when_the_grid_misses_the_thresholds():
    rows = [trial(17000, f, 0.0, tokens=t) for t in (448000, 1792000) for f in (0.01, 0.02)]
    (entry,) = study_arms.analyze_exposures(rows, [])
    assert entry["exponent"] is None and entry["verdict"].startswith("undetermined")


@pytest.mark.parametrize(("shift", "moved"), [(3.0, True), (1.2, False)])
def test_no_background_reports_a_moved_threshold_beyond_the_factor(shift, moved):
    freqs = [0.002 * 2 ** k for k in range(7)]
    primary_rows = [trial(110000, f, sigmoid_in_log(f, 0.012)) for f in freqs]
    rows = [trial(110000, f, sigmoid_in_log(f, 0.012 / shift), background_facts=500) for f in freqs]
    (entry,) = study_arms.analyze_no_background(rows, primary_rows)
    variant = entry["by_background_facts"][500]
    assert variant["ratio"] == pytest.approx(shift, rel=0.1)
    assert variant["moved"] is moved


def test_lr_is_limiting_only_when_every_seed_gains():
    rows = [trial(17000, 0.032, a, seed=s, lr=lr) for lr, accs in
            ((0.001, [0.1, 0.2]), (0.003, [0.4, 0.5]), (0.01, [0.8, 0.45])) for s, a in enumerate(accs)]
    (entry,) = study_arms.analyze_lr(rows)
    assert not entry["limited"]  # 0.01 gains 0.175 in the mean but loses on seed 1
    rows[-1]["rare_acc"] = 0.7
    (entry,) = study_arms.analyze_lr(rows)
    assert entry["limited"] and entry["better_rates"] == [0.01]


def test_iso_flop_takes_each_sizes_best_frequency():
    rows = [trial(17000, f, a, experiment="b1") for f, a in ((0.016, 0.2), (0.064, 0.9), (0.256, 0.7))]
    rows += [trial(620000, f, a, experiment="b1") for f, a in ((0.016, 0.0), (0.064, 0.1), (0.256, 0.3))]
    (budget,) = study_arms.analyze_iso_flop(rows)
    best = {b["params"]: (b["best_acc"], b["best_freq"]) for b in budget["sizes"]}
    assert best == {17256: (0.9, 0.064), 620672: (0.3, 0.256)}
    assert budget["smallest_minus_largest"] == pytest.approx(0.6)
    assert budget["best_size"] == 17256


def test_across_sizes_interval_covers_the_slope_and_local_slopes_follow_the_law():
    sizes = [1e4, 3e4, 1e5, 3e5, 1e6]
    exact = study_analysis.across_sizes([(n, 0.1 * (n / 1e4) ** -0.6) for n in sizes])
    assert exact["ci95_across_sizes"] == pytest.approx([0.6, 0.6], abs=1e-6)
    assert [e["slope"] for e in exact["local3_slopes"]] == pytest.approx([0.6] * 3)
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):  # a 95% interval: about 95% of noisy draws cover the true slope
        noisy = [(n, 0.1 * (n / 1e4) ** -0.6 * math.exp(rng.normal(0, 0.2))) for n in sizes]
        lo, hi = study_analysis.across_sizes(noisy)["ci95_across_sizes"]
        hits += lo <= 0.6 <= hi
    assert 0.91 <= hits / 400 <= 0.99


def test_iso_flop_tuned_top_budget_compares_the_largest_size_against_capped_smaller_ones():
    """At b3 only 621K trains; 45K and 110K stand in with their b2 trials, marked capped (they
    spent less than the budget), and the budget is the one 621K trained at."""
    def row(budget, target, freq, seed, acc, tokens):
        return trial(target, freq, acc, seed=seed, tokens=tokens, background_acc=0.3 + 0.01 * seed,
                     experiment=f"study_iso_flop_tuned_{budget}_{target}")

    rows = []
    for seed in (0, 1, 2):
        rows += [row("b2", 45000, f, seed, acc, 12_000_000) for f, acc in ((0.002, 0.0), (0.008, 0.6), (0.032, 1.0))]
        rows += [row("b2", 110000, 0.002, seed, 0.1, 5_000_000), row("b2", 620000, 0.002, seed, 0.0, 900_000)]
        rows.append(row("b3", 620000, 0.002, seed, 0.3 + 0.05 * seed, 12_400_000))
    b2, b3 = study_arms.analyze_iso_flop_tuned(rows)
    assert b3["budget"] == "b3" and b3["budget_flops"] == pytest.approx(6.0 * 620000 * 12_400_000)
    kinds = {(o["params"], o["rare_freq"]): (o["kind"], o["capped"], o["tokens"]) for o in b3["options"]}
    assert kinds[(45000, 0.002)] == ("baseline", True, 12_000_000)
    assert kinds[(SIZES[110000], 0.002)] == ("grow", True, 5_000_000)
    assert kinds[(SIZES[620000], 0.002)] == ("grow", False, 12_400_000)
    assert b3["boost_vs_grow"]["grow"]["params"] == SIZES[620000]  # the best grown model by rare recall
    assert b3["boost_vs_grow"]["rare_acc"]["mean"] == pytest.approx(1.0 - 0.35)
    assert not any(o["capped"] for o in b2["options"])
    # the top budget alone (its stand-ins not run yet): no baseline, no verdict, no error
    (alone,) = study_arms.analyze_iso_flop_tuned([r for r in rows if "b3" in r["experiment"]])
    assert "boost_vs_grow" not in alone and all(o["rare_acc_minus_baseline"] is None for o in alone["options"])


@pytest.mark.parametrize(("rare", "background", "verdict"), [
    ((0.96, [0.93, 0.99]), (0.041, [0.025, 0.057]), "boost wins on both scores"),
    # at a ceiling: 3 facts in 1,000 with a tight interval is a tie, not a win
    ((0.20, [-0.18, 0.58]), (-0.003, [-0.005, -0.001]), "undetermined: no score is won"),
    ((0.0, [0.0, 0.0]), (-0.011, [-0.013, -0.008]), "grow wins (background; rare tied within 0.01)"),
    ((0.0, [-0.004, 0.004]), (0.002, [-0.001, 0.006]), "a tie: both differences lie within +-0.01"),
    ((0.30, [0.10, 0.50]), (-0.05, [-0.08, -0.02]), "a trade: boost wins the rare task, grow the background"),
    # an interval off 0 whose mean is under the tie margin: neither a win nor a tie
    ((0.008, [0.001, 0.015]), (0.0, None), "undetermined: no score is won"),
])
def test_boost_vs_grow_verdict_wins_only_beyond_the_tie_margin(rare, background, verdict):
    def diff(mean_interval):
        mean, interval = mean_interval
        return {"mean": mean, "interval": interval}

    assert study_arms._verdict({"rare_acc": diff(rare), "background_acc": diff(background)}).startswith(verdict)


@pytest.mark.parametrize(("shift", "seeds", "verdict"), [
    (3.0, (0, 1, 2), "capacity"),  # nothing to store: the threshold falls, as with 500 facts
    (0.4, (0, 1, 2), "interference"),  # all gradient: the threshold rises
    (3.0, (0,), "undetermined: 1 seed(s)"),
    # never reached on any seed inside the grid: the ratio is only bounded, and the bound says it
    (0.01, (0, 1, 2), "interference: on every seed the fresh background's threshold lies above the grid"),
])
def test_capacity_or_interference_reads_the_fresh_backgrounds_threshold(shift, seeds, verdict):
    freqs = [0.001 * 2 ** k for k in range(9)]
    wobble = {0: 1.0, 1: 1.15, 2: 0.9}  # each seed's own threshold
    primary = [trial(110000, f, sigmoid_in_log(f, 0.012 * wobble[s]), seed=s) for f in freqs for s in seeds]
    cut = [trial(110000, f, sigmoid_in_log(f, 0.012 * wobble[s] / 2.5), seed=s, background_facts=500)
           for f in freqs for s in seeds]
    fresh = [trial(110000, f, sigmoid_in_log(f, 0.012 * wobble[s] / shift * (1 + 0.05 * s)), seed=s)
             for f in freqs for s in seeds]
    (entry,) = study_arms.capacity_or_interference(study_arms.analyze_no_background(cut, primary),
                                                   study_arms.analyze_no_background(fresh, primary))
    assert entry["verdict"].startswith(verdict), entry
    assert entry["ratio_500"] == pytest.approx(2.5, rel=0.15)
    if entry["ratio_bound"] is None:
        assert entry["ratio_fresh"] == pytest.approx(shift, rel=0.15)
    else:  # the 5,000-fact threshold (0.012) over the grid's top (0.256)
        assert entry["ratio_fresh"] is None and entry["ratio_bound"] == pytest.approx(0.012 / 0.256, rel=0.15)
