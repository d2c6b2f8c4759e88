"""Replicates (issue 27): frontier configs retrained at new seeds, reported at their mean with
their spread and n, grouped in MLflow, checked, retrainable from the row, confirmable later."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from optimix.core import replicates
from optimix.core.config import Objective, ReplicatesConfig, SearchConfig
from optimix.core.replicates import Group, next_replicate, pooled_sd, seed_for, split, summarize

from cluster_fixtures import OPTIMIX
from conftest import Search, records_space

# ---------------------------------------------------------------------------------------------
# The arithmetic (pure)


def test_a_config_whose_seeds_split_says_how_many_learned_it():
    s = summarize([0.117, 0.004, 0.082, 0.098, 0.648, 0.535], "acc/rev", None)
    assert s.n == 6 and s.learned == (2, 0.535) and s.noise == "measured"
    assert math.isclose(s.mean, 0.2473, abs_tol=1e-3)
    assert s.interval[0] < s.mean < s.interval[1]
    assert "2 of 6 seeds learned it" in s.text()
    assert split([0.41, 0.45, 0.44]) is None  # a smooth task: no split


def test_one_seed_has_the_prior_or_the_pooled_spread_and_says_which():
    alone = summarize([0.5], "acc/x", None)
    assert alone.noise == "prior" and alone.sd is None and alone.interval == (0.0, 1.0)
    pooled = summarize([0.5], "acc/x", 0.05)
    assert pooled.noise == "pooled" and 0.0 < pooled.interval[0] < 0.5 < pooled.interval[1] < 1.0
    assert summarize([2.0], "loss/x", None).interval is None  # no prior for an unbounded metric


def test_the_90_percent_interval_covers_the_mean_about_90_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        vals = rng.normal(0.5, 0.1, size=3)
        lo, hi = summarize(vals.tolist(), "acc/x", 0.1).interval
        hits += lo <= 0.5 <= hi
    assert 0.86 <= hits / 2000 <= 0.97


def test_pooled_spread_uses_configs_with_two_seeds_or_more():
    assert pooled_sd([[0.5]]) is None
    assert math.isclose(pooled_sd([[0.4, 0.6], [0.9]]), math.sqrt(0.02))


def test_the_best_unconfirmed_frontier_config_is_retrained_at_a_seed_it_has_not_seen():
    groups = [Group("a", {"x": 1}, frozenset({0}), 0.9, 10.0),
              Group("b", {"x": 2}, frozenset({0, seed_for(0, 1)}), 0.95, 5.0),
              Group("c", {"x": 3}, frozenset({0}), 0.99, 1.0)]
    settings = ReplicatesConfig(seeds=2)
    got = next_replicate(groups, {"a", "b"}, settings, 0, lambda cost: True)
    assert got[0].config == "a" and got[1] == seed_for(0, 1)  # b has its 2 seeds, c is off the frontier
    assert next_replicate(groups, {"a"}, settings, 0, lambda cost: cost < 10) is None


def test_the_retrain_line_gives_a_searched_seed_once_as_its_seed_and_a_row_over_seeds_shows_none(capsys):
    """Where the space searches ``seed`` (a grid over seeds), the row of a config stands for
    all its seeds: its point shows no seed, and its retrain line sets the seed once (--seed)."""
    from optimix.report import frontier_table, retrain_line

    assert replicates.overrides({"seed": 1, "train.lr": 0.003}) == ["train.lr=0.003"]
    row = {"run_id": "r", "final": True, "acc/x": 0.5, "params": 100, "n": 3, "seeds": [3],
           "point": {"seed": 1, "train.lr": 0.003}, "overrides": ["train.lr=0.003"],
           "stats": {"acc/x": {"mean": 0.5, "sd": 0.1, "n": 3}}}
    assert retrain_line(row, "S.yaml") == "optimix train S.yaml --set train.lr=0.003 --seed 3"
    frontier_table([row, {**row, "n": 1, "stats": {}}], [Objective(metric="acc/x", mode="max")])
    first, second = capsys.readouterr().out.splitlines()[1::2]
    assert "seed=" not in first and "lr=0.003" in first
    assert "seed=1" in second  # one seed: the row is that trial


def test_auto_is_on_for_a_budget_or_more_than_a_handful_of_trials():
    assert replicates.settings(SearchConfig(trials=6)) is None
    assert replicates.settings(SearchConfig(trials=12)).seeds == 3
    assert replicates.settings(SearchConfig(trials=4, budget_flops=1e12)) is not None
    assert replicates.settings(SearchConfig(trials=40, replicates="off")) is None


# ---------------------------------------------------------------------------------------------
# A real search with replicates


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """A real five-trial search (two first points, then replicates at up to half the trials),
    then ``optimix frontier --confirm 1`` on it."""
    root = tmp_path_factory.mktemp("replicates")
    tree = records_space(trials=5, startup_trials=2, replicates={"seeds": 2, "max_share": 0.5},
                         points_to_evaluate=[{"model.d_model": 32, "mixture.rare_freq": 0.4},
                                             {"model.d_model": 16, "mixture.rare_freq": 0.05}])
    search = Search(root, tree)
    done = search.run("--seed", "0", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return search, done


def _groups(entries):
    out = {}
    for e in entries:
        out.setdefault(replicates.config_id(e.params), []).append(e)
    return out


def test_a_frontier_config_is_retrained_at_a_new_seed_and_grouped_in_mlflow(replicated):
    search, done = replicated
    entries = search.trials()
    groups = _groups(entries)
    twice = [g for g in groups.values() if len(g) > 1]
    assert twice, [e.name for e in entries]
    for group in twice:
        seeds = [e.params["seed"] for e in group]
        assert seeds[0] == 0 and seeds[1] == seed_for(0, 1) and len(set(seeds)) == len(seeds)
        assert all(e.point == group[0].point for e in group) and "seed=" in group[1].name
    client = MlflowClient(search.uri)
    runs = client.search_runs([search.parent().info.experiment_id], "tags.`optimix.role` = 'trial'")
    tags = {r.data.tags["optimix.trial_id"]: r.data.tags for r in runs}
    for cid, group in groups.items():
        assert {tags[e.trial_id]["optimix.config"] for e in group} == {cid}
    assert "± " in done.stdout and "retrain: optimix train" in done.stdout


def test_the_frontier_row_is_the_configs_mean_with_its_n_spread_and_retrain_line(replicated):
    search, _ = replicated
    out = subprocess.run([OPTIMIX, "frontier", "--json", "--experiment", "records", "--tracking-uri", search.uri,
                          "--storage-path", str(search.storage)], capture_output=True, text=True, cwd=search.root)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["final"]]
    by_id = {e.trial_id: e for e in search.trials()}
    multi = [r for r in rows if r["n"] > 1]
    assert multi, rows
    for r in rows:
        accs = [by_id[t].result["accuracy"]["facts"] for t in r["trial_ids"]]
        assert math.isclose(r["acc/facts"], sum(accs) / len(accs), rel_tol=1e-9)
        stat = r["stats"]["acc/facts"]
        assert stat["n"] == r["n"] == len(accs) and r["confirmed"] == (r["n"] >= 2)
        assert stat["interval"][0] <= stat["mean"] <= stat["interval"][1]
        assert r["seeds"] == [by_id[t].params["seed"] for t in r["trial_ids"]]
        assert sorted(r["overrides"]) == sorted(f"{k}={v}" for k, v in by_id[r["trial_id"]].point.items())


def test_the_retrain_line_trains_the_recorded_model_again(replicated):
    search, _ = replicated
    entry = next(e for e in search.trials() if e.status == "ok" and e.params["seed"] != 0)
    sets = [a for o in replicates.overrides(entry.point) for a in ("--set", o)]
    out = subprocess.run([OPTIMIX, "train", str(search.space), *sets, "--seed", str(entry.params["seed"]), "--json"],
                         capture_output=True, text=True, cwd=search.root, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["accuracy"]["facts"] == entry.result["accuracy"]["facts"]


def test_check_passes_and_catches_a_wrong_config_tag(replicated):
    search, _ = replicated
    assert search.check().returncode == 0, search.check().stdout
    client = MlflowClient(search.uri)
    run = client.search_runs([search.parent().info.experiment_id], "tags.`optimix.role` = 'trial'")[0]
    good = run.data.tags["optimix.config"]
    client.set_tag(run.info.run_id, "optimix.config", "0" * 16)
    try:
        bad = search.check()
        assert bad.returncode == 1 and "config" in bad.stdout
    finally:
        client.set_tag(run.info.run_id, "optimix.config", good)


def test_confirm_retrains_each_frontier_config_at_fresh_seeds_under_the_same_parent(replicated):
    search, _ = replicated
    before = search.trials()
    parent = search.parent().info.run_id
    out = subprocess.run([OPTIMIX, "frontier", "--confirm", "1", "--experiment", "records", "--tracking-uri",
                          search.uri, "--storage-path", str(search.storage)],
                         capture_output=True, text=True, cwd=search.root, env=search.env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    after = search.trials()
    added = after[len(before):]
    assert added and search.parent().info.run_id == parent
    old = {(replicates.config_id(e.params), e.params["seed"]) for e in before}
    for e in added:
        assert (replicates.config_id(e.params), e.params["seed"]) not in old  # a fresh seed
        assert replicates.config_id(e.params) in {replicates.config_id(b.params) for b in before}
    assert search.check().returncode == 0


@pytest.mark.parametrize("value, message", [
    ("maybe", "search.replicates: expected auto, off or {seeds: K, max_share: S}, got 'maybe'"),
    ({"seeds": 1}, "search.replicates.seeds: input should be greater than or equal to 2, got 1"),
    ({"seedz": 3}, "search.replicates.seedz: unknown key"),
    ({"seeds": 3, "max_share": 0}, "search.replicates.max_share: input should be greater than 0, got 0"),
])
def test_a_bad_replicates_key_is_one_line_naming_it(value, message):
    from optimix.core.config import SpaceError
    from optimix.core.space import build_space

    from conftest import tiny_space

    with pytest.raises(SpaceError) as err:
        build_space(tiny_space(search={"replicates": value}))
    assert str(err.value) == message


def test_off_and_on_read_as_yaml_booleans_mean_off_and_auto():
    from optimix.core.space import build_space

    from conftest import tiny_space

    assert build_space(tiny_space(search={"replicates": False})).base.search.replicates == "off"
    assert build_space(tiny_space(search={"replicates": True})).base.search.replicates == "auto"
