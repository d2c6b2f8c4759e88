"""``optimix plan`` held to what it claims, on trials a real search produced: the study
reproduction's 90 trials (``docs/reproduction/results.csv``, written by ``optimix search`` through
``benchmarks/reproduce_study.py``). Intervals that hold on held-out sizes, extrapolation that
widens with distance, answers never dearer than a recorded trial, verdicts that say
"undetermined" when the trials cannot decide, costs at the model's size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from optimix import report
from optimix.core import fit
from optimix.core import hardware as hw
from optimix.plan import plan, validate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from plan_calibration import extrapolation, load  # noqa: E402

RESULTS = ROOT / "docs" / "reproduction" / "results.csv"


@pytest.fixture(scope="module")
def reproduction() -> fit.TrialTable:
    return load(RESULTS)


def test_held_out_sizes_land_inside_their_intervals(reproduction):
    """The issue's bar: leaving one size out, its observed threshold inside the 90% interval at
    >= 4 of 5 sizes; the transition MAE held out by size <= 0.10."""
    val = validate.cross_validate(reproduction)
    by_size = val["splits"]["size"]
    inside = sum(c["inside"] for c in by_size["thresholds"])
    assert inside >= 4, by_size["thresholds"]
    assert by_size["transition_mae"] <= validate.GOAL["transition_mae"]
    assert val["meets_goal"] and val["judged_on"] == "size"
    # the seeds' own scatter bounds what any model can do: the baseline is measured, not assumed
    assert val["baseline"]["trials"] == 90 and 0 < val["baseline"]["transition_mae"] < 0.15
    by_config = val["splits"]["config"]
    assert 0.6 <= by_config["transition_cell_coverage"] <= 1.0
    assert 0.8 <= by_config["trial_coverage"] <= 0.97


def test_extrapolation_holds_and_widens_with_distance(reproduction):
    from_four = extrapolation(reproduction, 4)
    (last,) = from_four
    assert last["params"] == 620_672 and last["inside"]
    from_three = extrapolation(reproduction, 3)
    assert all(e["inside"] for e in from_three)
    assert from_three[1]["width"] > from_three[0]["width"]  # 5.7x past is less sure than 2.1x


def test_params_answers_say_how_far_they_extrapolate(reproduction):
    doc = plan.answer(reproduction, metric="acc", budget_flops=1e14, params=2e6, hardware=hw.PROFILES["cpu"])
    pred = doc["predicted"]
    assert pred["config"]["params"] == 2_000_000 and pred["extrapolated"]
    assert any("params 2e+06 above the recorded 6.21e+05 (3.2x)" in why for why in pred["outside"])
    assert "3.2x outside the recorded sizes" in doc["fit"]["extrapolation"]
    model = fit.fit(reproduction)
    width = {n: np.divide(*reversed(fit.interval(model.threshold_draws(n, 896_000)))) for n in (620_672, 2e6, 2e7)}
    assert width[620_672] < width[2e6] < width[2e7]


def test_never_dearer_than_a_recorded_trial_that_answers(reproduction):
    """The issue's case: 3.4e12 FLOPs recommended a 235K model at 1.24e12 over a recorded 45K
    run at f = 0.064 that scored 1.00 with 2.34e11."""
    doc = plan.answer(reproduction, metric="acc", budget_flops=3.4e12, hardware=hw.PROFILES["cpu"])
    assert doc["predicted"]["train_flops"] <= doc["observed"]["train_flops"]
    assert doc["predicted"]["recorded_run"] == doc["observed"]["run_id"]
    for target in (0.3, 0.5, 0.9, 0.99):
        doc = plan.answer(reproduction, metric="acc", target_acc=target, hardware=hw.PROFILES["cpu"])
        assert doc["predicted"]["train_flops"] <= doc["observed"]["train_flops"] * (1 + 1e-9)


def test_a_budget_equal_to_a_recorded_trials_flops_buys_that_size(reproduction):
    flops = float(np.unique(reproduction.train_flops)[1])  # the 45K trials' FLOPs, exactly
    doc = plan.answer(reproduction, metric="acc", budget_flops=flops, hardware=hw.PROFILES["cpu"])
    assert doc["predicted"] is not None, doc.get("predicted_error")
    assert doc["predicted"]["train_flops"] <= flops


def test_the_seed_spread_of_a_transition_config_is_inside_the_one_trial_interval(reproduction):
    """17K at f = 0.032: seeds 0.27, 0.41, 0.54; the old fit said 0.5 was reached with p 0.96."""
    model = fit.fit(reproduction)
    lo, hi = fit.interval(model.predict_draws(0.032, 17_256, 896_000, seeds=1)[:, 0])
    assert lo <= 0.27 and 0.54 <= hi
    p_reach = float(np.mean(model.predict_draws(0.032, 17_256, 896_000, seeds=1)[:, 0] >= 0.5))
    assert 0.2 < p_reach < 0.8


def test_costs_follow_the_size_and_the_recorded_hardware(reproduction):
    doc = plan.answer(reproduction, metric="acc", target_acc=0.5, hardware=hw.PROFILES["cpu"])
    pred = doc["predicted"]
    size, flops = pred["config"]["params"], pred["train_flops"]
    assert pred["gpu_hours"] == pytest.approx(hw.PROFILES["cpu"].hours(flops, params=size))
    measured = np.median(reproduction.train_s[reproduction.params == size]) / 3600
    assert 0.5 < pred["recorded_hours"] / measured < 2
    assert doc["recorded_hardware"]["name"] == "recorded"


def test_one_recorded_size_is_undetermined():
    rng = np.random.default_rng(0)
    table = fit.simulate_trials(40, rng, sizes=(1e5, 1e5))
    doc = plan.answer(table, metric="acc/x", budget_flops=float(np.median(table.train_flops)),
                      hardware=hw.PROFILES["cpu"])
    cmp_ = doc["frequency_vs_size"]
    assert cmp_["winner"] == "undetermined" and "same size" in cmp_["undetermined"]


def test_a_size_slope_that_may_be_zero_is_undetermined():
    table = fit.simulate_trials(60, np.random.default_rng(2), s=0.0, c=0.02, sizes=(3e4, 6e4))
    doc = plan.answer(table, metric="acc/x", budget_flops=float(np.median(table.train_flops)),
                      hardware=hw.PROFILES["cpu"])
    cmp_ = doc["frequency_vs_size"]
    assert cmp_["winner"] == "undetermined", cmp_
    assert cmp_["at_equal"] == "tokens"


def test_the_slope_is_printed_with_its_sign():
    quality = {"sizes": 3, "seed_sd_logit": 0.0, "config_sd_logit": 0.1, "curve": None,
               "power_law": {"kind": "power law (straight in log N)", "chi2": 0.5, "df": 1, "p_value": 0.5,
                             "misfit_sd": 0.0, "fits_badly": False}}
    rising = {"power_law": {"c": 0.01, "s": -0.528, "s_interval": [-1.0, 0.1], "u": None}, "quality": quality}
    assert "N^+0.528" in report._law(rising) and "--" not in report._law(rising)
    falling = {"power_law": {"c": 9.5, "s": 0.56, "s_interval": [0.4, 0.7], "u": None}, "quality": quality}
    assert "N^-0.56" in report._law(falling)


def test_a_law_on_zero_degrees_of_freedom_is_printed_untested_not_fitting():
    """A straight line through as many placed sizes as it has parameters passes through them
    all (the quickstart's two placed widths): its chi2 says nothing, and the law line must
    not call it a fit."""
    quality = {"sizes": 3, "seed_sd_logit": 1.5, "config_sd_logit": 0.36, "curve": None,
               "power_law": {"kind": "power law (straight in log N)", "chi2": 3.6e-29, "df": 0, "p_value": None,
                             "misfit_sd": 0.3, "misfit_assumed": True, "fits_badly": False}}
    line = report._law({"power_law": {"c": 1.08, "s": 0.32, "s_interval": None, "u": None}, "quality": quality})
    assert "on 0 df" in line and "untested (0 df)" in line and ": fits" not in line, line
    quality["power_law"] |= {"df": 1, "p_value": 0.8}
    assert ": fits" in report._law({"power_law": {"c": 1.08, "s": 0.32, "s_interval": None, "u": None},
                                    "quality": quality})


# ---------------------------------------------------------------------------------------------
# A threshold the trials cannot place: hand-made tables


def table(params, freqs, accs) -> fit.TrialTable:
    tokens = 448_000
    return fit.TrialTable.from_columns(
        run_id=[f"t{i}" for i in range(len(accs))], rare_freq=freqs, params=params,
        tokens=[tokens] * len(accs), train_flops=[6 * n * tokens for n in params], acc=accs)


UNPLACED = {
    # one size, accuracy near 0 at every frequency: the ridge puts the threshold far above 1
    "one size, never learned": (table([45_000] * 4, [0.01, 0.1, 0.02, 0.2], [0.0, 0.02, 0.0, 0.01]), 45_000),
    # two sizes, each jumping from 0 to 1 with no trial between: no size's threshold is placed
    "two sizes, no trial in the transition": (
        table([17_000, 17_000, 45_000, 45_000], [0.01, 0.1, 0.02, 0.2], [0.0, 1.0, 0.0, 1.0]), 45_000),
    # the two_rare search's acc/rev: only 17,304 params has a trial near its threshold
    "one size placed, asked at another": (
        table([17_304, 109_632, 45_480, 17_304], [0.0954, 0.0471, 0.00923, 0.241], [0.004, 0.006, 0.0, 0.56]),
        45_480),
}


@pytest.mark.parametrize("case", UNPLACED, ids=list(UNPLACED))
def test_a_threshold_no_trial_places_is_undetermined_with_no_interval(case):
    trials, size = UNPLACED[case]
    model = fit.fit(trials)
    assert model.law.curve is None
    summary = model.summary(size, 448_000)
    assert summary["threshold_freq"] is None and summary["threshold_interval"] is None
    assert summary["threshold_undetermined"].startswith(f"no trial at {size:,} params sits near its threshold")
    # the draws carry no value for it (a draw equal to the ridge's value gave [2.35, 2.35])
    assert np.isnan(model.threshold_draws(size, 448_000)).all()
    assert fit.interval(model.predict_draws(0.1, size, 448_000)[:, 0]) is None


@pytest.mark.parametrize("params, why", [
    (10.0, "outside (0, 1]"),  # far below the recorded sizes the line climbs past 1
    (2e5, None),  # inside: placed, with an interval of its own width
])
def test_a_threshold_above_1_is_undetermined(params, why):
    model = fit.fit(fit.simulate_trials(60, np.random.default_rng(1), sizes=(1e5, 1e6)))
    summary = model.summary(params, 9e5)
    if why is None:
        lo, hi = summary["threshold_interval"]
        assert 0 < summary["threshold_freq"] <= 1 and lo < summary["threshold_freq"] < hi
        assert "threshold_undetermined" not in summary
    else:
        assert summary["threshold_freq"] is None and why in summary["threshold_undetermined"]


def test_an_unplaced_size_draws_nan_only_without_a_curve():
    """With a curve over sizes the size's own draws are never used: its answers take the curve's."""
    trials = UNPLACED["two sizes, no trial in the transition"][0]
    model = fit.fit(trials)
    assert not np.isfinite(model.law.stage1.theta_se).any()
    assert np.isnan(model.draws.theta).all()
    placed = fit.fit(fit.simulate_trials(60, np.random.default_rng(1), sizes=(1e5, 1e6)))
    assert placed.law.curve is not None
    assert np.isfinite(placed.threshold_draws(2e5, 9e5)).all()


def test_an_undetermined_threshold_prints_its_reason(capsys):
    doc = plan.answer(UNPLACED["one size, never learned"][0], metric="acc/rev", budget_flops=1e12,
                      hardware=hw.PROFILES["cpu"])
    report._fit(doc["fit"], doc["frequency_vs_size"])
    out = capsys.readouterr().out
    assert "threshold   undetermined at 45,000 params: no trial at 45,000 params sits near its threshold" in out
    assert doc["frequency_vs_size"]["p_frequency_wins"] is None
    assert plan.jsonable(doc["fit"])["threshold_undetermined"]
