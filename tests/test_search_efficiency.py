"""The search-efficiency replay, on a grid the real pipeline trained (benchmarks/spaces/dev)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import search_efficiency as se  # noqa: E402

from optimix.search import effective_key  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return se.Table.load(ROOT / "benchmarks" / "spaces" / "dev" / "efficiency_second.yaml")


def test_the_grid_table_holds_every_grid_point_with_its_curve(table):
    assert len(table.results) == 8 * 6
    doc = table.result({"mixture.rare_freq": 0.2, "model.d_model": 32})
    assert doc["status"] == "ok" and len(doc["curve"]) == 4
    assert doc["curve"][-1]["train_flops"] == doc["train_flops"]
    # A proposal between grid values is answered by the nearest (in log scale for the frequency).
    assert table.snap({"mixture.rare_freq": 0.19, "model.d_model": 40}) in {(0.2, 32), (0.2, 48)}


def test_pruning_in_the_replay_keeps_the_first_part_of_the_curve(table):
    from optimix.core import frontier
    from optimix.core.entry import LedgerEntry

    objectives = table.space.spec.objectives
    best = table.result({"mixture.rare_freq": 0.2, "model.d_model": 16})
    entries = [LedgerEntry(trial_id="a", status="ok", result=best)]
    front = frontier.front(frontier.candidates(entries, objectives), objectives)
    search = se.load_space(table.path, ["search.prune=dominated"]).base.search
    worse = se.prune(table.result({"mixture.rare_freq": 0.005, "model.d_model": 16}), front, objectives, search)
    assert worse["status"] == "pruned"
    assert worse["curve"][-1]["step"] / worse["planned_steps"] >= search.prune_from
    assert worse["train_flops"] < best["train_flops"]


def test_the_default_search_finds_the_frontier_without_training_a_config_twice(table, monkeypatch):
    from optimix.search.searcher import OptimixSearcher

    seen = []
    original = OptimixSearcher.conclude

    def conclude(self, trial_id, result, error):  # every trial the searcher records
        entries = original(self, trial_id, result, error)
        seen.extend(effective_key(table.space, e.point) for e in entries)
        return entries

    monkeypatch.setattr(OptimixSearcher, "conclude", conclude)
    budget = 0.15 * table.total_flops()
    run = se.replay(table, "auto", 0, budget)
    assert run["picked"] == "frontier"
    assert len(seen) == run["trials"] and len(set(seen)) == len(seen)
    assert run["spent"] <= budget
    assert run["hv"] / se.grid_hv(table) >= 0.9
