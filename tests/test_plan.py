"""Planning queries: the fit recovers a known threshold law, observed answers match brute force,
predicted answers are the best on their grid, costs follow the profile, bad queries are one line.

Tables are drawn from a known law (``fit.simulate_trials``) or typed in: the docs/science.md CPU
probe (4 sizes x 7 frequencies, measured). One test writes a real MLflow SQLite store.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from optimix.cli import main as cli_main
from optimix.core import fit, metrics
from optimix.core import hardware as hw
from optimix.core.metrics import parse_objectives_tag
from optimix.plan import plan, validate, verify

QUICKSTART = str(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml")

# docs/science.md, "The CPU setup that shows the effect": rare-fact accuracy by size and f.
PROBE_FREQS = [0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1]
PROBE = {
    20_000: [0.00, 0.00, 0.01, 0.03, 0.31, 0.88, 1.00],
    68_000: [0.00, 0.05, 0.28, 0.79, 1.00, 1.00, 1.00],
    247_000: [0.06, 0.32, 0.75, 0.99, 1.00, 1.00, 1.00],
    637_000: [0.12, 0.52, 0.93, 1.00, 1.00, 1.00, 1.00],
}
PROBE_TOKENS = 896_000


def probe_table() -> fit.TrialTable:
    rows = [(n, f, a) for n, accs in PROBE.items() for f, a in zip(PROBE_FREQS, accs, strict=True)]
    return fit.TrialTable.from_columns(
        run_id=[f"probe-{i}" for i in range(len(rows))], rare_freq=[f for _, f, _ in rows],
        params=[n for n, _, _ in rows], tokens=[PROBE_TOKENS] * len(rows),
        train_flops=[6.0 * n * PROBE_TOKENS for n, _, _ in rows], acc=[a for _, _, a in rows])


def true_threshold(c: float, s: float, u: float, n: float, t: float) -> float:
    return c * n ** -s * t ** -u


# ---------------------------------------------------------------------------------------------
# The fit recovers the law it was drawn from


def test_fit_recovers_s_within_10_percent_and_the_threshold_within_its_interval():
    """50 tables of 60 trials from one law: s within 15% every time; the 90% interval of the
    threshold holds the true one about 90% of the time (at least 78%)."""
    c, s, k = 9.5, 0.56, 5.0
    covered = []
    for seed in range(50):
        table = fit.simulate_trials(60, np.random.default_rng(1000 + seed), c=c, s=s, k=k)
        model = fit.fit(table, seed=seed)
        law = model.power_law()
        assert abs(law["s"] / s - 1) < 0.15
        assert abs(model.law.stage1.k / k - 1) < 0.25
        summary = model.summary(1e5, 9e5)
        lo, hi = summary["threshold_interval"]
        covered.append(lo <= true_threshold(c, s, 0.0, 1e5, 9e5) <= hi)
        assert law["s_interval"][0] <= law["s"] <= law["s_interval"][1]
        assert not model.used[1] and "same tokens" in model.notes[0]
    assert 0.78 <= np.mean(covered)


def test_fit_with_tokens_in_the_model_recovers_s_and_u():
    """f_thres = c N^-s T^-u, the threshold inside the frequency range at T = 1e6: 30 tables."""
    c, s, u = 9.5 * 1e6 ** 0.4, 0.56, 0.4
    covered = []
    for seed in range(30):
        table = fit.simulate_trials(150, np.random.default_rng(2000 + seed), c=c, s=s, u=u,
                                     tokens=(2e5, 5e6))
        model = fit.fit(table, seed=seed)
        law = model.power_law()
        assert model.used == (True, True)
        assert abs(law["s"] / s - 1) < 0.10
        assert abs(law["u"] - u) < 0.1
        lo, hi = model.summary(1e5, 1e6)["threshold_interval"]
        covered.append(lo <= true_threshold(c, s, u, 1e5, 1e6) <= hi)
    assert np.mean(covered) >= 0.75


def test_iso_flop_trials_leave_tokens_out_and_follow_the_design():
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(2e4), np.log(1e6), 80))
    f = np.exp(rng.uniform(np.log(1e-3), np.log(0.2), 80))
    t = 1e12 / (6 * n)
    acc = 1 / (1 + np.exp(-5 * (np.log(f) - np.log(9.5 * n ** -0.56))))
    table = fit.TrialTable.from_columns(run_id=[str(i) for i in range(80)], rare_freq=f, params=n,
                                         tokens=t, train_flops=6 * n * t, acc=acc)
    model = fit.fit(table)
    assert model.used == (True, False)
    assert any("tied" in note for note in model.notes)
    assert model.tokens_for(1e5) == pytest.approx(1e12 / 6e5, rel=1e-6)
    config, _ = plan.predict_under_budget(model, 1e12 * 1.0001)
    assert config.tokens == pytest.approx(1e12 / (6 * config.params), rel=1e-6)


def test_science_probe_table_validates_on_the_hard_splits():
    result = validate.cross_validate(probe_table())
    by_size, by_config = result["splits"]["size"], result["splits"]["config"]
    assert by_size["predicted"] == 28 and by_config["method"] == "leave one config out"
    assert result["judged_on"] == "size"
    assert by_config["spearman"] >= validate.GOAL["spearman"] and by_config["mae"] <= validate.GOAL["mae"]
    assert by_size["spearman"] >= 0.8 and by_size["mae"] <= 0.15
    assert by_size["threshold_coverage"].endswith("of 4") or by_size["threshold_coverage"].endswith("of 3")
    assert result["baseline"]["trials"] == 0 and "seed noise is not measured" in result["baseline"]["note"]


def test_large_tables_validate_by_10_folds_over_configs():
    table = fit.simulate_trials(400, np.random.default_rng(0))
    result = validate.cross_validate(table)
    assert result["splits"]["config"]["method"] == "10-fold over configs"
    for split in result["splits"].values():
        assert split["predicted"] == 400
        assert split["spearman"] > 0.95 and split["mae"] < 0.05
    assert result["meets_goal"]


def test_spearman_uses_average_ranks_for_ties():
    def ranks(v):  # by definition: 1 + how many are smaller + half of the other equal ones
        return [1 + sum(w < x for w in v) + (sum(w == x for w in v) - 1) / 2 for x in v]

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    expect = np.corrcoef(ranks(list(x)), ranks(list(y)))[0, 1]
    assert validate.spearman(x, y) == pytest.approx(expect, abs=1e-12)
    assert validate.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert validate.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(validate.spearman(np.ones(5), np.arange(5.0)))


# ---------------------------------------------------------------------------------------------
# Observed answers against brute force


def messy_table(seed: int) -> fit.TrialTable:
    """Ties in FLOPs and accuracy, failed trials (no accuracy), a failed trial that looks best."""
    rng = np.random.default_rng(seed)
    n = 40
    flops = rng.choice([1e11, 2e11, 4e11, 8e11], n)
    acc = np.round(rng.uniform(0, 1, n), 1)
    status = rng.choice(["ok", "ok", "ok", "failed", "infeasible"], n)
    acc[status != "ok"] = np.nan
    acc[0], status[0], flops[0] = 1.0, "pruned", 1e11  # partial training never answers
    return fit.TrialTable.from_columns(
        run_id=[f"r{i}" for i in range(n)], rare_freq=rng.uniform(0.01, 0.1, n),
        params=flops / 6e5, tokens=np.full(n, 1e5), train_flops=flops, acc=acc, status=status)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("budget", [5e10, 1e11, 3e11, 8e11, 1e13])
def test_best_under_budget_is_the_brute_force_answer(seed, budget):
    table = messy_table(seed)
    ok = [i for i in range(len(table)) if table.status[i] == "ok" and table.train_flops[i] <= budget]
    expect = min(ok, key=lambda i: (-table.acc[i], table.train_flops[i]), default=None)
    got = plan.best_under_budget(table, budget)
    if expect is None:
        assert got is None
    else:
        assert (table.acc[got], table.train_flops[got]) == (table.acc[expect], table.train_flops[expect])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.0, 0.3, 0.75, 0.9, 1.0])
def test_cheapest_reaching_is_the_brute_force_answer(seed, target):
    table = messy_table(seed)
    ok = [i for i in range(len(table)) if table.status[i] == "ok" and table.acc[i] >= target]
    expect = min(ok, key=lambda i: (table.train_flops[i], -table.acc[i]), default=None)
    got = plan.cheapest_reaching(table, target)
    if expect is None:
        assert got is None
    else:
        assert (table.acc[got], table.train_flops[got]) == (table.acc[expect], table.train_flops[expect])


# ---------------------------------------------------------------------------------------------
# Predicted answers


@pytest.fixture(scope="module")
def token_model():
    table = fit.simulate_trials(150, np.random.default_rng(7), c=9.5 * 1e6 ** 0.4, u=0.4,
                                 tokens=(2e5, 5e6))
    return table, fit.fit(table, seed=0)


@pytest.mark.parametrize("budget", [1e11, 1e12, 1e13])
def test_predicted_config_fits_the_budget_and_nothing_on_the_grid_beats_it(token_model, budget):
    _, model = token_model
    config, _ = plan.predict_under_budget(model, budget)
    assert config.train_flops <= budget * (1 + 1e-9)
    best = model.predict(config.rare_freq, config.params, config.tokens)
    for n in model.sizes:
        t_full = budget / model.fpt(n)
        for t in [t_full, *np.minimum(model.token_grid, t_full)]:
            assert model.predict(model.freqs, n, t).max() <= best + plan.TIE


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_predicted_cheapest_reaches_the_target_and_nothing_cheaper_does(token_model, target):
    _, model = token_model
    config, _ = plan.predict_reaching(model, target)
    assert model.predict(config.rare_freq, config.params, config.tokens) >= target
    for n in model.sizes:
        for t in model.token_grid:
            reach = model.predict(model.freqs, n, t) >= target
            if reach.any():
                assert model.fpt(n) * t >= config.train_flops * (1 - 1e-3)
    assert not plan.outside(model, config)


def test_a_budget_beyond_the_trials_is_flagged_as_extrapolated(token_model):
    table, model = token_model
    inside = plan.answer(table, metric="acc/facts", budget_flops=float(np.median(table.train_flops)),
                         hardware=hw.PROFILES["h100"], n_boot=50)
    assert inside["predicted"]["extrapolated"] is False
    far = plan.answer(table, metric="acc/facts", budget_flops=100 * table.train_flops.max(),
                      hardware=hw.PROFILES["h100"], n_boot=50)
    assert far["predicted"]["extrapolated"] is True
    assert any("budget above" in why for why in far["predicted"]["outside"])
    # ties go to fewer FLOPs: a budget 100x past the trials does not buy a 100x dearer config
    # when a recorded-range one predicts as well
    assert far["predicted"]["train_flops"] <= table.train_flops.max() * (1 + 1e-6)
    lo, hi = far["predicted"]["interval"]
    assert lo <= far["predicted"]["acc/facts"] <= hi
    lo, hi = far["predicted"]["trial_interval"]
    assert lo <= far["predicted"]["acc/facts"] <= hi


def test_frequency_against_size_follows_the_law():
    # s small: doubling N lowers the threshold by 2^0.2, doubling f moves past it by 2: frequency
    # s large (2): doubling N lowers the threshold 4x: size wins, even though tokens are fixed
    for s, winner in ((0.2, "frequency"), (2.0, "size")):
        table = fit.simulate_trials(120, np.random.default_rng(1), c=0.03 * 1e5 ** s, s=s,
                                     sizes=(3e4, 3e5))
        doc = plan.answer(table, metric="acc/facts", budget_flops=float(np.median(table.train_flops)),
                          hardware=hw.PROFILES["cpu"], n_boot=100)
        cmp_ = doc["frequency_vs_size"]
        assert cmp_["winner"] == winner and cmp_["undetermined"] is None
        assert cmp_["at_equal"] == "tokens"
        p = cmp_["p_frequency_wins"]
        assert (p > 0.95) if winner == "frequency" else (p < 0.05)


def test_the_json_document_carries_the_promised_fields():
    doc = plan.jsonable(plan.answer(probe_table(), metric="acc/facts", budget_flops=1e12,
                                    hardware=hw.PROFILES["h100"]))
    json.dumps(doc, allow_nan=False)
    assert set(doc["observed"]) >= {"run_id", "train_flops", "acc/facts", "config", "gpu_hours", "cost_usd"}
    assert doc["observed"]["train_flops"] <= 1e12
    assert set(doc["predicted"]) >= {"config", "acc/facts", "interval", "extrapolated", "train_flops"}
    assert set(doc["predicted"]["config"]) == {"params", "rare_freq", "tokens", "train_flops"}
    assert doc["frequency_vs_size"]["winner"] in ("frequency", "size", "undetermined")
    size = doc["predicted"]["config"]["params"]
    assert doc["gpu_hours"] == pytest.approx(hw.PROFILES["h100"].hours(doc["predicted"]["train_flops"], params=size))
    assert doc["cost_usd"] == pytest.approx(doc["gpu_hours"] * 2.50)
    law = doc["fit"]["power_law"]
    assert law["s_interval"][0] < law["s"] < law["s_interval"][1]
    assert set(doc["fit"]["quality"]) >= {"power_law", "curve", "seed_sd_logit", "sizes"}


def test_draws_are_seeded():
    table = probe_table()
    a = fit.fit(table, seed=5, n_boot=50).draws.k
    assert np.array_equal(a, fit.fit(table, seed=5, n_boot=50).draws.k)
    assert not np.array_equal(a, fit.fit(table, seed=6, n_boot=50).draws.k)


# ---------------------------------------------------------------------------------------------
# What cannot be answered


def test_query_errors_are_plan_errors():
    table = probe_table()
    profile = hw.PROFILES["h100"]
    for kwargs, words in (({}, "exactly one"), ({"budget_flops": 1e12, "target_acc": 0.5}, "exactly one"),
                          ({"budget_flops": -1.0}, "--budget-flops"), ({"target_acc": 1.5}, "--target-acc"),
                          ({"budget_flops": float("nan")}, "--budget-flops")):
        with pytest.raises(plan.PlanError, match=words):
            plan.answer(table, metric="acc/facts", hardware=profile, **kwargs)
    failed = fit.TrialTable.from_columns(run_id=["a"], rare_freq=[0.1], params=[1e5], tokens=[1e5],
                                          train_flops=[6e10], acc=[math.nan], status=["failed"])
    with pytest.raises(plan.PlanError, match="no finished trial"):
        plan.answer(failed, metric="acc/facts", budget_flops=1e12, hardware=profile)


def test_trials_without_a_frequency_spread_still_get_the_observed_answer():
    table = fit.TrialTable.from_columns(run_id="abcde", rare_freq=[0.01] * 5,
                                         params=[1e4, 2e4, 4e4, 8e4, 1.6e5], tokens=[1e5] * 5,
                                         train_flops=[6e9, 1.2e10, 2.4e10, 4.8e10, 9.6e10],
                                         acc=[0.1, 0.2, 0.4, 0.6, 0.9])
    doc = plan.answer(table, metric="acc/x", target_acc=0.5, hardware=hw.PROFILES["cpu"])
    assert doc["observed"]["run_id"] == "d"
    assert doc["predicted"] is None and "same mixture.rare_freq" in doc["predicted_error"]
    assert doc["gpu_hours"] == pytest.approx(hw.PROFILES["cpu"].hours(4.8e10, params=8e4))


def test_choose_metric():
    objectives = parse_objectives_tag("acc/facts:max,acc/copy:max,train_flops:min")
    assert plan.choose_metric(objectives, ["facts"], {"acc/facts", "acc/copy"}) == "acc/facts"
    assert plan.choose_metric(objectives, ["other"], {"acc/facts"}) == "acc/facts"
    assert plan.choose_metric(objectives, ["facts"], {"acc/copy"}, task="copy") == "acc/copy"
    with pytest.raises(plan.PlanError, match="--task: no trial recorded acc/nope"):
        plan.choose_metric(objectives, ["facts"], {"acc/facts"}, task="nope")
    with pytest.raises(plan.PlanError, match="no accuracy objective"):
        plan.choose_metric(parse_objectives_tag("train_flops:min,loss/facts:min"), ["facts"], {"acc/facts"})


# ---------------------------------------------------------------------------------------------
# Hardware


def test_hardware_costs_and_profiles():
    h100 = hw.PROFILES["h100"]
    assert h100.hours(989e12 * 0.227 * 3600) == pytest.approx(1.0)
    assert h100.cost_usd(989e12 * 0.227 * 3600) == pytest.approx(2.50)
    assert hw.resolve(None) is h100 and hw.resolve("A100") is hw.PROFILES["a100"]
    section = {"name": "l4", "peak_flops_per_s": "1.21e14", "mfu": 0.3, "usd_per_hour": 0.8}
    mine = hw.resolve(None, section)
    assert (mine.name, mine.flops_per_s) == ("l4", pytest.approx(1.21e14 * 0.3))
    assert hw.resolve("l4", section) == mine and hw.resolve("cpu", section) is hw.PROFILES["cpu"]


@pytest.mark.parametrize("section, words", [
    ({"peak_flops_per_s": 1e14, "mfu": 1.5, "usd_per_hour": 1}, "hardware.mfu"),
    ({"peak_flops_per_s": 0, "mfu": 0.5, "usd_per_hour": 1}, "hardware.peak_flops_per_s"),
    ({"peak_flops_per_s": 1e14, "mfu": 0.5}, "hardware.usd_per_hour: missing"),
    ({"peak_flops_per_s": 1e14, "mfu": 0.5, "usd_per_hour": 1, "tflops": 3}, "hardware.tflops: unknown key"),
    ({"peak_flops_per_s": "fast", "mfu": 0.5, "usd_per_hour": 1}, "hardware.peak_flops_per_s"),
    ([1, 2], "hardware: expected a mapping"),
])
def test_bad_hardware_sections(section, words):
    with pytest.raises(hw.HardwareError, match=words):
        hw.from_section(section)
    with pytest.raises(hw.HardwareError, match="unknown profile"):
        hw.resolve("tpu")


# ---------------------------------------------------------------------------------------------
# Before a search: from the space alone


def test_space_outlook_counts_trials_and_costs(tmp_path, capsys):
    from optimix.core.space import load_space
    from optimix.search import cheapest_flops, trial_flops
    from optimix.trial.train import task_geometry

    space = load_space(QUICKSTART)
    doc = plan.space_outlook(space, hardware=hw.PROFILES["cpu"], geometry=task_geometry, budget_flops=3e12)
    flops = doc["trial_flops"]
    assert flops["cheapest"] == cheapest_flops(space)
    assert flops["dearest"] >= trial_flops(space, {"model.d_model": 128, "mixture.rare_freq": 0.1})
    assert flops["cheapest"] <= flops["mean"] <= flops["dearest"]
    assert doc["expected"]["trials"] == min(12, int(3e12 // flops["mean"]))
    assert doc["worst"]["trials"] == int(3e12 // flops["dearest"])
    assert doc["worst"]["cost_usd"] == pytest.approx(hw.PROFILES["cpu"].cost_usd(doc["worst"]["train_flops"]))
    assert doc["workers"] == 2

    text = (tmp_path / "space.yaml")
    text.write_text(Path(QUICKSTART).read_text()
                    + "hardware: {name: l4, peak_flops_per_s: 1.21e14, mfu: 0.3, usd_per_hour: 0.8}\n")
    cli_main(["plan", str(text), "--json", "--workers", "4"])
    out = json.loads(capsys.readouterr().out)
    assert out["hardware"]["name"] == "l4" and out["workers"] == 4
    assert out["expected"]["trials"] == 12 and out["budget_flops"] is None
    cli_main(["plan", str(text), "--hardware", "h100"])
    assert "h100" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--budget-flops", "1e3"], "below the cheapest trial"),
    (["--target-acc", "0.5"], "--target-acc: reads recorded trials"),
    (["--hardware", "tpu"], "unknown profile"),
])
def test_space_mode_errors_are_one_line(args, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["plan", QUICKSTART, *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# The command over recorded trials


def quickstart_trials(tokens: int = 2048):
    """Trial records as ``records.load_search`` returns them: quickstart configs at 12 points
    (3 widths x 4 frequencies), accuracy from a threshold law, and one failed trial."""
    from optimix.core.config import flatten
    from optimix.core.space import load_space
    from optimix.records.records import TrialRecord
    from optimix.search import trial_flops
    from optimix.trial.train import plan_trial

    space = load_space(QUICKSTART, [f"train.tokens={tokens}", "eval.size=64"])
    records = []
    for i, (d, f) in enumerate((d, f) for d in (32, 64, 128) for f in (0.003, 0.01, 0.03, 0.1)):
        point = {"model.d_model": d, "mixture.rare_freq": f}
        config = space.resolve(point)
        trial = plan_trial(config)
        acc = float(1 / (1 + np.exp(-4 * (np.log(f) - np.log(20 * trial.shape.params ** -0.5)))))
        metrics = {"params": trial.shape.params, "tokens": trial.tokens,
                   "train_flops": trial_flops(space, point), "acc/facts": round(acc, 3),
                   "acc/copy": 1.0}
        params = {k: str(v) for k, v in flatten(config.model_dump(mode="json")).items()}
        records.append(TrialRecord(f"run{i:02d}", str(i), "ok", False, params, metrics, point=point))
    records.append(TrialRecord("run-failed", "12", "failed", False, dict(records[0].params),
                               {"params": 1.0, "tokens": 1.0, "train_flops": 1.0}))
    return records


@pytest.fixture
def fake_search(monkeypatch):
    """``load_search`` answering from memory: the CLI path without an MLflow store."""
    from optimix.records import records

    state = {"records": quickstart_trials(), "objectives": parse_objectives_tag("acc/facts:max,train_flops:min")}

    def load(uri, experiment, run_id=None, storage_path=None):
        if experiment == "missing":
            raise records.TrackingError("--experiment: no experiment named 'missing' in sqlite:///x.db")
        return records.SearchRecord("parent", "tiny", state["objectives"], state["records"])

    monkeypatch.setattr(records, "load_search", load)
    return state


def test_plan_json_over_recorded_trials(fake_search, capsys):
    cli_main(["plan", "--budget-flops", "5e9", "--json", "--hardware", "cpu"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["metric"] == "acc/facts" and doc["task"] == "facts"
    assert doc["trials"] == {"recorded": 13, "ok": 12}
    records = {r.run_id: r for r in fake_search["records"]}
    best = max((r for r in records.values() if r.status == "ok" and r.metrics["train_flops"] <= 5e9),
               key=lambda r: (r.metrics["acc/facts"], -r.metrics["train_flops"]))
    assert doc["observed"]["run_id"] == best.run_id
    assert doc["observed"]["acc/facts"] == best.metrics["acc/facts"]
    assert doc["predicted"]["train_flops"] <= 5e9 * (1 + 1e-9)
    assert doc["hardware"]["name"] == "cpu" and doc["gpu_hours"] > 0 and doc["cost_usd"] > 0
    assert doc["frequency_vs_size"]["winner"] in ("frequency", "size")


def test_plan_text_answer_and_validation(fake_search, capsys):
    cli_main(["plan", "--target-acc", "0.8", "--validate"])
    out = capsys.readouterr().out
    for words in ("observed", "predicted", "threshold", "freq/size", "cost", "h100", "validate"):
        assert words in out
    cli_main(["plan", "--validate", "--task", "facts", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["validate"]["splits"]["config"]["method"] == "leave one config out"
    assert doc["validate"]["trials"] == 12 and doc["validate"]["splits"]["size"]["predicted"] == 12


@pytest.mark.parametrize("args, words", [
    (["--experiment", "missing", "--budget-flops", "1e9"], "no experiment named 'missing'"),
    ([], "give --budget-flops F or --target-acc A"),
    (["--budget-flops", "1e9", "--task", "nope"], "--task: no trial recorded acc/nope"),
    (["--budget-flops", "1e9", "--workers", "3"], "--workers: only with SPACE"),
    (["--budget-flops", "0"], "--budget-flops: expected a positive number"),
    (["--budget-flops", "1e9", "--hardware", "tpu"], "unknown profile 'tpu'"),
])
def test_recorded_mode_errors_are_one_line(fake_search, args, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["plan", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and err.count("\n") == 1


@pytest.mark.parametrize("change, words", [
    ("no trials", "has no trial"),
    ("all failed", "has no finished trial with acc/facts"),
    ("no objectives", "has no objectives recorded"),
])
def test_searches_that_cannot_be_planned(fake_search, change, words, capsys):
    if change == "no trials":
        fake_search["records"] = []
    elif change == "all failed":
        for r in fake_search["records"]:
            r.status = "failed"
    else:
        fake_search["objectives"] = []
    with pytest.raises(SystemExit) as exit_:
        cli_main(["plan", "--budget-flops", "1e10"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and err.count("\n") == 1


def test_verify_tree_rebuilds_a_valid_trial_config():
    from optimix.core.space import build_space

    record = quickstart_trials()[5]
    config = plan.Config(params=record.metrics["params"], rare_freq=0.05, tokens=4096, train_flops=0)
    trial = build_space(verify.verify_tree(record.params, config, record.metrics["params"])).base
    assert trial.mixture.rare_freq == 0.05 and trial.train.tokens == 4096 and trial.train.flops is None
    assert trial.model.d_model == 64 and trial.model.params is None and trial.model.d_ff is None
    bigger = plan.Config(params=3e5, rare_freq=0.05, tokens=4096, train_flops=0)
    trial = build_space(verify.verify_tree(record.params, bigger, record.metrics["params"])).base
    assert trial.model.params == 300_000


def test_verify_hands_the_recommended_config_to_the_trial_runner(fake_search, monkeypatch, capsys):
    from optimix.trial import train

    seen = []

    def fake_run(config):
        seen.append(config)
        plan_ = train.plan_trial(config)
        return train.TrialResult(status="ok", params=plan_.shape.params, non_embedding_params=0,
                                 tokens=plan_.tokens, train_flops=plan_.train_flops,
                                 accuracy={"facts": 0.5, "copy": 1.0})

    monkeypatch.setattr(train, "run_trial", fake_run)
    cli_main(["plan", "--budget-flops", "2e9", "--verify", "--verify-seeds", "1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    (config,) = seen
    pred = doc["predicted"]["config"]
    assert config.mixture.rare_freq == pytest.approx(pred["rare_freq"])
    assert config.train.tokens == pred["tokens"] and config.train.flops is None
    ver = doc["verify"]
    assert ver["achieved"] == 0.5 and ver["params"] == pred["params"]
    lo, hi = doc["predicted"]["trial_interval"]
    assert ver["within_interval"] == (lo <= 0.5 <= hi)
    cli_main(["plan", "--budget-flops", "2e9", "--verify"])
    assert "verify      trained" in capsys.readouterr().out
    seen.clear()  # by default, three fresh seeds: their mean against the mean's interval
    cli_main(["plan", "--budget-flops", "2e9", "--verify", "--json"])
    ver = json.loads(capsys.readouterr().out)["verify"]
    assert [c.seed for c in seen] == ver["seeds"] == [ver["seed"] + i for i in range(3)]
    assert ver["achieved_seeds"] == [0.5] * 3 and ver["checked_against"] == "interval"
    lo, hi = doc["predicted"]["interval"]
    assert ver["within_interval"] == (lo <= 0.5 <= hi) and len(ver["seeds_within_trial_interval"]) == 3


@pytest.mark.slow
def test_verify_trains_the_recommended_config(fake_search, capsys):
    """The real trial runner (torch): a few thousand tokens of the quickstart model."""
    cli_main(["plan", "--budget-flops", "2e9", "--verify", "--verify-seeds", "1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    ver = doc["verify"]
    assert ver["status"] == "ok" and 0 <= ver["achieved"] <= 1
    assert ver["tokens"] >= doc["predicted"]["config"]["tokens"]
    assert ver["predicted"] == doc["predicted"]["acc/facts"]


def test_plan_reads_a_real_mlflow_store(tmp_path, capsys):
    """The names in tracking.py, written by MlflowClient into SQLite, read back by the command."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient


    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("tiny")
    parent = client.create_run(exp, tags={metrics.ROLE: "search",
                                          metrics.OBJECTIVES: "acc/facts:max,train_flops:min"})
    for r in quickstart_trials():
        run = client.create_run(exp, tags={metrics.ROLE: "trial", metrics.PARENT: parent.info.run_id,
                                           metrics.STATUS: r.status, metrics.TRIAL_ID: r.trial_id})
        client.log_batch(run.info.run_id,
                         metrics=[Metric(k, float(v), 0, 0) for k, v in r.metrics.items()],
                         params=[Param("mixture.rare_freq", r.params["mixture.rare_freq"]),
                                 Param("mixture.rare_task", "facts")])
    cli_main(["plan", "--tracking-uri", uri, "--experiment", "tiny", "--budget-flops", "5e9", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["experiment"] == "tiny" and doc["search_run_id"] == parent.info.run_id
    assert doc["trials"] == {"recorded": 13, "ok": 12}
    assert doc["observed"]["acc/facts"] > 0 and doc["predicted"]["acc/facts"] > 0
    with pytest.raises(SystemExit) as exit_:
        cli_main(["plan", "--tracking-uri", uri, "--experiment", "nope", "--budget-flops", "5e9"])
    assert exit_.value.code == 2 and "no experiment named 'nope'" in capsys.readouterr().err
