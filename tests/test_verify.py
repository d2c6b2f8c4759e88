"""``optimix.plan.verify``'s small parts on hand-made tables: which recorded trial lends the config,
which seed the new trial gets, and which interval the achieved accuracy is judged against.
The same behaviour on a real search's records is in ``test_verify_records.py``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from optimix.core import fit
from optimix.plan import plan, verify


def table(rows: list[tuple[float, float, float]], status: list[str] | None = None) -> fit.TrialTable:
    """(params, rare_freq, tokens) rows; accuracy and FLOPs do not matter here."""
    return fit.TrialTable.from_columns(
        run_id=[f"r{i}" for i in range(len(rows))], params=[n for n, _, _ in rows],
        rare_freq=[f for _, f, _ in rows], tokens=[t for _, _, t in rows],
        train_flops=[6.0 * n * t for n, _, t in rows], acc=[0.5] * len(rows), status=status)


def config(params: float, rare_freq: float, tokens: float = 1e5) -> plan.Config:
    return plan.Config(params=params, rare_freq=rare_freq, tokens=tokens, train_flops=0.0)


# ---------------------------------------------------------------------------------------------
# The recorded trial that lends its config


def test_the_trial_nearest_in_size_then_frequency_lends_the_config():
    """Three trials share the nearest size: the one nearest the recommended frequency is taken,
    not the first of them (it set every other setting of the new trial)."""
    t = table([(3e4, 0.01, 1e5), (3e4, 0.1, 1e5), (3e4, 0.03, 1e5), (1e5, 0.1, 1e5)])
    assert verify.nearest_trial(t, config(3e4, 0.09)) == 1
    assert verify.nearest_trial(t, config(3e4, 0.012)) == 0
    assert verify.nearest_trial(t, config(5e4, 0.03)) == 2  # nearer 3e4 than 1e5 in log
    assert verify.nearest_trial(t, config(9e4, 0.01)) == 3  # size first, whatever the frequency


def test_sizes_within_a_tenth_of_a_percent_count_as_one_and_tokens_break_the_last_tie():
    t = table([(30_000, 0.1, 1e5), (30_010, 0.1, 4e5), (30_000, 0.1, 2e5)])
    assert verify.nearest_trial(t, config(30_000, 0.1, 3.9e5)) == 1
    assert verify.nearest_trial(t, config(30_000, 0.1, 1.9e5)) == 2


def test_only_finished_trials_lend_a_config():
    t = table([(3e4, 0.1, 1e5), (3e4, 0.02, 1e5)], status=["failed", "ok"])
    assert verify.nearest_trial(t, config(3e4, 0.1)) == 1
    with pytest.raises(fit.PlanError, match="no finished trial"):
        verify.nearest_trial(table([(3e4, 0.1, 1e5)], status=["failed"]), config(3e4, 0.1))


def test_a_run_missing_from_the_records_is_one_line():
    with pytest.raises(fit.PlanError, match="run r9 is in the trial table but not among"):
        verify.record_of([SimpleNamespace(run_id="r1")], "r9")


# ---------------------------------------------------------------------------------------------
# The new trial's seed


@pytest.mark.parametrize(("seeds", "fresh"), [
    (["0"] * 5, 1),
    (["0", "3", "1"], 4),
    ([], 0),
    ([None, "x", "2"], 3),  # a record without a seed param, or one that is not a seed, is skipped
])
def test_the_new_trial_gets_a_seed_no_recorded_trial_used(seeds, fresh):
    trials = [SimpleNamespace(params={} if s is None else {"seed": s}) for s in seeds]
    assert verify.fresh_seed(trials) == fresh


# ---------------------------------------------------------------------------------------------
# The answer's config and intervals


def test_the_recommended_config_ignores_entries_that_are_not_config_fields():
    got = verify.recommended({"params": 31392, "rare_freq": 0.09, "tokens": 400384,
                              "train_flops": 7.2e10, "d_model": 32, "note": "x"})
    assert got == plan.Config(params=31392.0, rare_freq=0.09, tokens=400384.0, train_flops=7.2e10)


@pytest.mark.parametrize(("value", "want"), [
    (None, None),
    ([], None),
    ([None, 0.5], None),  # as JSON writes a NaN bound
    ([math.nan, 0.5], None),
    ([0.1, math.inf], None),
    ([0.25, 0.75], [0.25, 0.75]),
    ((0, 1), [0.0, 1.0]),
])
def test_an_interval_with_a_missing_or_infinite_bound_is_none(value, want):
    assert verify.finite_interval(value) == want


# ---------------------------------------------------------------------------------------------
# A size between (or past) the recorded ones


SHAPED = {"model.d_model": "32", "model.n_layer": "2", "model.n_head": "2", "model.d_ff": "None",
          "model.params": "None", "model.tie_embeddings": "False", "shape.d_model": "32",
          "shape.n_layer": "2", "shape.n_head": "2", "shape.d_ff": "96", "shape.n_vocab": "72",
          "shape.n_ctx": "8"}


def count(shape: dict[str, int], n_vocab: int = 72, tie: bool = False) -> int:
    from optimix.core.flops import param_counts

    return param_counts(shape["d_model"], shape["n_layer"], shape["d_ff"], n_vocab, tie)[0]


@pytest.mark.parametrize("target", [5e3, 5e4, 6e4, 2e5, 1e6, 5e6])
def test_a_trial_given_its_shape_keeps_depth_and_heads_and_its_width_meets_the_size(target):
    """The quickstart's trials (two layers, two heads, the width searched): the shape rule
    would have built 17,400 params for 20,000 and 3,992,320 (5 layers) for 5e6; within 1% now."""
    from optimix.trial.model import default_d_ff

    shape = verify.scaled_shape(SHAPED, target)
    assert (shape["n_layer"], shape["n_head"]) == (2, 2)
    assert (shape["d_model"] // shape["n_head"]) % 2 == 0  # rotary embeddings need an even head dim
    assert abs(math.log(count(shape) / target)) < 0.01
    assert 0.75 <= shape["d_ff"] / default_d_ff(shape["d_model"]) <= 1.25


def test_a_non_default_mlp_width_scales_with_the_model_width():
    params = {**SHAPED, "shape.d_ff": "64", "shape.n_head": "4", "model.tie_embeddings": "True"}
    shape = verify.scaled_shape(params, 2e5)
    assert 0.75 <= shape["d_ff"] / (64 * shape["d_model"] / 32) <= 1.25 and shape["d_model"] % 8 == 0
    assert abs(math.log(count(shape, tie=True) / 2e5)) < 0.01


def test_the_tree_pins_the_scaled_shape_at_another_size_and_the_rule_where_the_trial_used_it():
    moved = verify.verify_tree(SHAPED, config(2e5, 0.05), 31392.0)["model"]
    assert moved["params"] is None and (moved["n_layer"], moved["n_head"]) == (2, 2)
    assert moved == {**moved, **verify.scaled_shape(SHAPED, 2e5)}
    by_rule = {**SHAPED, "model.params": "31392"}
    assert verify.verify_tree(by_rule, config(2e5, 0.05), 31392.0)["model"]["params"] == 200_000
    unshaped = {k: v for k, v in SHAPED.items() if not k.startswith("shape.")}
    assert verify.scaled_shape(unshaped, 2e5) is None
    assert verify.verify_tree(unshaped, config(2e5, 0.05), 31392.0)["model"]["params"] == 200_000
    own = verify.verify_tree(SHAPED, config(31392, 0.05), 31392.0)["model"]
    assert (own["d_model"], own["d_ff"], own["params"]) == (32, 96, None)
