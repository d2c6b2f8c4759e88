"""Ties on the frontier (issue 14): trials that trained one effective config to the same
objective values are listed once, with their count, in the rows (``optimix frontier``,
``frontier.json``, the search summary) and the plots; each is still on the frontier."""

from __future__ import annotations

import json

from optimix import report
from optimix.core import frontier
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import parse_objectives_tag
from optimix.plan import plots
from optimix.records.records import TrialRecord

from conftest import tiny_space

OBJ = parse_objectives_tag("acc/x:max,train_flops:min")


def entry(trial_id: str, acc: float, flops: float, point: dict, seed: int = 0) -> LedgerEntry:
    """A finished (``ok``) ledger entry with one curve point at its final step."""
    curve = [{"step": 4, "tokens": 40, "train_flops": flops, "train_loss": 1.0, "train_s": 1.0,
              "accuracy": {"x": acc}, "loss": {"x": 1 - acc}}]
    params = {**point, "seed": seed, "train.tokens": 40}
    return LedgerEntry(trial_id=trial_id, run_id=f"run-{trial_id}", name=f"trial {trial_id}",
                       status="ok", point=dict(point), params=params, result={
                           "train_flops": flops, "params": 100, "non_embedding_params": 50, "tokens": 40,
                           "wall_s": 1.0 + len(trial_id), "train_s": 1.0, "tokens_per_s": 1.0, "steps": 4,
                           "planned_steps": 4, "accuracy": {"x": acc}, "loss": {"x": 1 - acc}, "curve": curve})


def rows_of(entries: list[LedgerEntry], identity: dict | None = None) -> list[dict]:
    """Frontier rows as the search builds them (``Driver.frontier_rows``), identity by params."""
    by_trial = {e.trial_id: e for e in entries}
    rows = []
    for c in frontier.front(frontier.candidates(entries, OBJ), OBJ):
        e = by_trial[c.trial_id]
        rows.append(frontier.row(trial_id=c.trial_id, run_id=e.run_id, name=e.name,
                                 metrics=c.metrics, params=e.result["params"], point=e.point,
                                 objectives=OBJ, final=c.final, step=c.step, steps=c.steps,
                                 trial_ids=c.trial_ids))
    if identity is None:
        identity = {e.trial_id: frontier.params_identity(e.params) for e in entries}
    return frontier.tied(rows, OBJ, identity, {e.trial_id: i for i, e in enumerate(entries)})


SAME = {"mixture.rare_freq": 0.1, "model.d_model": 16}
OTHER = {"mixture.rare_freq": 0.2, "model.d_model": 16}


def test_two_trials_of_one_config_with_equal_values_are_one_row_with_their_count():
    entries = [entry("a", 0.5, 4.0, SAME), entry("b", 0.5, 4.0, SAME), entry("c", 0.9, 8.0, OTHER)]
    rows = rows_of(entries)
    assert [(r["trial_id"], r["count"], r["trial_ids"]) for r in rows] == [
        ("a", 2, ["a", "b"]), ("c", 1, ["c"])]
    assert rows[0]["run_id"] == "run-a" and rows[0]["acc/x"] == 0.5
    # Each tied trial is still on the frontier: the tags stay exact per run.
    assert frontier.membership(frontier.candidates(entries, OBJ), OBJ) == {
        "a": (True, []), "b": (True, []), "c": (True, [])}


def test_equal_values_of_different_configs_stay_two_rows():
    entries = [entry("a", 0.5, 4.0, SAME), entry("b", 0.5, 4.0, OTHER)]
    rows = rows_of(entries)
    assert [(r["trial_id"], r["count"], r["trial_ids"]) for r in rows] == [
        ("a", 1, ["a"]), ("b", 1, ["b"])]


def test_another_seed_is_a_replicate_of_the_config_one_row_at_the_seeds_mean():
    entries = [entry("a", 0.5, 4.0, SAME), entry("b", 0.3, 4.0, SAME, seed=1)]
    rows = rows_of(entries)
    assert [(r["count"], r["trial_ids"], r["acc/x"]) for r in rows] == [(2, ["a", "b"], 0.4)]
    assert frontier.membership(frontier.candidates(entries, OBJ), OBJ) == {"a": (True, []), "b": (True, [])}


def test_the_row_is_the_first_finished_trials_and_the_identity_may_be_given():
    # "b" finished first (the ledger's order); an effective key ties points that differ.
    entries = [entry("b", 0.5, 4.0, OTHER), entry("a", 0.5, 4.0, SAME)]
    rows = rows_of(entries, identity={"a": "k", "b": "k"})
    assert [(r["trial_id"], r["run_id"], r["point"], r["trial_ids"]) for r in rows] == [
        ("b", "run-b", OTHER, ["b", "a"])]


