"""More than two objectives, and objectives that aggregate tasks: a real search (Ray, Optuna,
MLflow) whose Pareto tags must equal an independent n-dimensional computation over what
MLflow recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from optimix.core import metrics
from optimix.core.config import SpaceError
from optimix.core.metrics import parse_objectives_tag
from optimix.core.space import build_space
from optimix.search import SearchOptions, run_search

from conftest import tiny_space


def tree(objectives, **search) -> dict:
    return tiny_space("three",
                      tasks={"background": {"n_facts": 200}, "facts": {},
                             "rev": {"kind": "reverse", "length": 2, "alphabet": 8}},
                      mixture={"rare_task": None, "rare_freq": None,
                               "rare": {"facts": {"dist": "loguniform", "low": 0.02, "high": 0.3},
                                        "rev": {"dist": "loguniform", "low": 0.02, "high": 0.3}}},
                      train={"lr": 0.01}, eval={"points": 1},
                      search={"objectives": objectives, "trials": 8, "sampler": "random",
                              "curve_candidates": False, "replicates": "off", **search})


def test_aggregate_objectives_are_parsed_to_one_spelling():
    config = build_space(tree(["acc/mean(facts, rev):max", "train_flops:min"])).base
    assert [o.metric for o in metrics.parse_objectives(config)] == ["acc/mean.facts.rev", "train_flops"]
    assert metrics.aggregates(config) == ["acc/mean.facts.rev"]
    with pytest.raises(SpaceError, match=r"^search.objectives.0: unknown task 'nope' in 'acc/mean.facts.nope'"):
        metrics.parse_objectives(build_space(tree(["acc/mean(facts,nope):max", "train_flops:min"])).base)


def dominated(values: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """By brute force: row i is dominated if some row is at least as good everywhere and
    better somewhere (``signs``: +1 to maximise, -1 to minimise)."""
    v = values * signs
    out = np.zeros(len(v), dtype=bool)
    for i in range(len(v)):
        for j in range(len(v)):
            if i != j and np.all(v[j] >= v[i]) and np.any(v[j] > v[i]):
                out[i] = True
    return out


@pytest.mark.slow
def test_three_objectives_tag_the_n_dimensional_frontier(tmp_path):
    objectives = ["acc/facts:max", "acc/mean(facts,rev):max", "train_flops:min"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_search(build_space(tree(objectives)), SearchOptions(
        tracking_uri=uri, storage_path=str(tmp_path / "runs")))
    client = MlflowClient(uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.tags["optimix.objectives"] == "acc/facts:max,acc/mean.facts.rev:max,train_flops:min"
    runs = [r for r in client.search_runs([parent.info.experiment_id], "tags.`optimix.role` = 'trial'")
            if r.data.tags["optimix.status"] == "ok"]
    assert len(runs) >= 6
    for r in runs:  # the aggregate is what it says, logged under an MLflow-safe name
        m = r.data.metrics
        assert m["acc/mean.facts.rev"] == pytest.approx((m["acc/facts"] + m["acc/rev"]) / 2)
    names = ["acc/facts", "acc/mean.facts.rev", "train_flops"]
    values = np.array([[r.data.metrics[n] for n in names] for r in runs])
    expected = ~dominated(values, np.array([1.0, 1.0, -1.0]))
    tagged = np.array([r.data.tags["optimix.pareto"] == "true" for r in runs])
    np.testing.assert_array_equal(tagged, expected)
    assert {row["run_id"] for row in summary.frontier} == {r.info.run_id for r, on in zip(runs, tagged, strict=True) if on}
    frontier_file = client.download_artifacts(summary.parent_run_id, "frontier.json", str(tmp_path))
    artifacts = {a.path for a in client.list_artifacts(summary.parent_run_id)}
    assert {"frontier.png", "frontier_2.png", "frontier.html"} <= artifacts
    assert {row["run_id"] for row in json.loads(open(frontier_file).read())} == {
        r.info.run_id for r, on in zip(runs, tagged, strict=True) if on}


def test_three_objective_plots_mark_the_n_dimensional_frontier():
    from optimix.plan import plots

    rows = [{"acc/a": a, "acc/b": b, "train_flops": f, "params": 1000.0, "name": str(i), "run_id": str(i),
             "pareto": on, "rare_freq": 0.01} for i, (a, b, f, on) in enumerate(
                 [(0.9, 0.1, 1e9, True), (0.1, 0.9, 2e9, True), (0.2, 0.05, 3e9, False)])]
    out = plots.frontier_plots(rows, parse_objectives_tag("acc/a:max,acc/b:max,train_flops:min"))
    assert set(out) == {"frontier.png", "frontier.html", "frontier_2.png"}
    assert all(out[k][:4] == b"\x89PNG" for k in ("frontier.png", "frontier_2.png"))


def test_the_grow_or_boost_map_needs_two_sizes_and_two_frequencies():
    from optimix.plan import plots

    def row(freq, params, acc):
        return {"acc/facts": acc, "train_flops": params * 10.0, "params": params, "rare_freq": freq,
                "name": "t", "run_id": "r", "pareto": False}

    grid = [row(f, n, a) for (f, n), a in zip([(0.01, 1e4), (0.04, 1e4), (0.01, 1e5), (0.04, 1e5)],
                                              [0.1, 0.9, 0.6, 1.0], strict=True)]
    assert plots.rare_map(grid, "acc/facts")[:4] == b"\x89PNG"
    assert plots.rare_map([r for r in grid if r["params"] == 1e4], "acc/facts") is None
    assert "rare_map.png" in plots.frontier_plots(grid, parse_objectives_tag("acc/facts:max,train_flops:min"))
    assert plots.words("acc/mean.facts.rev") == "mean accuracy over facts, rev"
    assert plots.words("train_flops") == "training FLOPs"


def test_pruning_and_the_default_sampler_in_three_objectives():
    """A curve point is pruned only when one candidate beats it, at no more FLOPs, in every
    other objective; ``auto`` picks Optuna's GP for three objectives, TPE past that."""
    from optimix.core import frontier
    from optimix.search.proposals import sampler_name

    objectives = parse_objectives_tag("acc/a:max,acc/b:max,train_flops:min")
    cands = [frontier.Candidate("x", 10, 10, True, {"acc/a": 0.9, "acc/b": 0.2, "train_flops": 1e9})]
    point = {"acc/a": 0.3, "acc/b": 0.5, "train_flops": 2e9}
    assert not frontier.dominated_at_equal_flops(point, cands, objectives, 0.05)  # better on b
    cands.append(frontier.Candidate("y", 10, 10, True, {"acc/a": 0.5, "acc/b": 0.7, "train_flops": 2e9}))
    assert frontier.dominated_at_equal_flops(point, cands, objectives, 0.05)
    assert not frontier.dominated_at_equal_flops({**point, "train_flops": 1.5e9}, cands, objectives, 0.05)
    three = build_space(tree(["acc/facts:max", "acc/rev:max", "train_flops:min"], sampler="auto"))
    four = build_space(tree(["acc/facts:max", "acc/rev:max", "acc/background:max", "train_flops:min"],
                            sampler="auto"))
    assert sampler_name(three) == "gp" and sampler_name(four) == "tpe"
    # Past 100 expected trials: TPE, except for one quality metric against FLOPs, which the
    # frontier sampler takes at any size (docs/benchmarks/public_bench.md, budget 400)
    large = {"trials": 400, "sampler": "auto"}
    assert sampler_name(build_space(tree(["acc/facts:max", "acc/rev:max", "train_flops:min"], **large))) == "tpe"
    assert sampler_name(build_space(tree(["acc/facts:max", "train_flops:min"], **large))) == "frontier"
