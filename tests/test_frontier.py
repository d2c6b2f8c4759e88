"""Frontier candidates (optimix.core.frontier): final results and learning-curve points."""

from __future__ import annotations

import math

import pytest

from optimix.core.frontier import (
    Candidate,
    candidates,
    dominated_at_equal_flops,
    front,
    hypervolume,
    membership,
    recorded_rows,
    row,
)
from optimix.core.metrics import parse_objectives_tag
from optimix.records.records import TrialRecord

from conftest import OBJ, curve_entry


def test_ok_trials_give_their_final_and_earlier_points_pruned_ones_their_points_failed_none():
    entries = [curve_entry("a", "ok", [(2, 0.2, 2.0), (4, 0.6, 4.0)]),
               curve_entry("b", "pruned", [(2, 0.1, 3.0)]),
               curve_entry("c", "failed", [(2, 0.9, 1.0)]),
               curve_entry("d", "infeasible", [(2, 0.9, 1.0)])]
    got = {(c.trial_id, c.step, c.final) for c in candidates(entries, OBJ)}
    assert got == {("a", 4, True), ("a", 2, False), ("b", 2, False)}
    assert {(c.trial_id, c.final) for c in candidates(entries, OBJ, curve=False)} == {("a", True)}


def test_curve_points_are_left_out_when_an_objective_is_not_known_at_them():
    entries = [curve_entry("a", "ok", [(2, 0.2, 2.0), (4, 0.6, 4.0)])]
    timed = parse_objectives_tag("acc/x:max,wall_s:min")
    assert [c.final for c in candidates(entries, timed)] == [True]


def test_a_cheap_curve_point_joins_the_frontier_and_membership_says_which():
    entries = [curve_entry("a", "ok", [(2, 0.5, 2.0), (4, 0.6, 4.0)]),
               curve_entry("b", "ok", [(2, 0.1, 3.0), (4, 0.9, 6.0)])]
    cands = candidates(entries, OBJ)
    assert membership(cands, OBJ) == {"a": (True, [2]), "b": (True, [])}


def test_ties_list_a_final_result_once_and_one_curve_point_per_value():
    c = [Candidate("b", 1, 4, False, {"acc/x": 0.0, "train_flops": 1.0}),
         Candidate("a", 1, 4, False, {"acc/x": 0.0, "train_flops": 1.0}),
         Candidate("a", 4, 4, True, {"acc/x": 0.5, "train_flops": 4.0}),
         Candidate("c", 2, 4, False, {"acc/x": 0.5, "train_flops": 4.0}),
         Candidate("c", 4, 4, True, {"acc/x": 0.9, "train_flops": 8.0}),
         Candidate("d", 4, 4, True, {"acc/x": 0.9, "train_flops": 8.0})]
    assert [(x.trial_id, x.step) for x in front(c, OBJ)] == [("a", 1), ("a", 4), ("c", 4), ("d", 4)]


def test_hypervolume_is_the_area_in_log_flops_and_grows_with_a_better_point():
    one = [Candidate("a", 4, 4, True, {"acc/x": 0.5, "train_flops": 10.0})]
    assert hypervolume(one, "acc/x", 1000.0) == pytest.approx(0.5 * 2)  # 2 decades x 0.5
    two = one + [Candidate("b", 2, 4, False, {"acc/x": 0.25, "train_flops": 1.0})]
    assert hypervolume(two, "acc/x", 1000.0) == pytest.approx(1.0 + 0.25 * 1)
    assert hypervolume([], "acc/x", 1000.0) == 0.0


def test_dominated_at_equal_flops_needs_a_point_no_dearer_and_better_by_the_margin():
    front_ = [Candidate("a", 4, 4, True, {"acc/x": 0.5, "train_flops": 10.0})]
    assert dominated_at_equal_flops({"acc/x": 0.4, "train_flops": 10.0}, front_, OBJ, 0.05)
    assert not dominated_at_equal_flops({"acc/x": 0.46, "train_flops": 10.0}, front_, OBJ, 0.05)
    assert not dominated_at_equal_flops({"acc/x": 0.0, "train_flops": 9.0}, front_, OBJ, 0.05)
    assert not dominated_at_equal_flops({"acc/x": math.nan, "train_flops": 20.0}, front_, OBJ, 0.0)


def test_a_frontier_row_keeps_its_keys_in_order_and_the_objectives_only():
    got = row(trial_id="t1", run_id="r1", name="n", metrics={"acc/x": 0.5, "wall_s": 3.0},
              params=100, point={"model.d_model": 64}, objectives=OBJ, final=False, step=2, steps=4)
    assert list(got) == ["run_id", "trial_id", "count", "trial_ids", "name", "final", "step", "steps",
                         "acc/x", "train_flops", "params", "point"]
    assert got["acc/x"] == 0.5 and got["train_flops"] is None and got["point"] == {"model.d_model": 64}
    final = row(trial_id="t1", run_id="r1", name="n", metrics={"acc/x": 0.5}, params=100, point={})
    assert list(final) == ["run_id", "trial_id", "count", "trial_ids", "name", "final", "acc/x",
                           "params", "point"]
    assert final["count"] == 1 and final["trial_ids"] == ["t1"]


def test_recorded_rows_list_final_results_on_the_frontier_then_curve_points():
    def record(trial_id, status, pareto, steps=()):
        return TrialRecord(run_id=f"r-{trial_id}", trial_id=trial_id, status=status, pareto=pareto,
                           params={}, metrics={"acc/x": 0.5, "train_flops": 4.0, "params": 100.0},
                           name=trial_id, pareto_steps=list(steps),
                           curve={s: {"acc/x": 0.1, "train_flops": 1.0, "params": 100.0} for s in steps})

    trials = [record("a", "ok", True, [2]), record("b", "ok", False), record("c", "failed", True),
              record("d", "pruned", False, [1])]
    rows = recorded_rows(trials, OBJ)
    assert [(r["trial_id"], r["final"], r.get("step")) for r in rows] == [
        ("a", True, None), ("a", False, 2), ("d", False, 1)]
    assert rows[1]["acc/x"] == 0.1 and rows[1]["params"] == 100.0