def test_curve_points_are_left_as_front_lists_them():
    rows = [frontier.row(trial_id=t, run_id=f"run-{t}", name=t, metrics={"acc/x": 0.1, "train_flops": 1.0},
                         params=100, point={}, objectives=OBJ, final=False, step=2, steps=4)
            for t in ("a", "b")]
    assert frontier.tied(rows, OBJ, {"a": "k", "b": "k"}) == rows


def test_the_json_document_has_the_count_and_every_trial_id():
    entries = [entry("a", 0.5, 4.0, SAME), entry("b", 0.5, 4.0, SAME), entry("c", 0.5, 4.0, SAME)]
    doc = json.loads(json.dumps(rows_of(entries)))  # what frontier.json and --json hold
    assert len(doc) == 1
    assert doc[0]["count"] == 3 and doc[0]["trial_ids"] == ["a", "b", "c"]
    assert list(doc[0])[:4] == ["run_id", "trial_id", "count", "trial_ids"]


def test_the_search_driver_ties_by_effective_config():
    from optimix.core.space import build_space
    from optimix.search import effective_key
    from optimix.search.driver import Driver
    from optimix.search.proposals import Proposals

    space = build_space(tiny_space("ties", tasks={"copy": {}, "facts": {}}, train={"threads": None}, search=None))
    assert effective_key(space, SAME) != effective_key(space, OTHER)
    driver = Driver.__new__(Driver)  # only what frontier_rows reads
    driver.proposals, driver.objectives, driver.curve, driver.constraints = Proposals(space), OBJ, True, []
    driver.space = space
    driver.entries = [entry("a", 0.5, 4.0, SAME), entry("b", 0.5, 4.0, OTHER),
                      entry("c", 0.5, 4.0, SAME)]
    rows = driver.frontier_rows()
    assert [(r["trial_id"], r["count"], r["trial_ids"]) for r in rows] == [
        ("a", 2, ["a", "c"]), ("b", 1, ["b"])]


def record(trial_id: str, index: int, params: dict, acc: float = 0.5) -> TrialRecord:
    return TrialRecord(run_id=f"run-{trial_id}", trial_id=trial_id, status="ok", pareto=True,
                       params={k: str(v) for k, v in params.items()},
                       metrics={"acc/x": acc, "train_flops": 4.0, "params": 100.0},
                       name=f"trial-{index:03d} x={index}")


def test_optimix_frontier_ties_recorded_trials_by_their_params_in_finishing_order():
    # MLflow lists runs newest first: the row is still the first trial to finish.
    trials = [record("c", 2, SAME), record("b", 1, OTHER), record("a", 0, SAME)]
    rows = frontier.recorded_rows(trials, OBJ)
    assert [(r["trial_id"], r["run_id"], r["count"], r["trial_ids"]) for r in rows] == [
        ("a", "run-a", 2, ["a", "c"]), ("b", "run-b", 1, ["b"])]


def test_the_table_says_how_many_trials_a_row_stands_for(capsys):
    entries = [entry("a", 0.5, 4.0, SAME), entry("b", 0.5, 4.0, SAME), entry("c", 0.9, 8.0, OTHER)]
    report.frontier_table(rows_of(entries), OBJ)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("run-a") and lines[1].endswith("(2 trials)")
    assert lines[2].startswith("run-c") and "trials)" not in lines[2]


def test_plots_draw_a_tied_point_once_with_its_count():
    entries = [entry("a", 0.5, 4.0, SAME), entry("b", 0.5, 4.0, SAME), entry("c", 0.9, 8.0, OTHER),
               entry("d", 0.5, 4.0, OTHER)]
    membership = frontier.membership(frontier.candidates(entries, OBJ), OBJ)
    rows = plots.rows_from_entries(entries, membership, (), OBJ)
    assert [(r["trial_id"], r["count"], r["pareto"]) for r in rows] == [
        ("a", 2, True), ("c", 1, True), ("d", 1, True)]
    x, y = plots.axes_for(OBJ)
    page = plots.html(rows, x, y).decode()
    assert '"x2"' in page and "tied trials: a, b" in page
    assert plots.png(rows, x, y)[:4] == b"\x89PNG"
    recorded = [record("a", 0, SAME), record("b", 1, SAME)]
    assert [(r["trial_id"], r["count"]) for r in plots.rows_from_records(recorded, OBJ)] == [("a", 2)]
