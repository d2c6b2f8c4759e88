"""``search.patience``: a search that stops proposing once the frontier stops moving.

The count (``frontier.since_moved``) on hand-made ledger entries; the printed lines; and one
real tiny search (real Ray, Optuna, MLflow) that patience ends, resumed, then checked.
"""

from __future__ import annotations

import pytest

from optimix import report
from optimix.cli import main as cli_main
from optimix.core.config import SpaceError
from optimix.core.frontier import since_moved
from optimix.core.metrics import parse_objectives_tag
from optimix.core.space import build_space
from optimix.search.driver import Progress
from optimix.search.run import SearchSummary, _check_same_space

from conftest import FAULTS, OBJ, curve_entry, tiny_space

LEDGER = [
    curve_entry("a", "ok", [(2, 0.2, 2.0), (4, 0.6, 4.0)]),  # the first result: moves it
    curve_entry("b", "failed", []),  # no candidates
    curve_entry("c", "ok", [(2, 0.1, 3.0), (4, 0.5, 5.0)]),  # every point beaten by a's
    curve_entry("d", "pruned", [(2, 0.3, 1.0)]),  # pruned, but its cheap curve point is on the frontier
    curve_entry("e", "ok", [(2, 0.2, 2.0), (4, 0.6, 4.0)]),  # ties a's points: on it, moves nothing
    curve_entry("f", "pruned", [(2, 0.05, 3.5)]),  # pruned and beaten
    curve_entry("g", "infeasible", []),
]


def test_since_moved_counts_the_trials_after_the_last_that_moved_the_frontier():
    got = [since_moved(LEDGER[:n], OBJ) for n in range(len(LEDGER) + 1)]
    assert got == [0, 0, 1, 2, 0, 1, 2, 3]


def test_a_curve_point_moves_the_frontier_only_when_curve_points_are_candidates():
    assert since_moved(LEDGER[:5], OBJ, curve=False) == 4  # only a's final result ever moved it
    assert since_moved(LEDGER[:5], parse_objectives_tag("acc/x:max,wall_s:min")) == 4  # no curve timings


def test_a_ledger_of_failures_never_moved_it():
    assert since_moved([curve_entry("a", "failed", []), curve_entry("b", "infeasible", [])], OBJ) == 2


def test_a_better_trial_after_a_stall_resets_the_count():
    ledger = [*LEDGER, curve_entry("h", "ok", [(2, 0.4, 2.0), (4, 0.7, 4.0)])]
    assert since_moved(ledger, OBJ) == 0


def test_patience_is_a_positive_int_and_may_change_on_resume():
    def tree(**search) -> dict:
        return tiny_space(search=search)

    assert build_space(tree(patience=3)).base.search.patience == 3
    assert build_space(tree()).base.search.patience is None
    with pytest.raises(SpaceError, match="search.patience"):
        build_space(tree(patience=0))
    _check_same_space(tree(patience=3), tree(patience=5))
    _check_same_space(tree(), tree(patience=5))
    with pytest.raises(SpaceError, match="search.prune_margin"):
        _check_same_space(tree(patience=3), tree(patience=3, prune_margin=0.1))


def test_the_progress_line_says_when_the_frontier_last_moved(capsys):
    show = report.progress_printer()
    show(Progress(done=7, planned=20, frontier=4, best=0.5, best_metric="acc/x", since_moved=3, patience=5))
    show(Progress(done=8, planned=20, frontier=5, best=0.6, best_metric="acc/x", since_moved=0))
    show(Progress(done=1, planned=20, failed=1, best_metric="acc/x", since_moved=None))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("trials 7/20 done, 0 running, 0 failed | FLOPs 0 | frontier 4, last moved 3 trials "
                        "ago (patience 5) | best acc/x 0.500")
    assert "| frontier 5, last moved by the last trial | best acc/x 0.600" in lines[1]
    assert "| frontier 0 | best acc/x -" in lines[2]


def summary(**fields) -> SearchSummary:
    base = dict(experiment="x", parent_run_id="p", tracking_uri="sqlite:///m.db", state_dir="/s",
                objectives=OBJ, frontier=[], trials=9, ok=9, pruned=0, failed=0, spent_flops=1.0,
                interrupted_flops=0.0, budget_flops=None, wall_s=1.0)
    return SearchSummary(**{**base, **fields})


def test_the_summary_says_the_search_stopped_early_and_why(capsys):
    report.search_summary(summary(patience=5, stalled=5))
    report.search_summary(summary(patience=5, stalled=6, moved_since_stalled=True))
    report.search_summary(summary(patience=5))
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if line.startswith("stopped early")]
    assert said == ["stopped early: the frontier did not move in the last 5 trials (search.patience: 5)",
                    "stopped early: the frontier did not move in the last 6 trials (search.patience: 5); "
                    "a trial that was still running then moved it"]


# ---------------------------------------------------------------------------------------------
# A real search that patience ends


@pytest.mark.slow
def test_a_real_search_stops_when_the_frontier_stops_moving_and_resume_keeps_it_stopped(
        tmp_path, capsys, ray_session):
    from optimix.search import SearchOptions, SearchState, run_search

    # One trial at a time: a good first point, then two that fail (they never move the
    # frontier). With patience 2 the search proposes nothing after them, far short of 10.
    points = [{"mixture.rare_freq": 0.3, "model.d_model": 16, "train.fault": "none"},
              {"mixture.rare_freq": 0.05, "model.d_model": 16, "train.fault": "raise"},
              {"mixture.rare_freq": 0.05, "model.d_model": 32, "train.fault": "nan"}]
    tree = tiny_space(train={"fault": {**FAULTS, "values": ["none", "raise", "nan"]}},
                      search={"trials": 10, "sampler": "random", "max_concurrent": 1, "patience": 2,
                              "points_to_evaluate": points})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    seen: list[tuple[int, int | None]] = []
    options = SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "runs"),
                            progress=lambda p: seen.append((p.done, p.since_moved)))
    done = run_search(build_space(tree), options)

    assert done.trials == 3 < 10
    assert (done.ok, done.failed, done.stalled, done.patience) == (1, 2, 2, 2)
    assert not done.moved_since_stalled
    assert (1, 0) in seen and (2, 1) in seen and seen[-1] == (3, 2)
    entries = SearchState.latest(tmp_path / "runs", "tiny").trials()
    assert since_moved(entries, parse_objectives_tag("acc/facts:max,train_flops:min")) == 2
    report.search_summary(done)
    out = capsys.readouterr().out
    assert "stopped early: the frontier did not move in the last 2 trials (search.patience: 2)" in out

    # --resume counts from the ledger: still stalled, nothing more runs (patience may change).
    tree["search"]["patience"] = 1
    again = run_search(build_space(tree), SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "runs"),
                                                        resume=True))
    assert again.trials == 3 and again.stalled == 2 and again.patience == 1
    assert again.parent_run_id == done.parent_run_id

    try:
        cli_main(["check", "--storage-path", str(tmp_path / "runs"), "--tracking-uri", uri])
        code = 0
    except SystemExit as err:
        code = err.code
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[-1].endswith(": no violations")
    assert "3 ledger trials, 3 MLflow child runs, 3 Optuna trials" in out[-1]
