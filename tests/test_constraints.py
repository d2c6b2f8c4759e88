"""Outcome constraints (``search.constraints``): parsed with one-line errors, told to the
samplers, and a trial that misses one is tagged so and never on the frontier. The end-to-end
test runs two real searches over the same points, one without and one with a constraint
placed between what the two models measured, and shows the frontier change."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from optimix.cli import main as cli_main
from optimix.core import frontier, metrics
from optimix.core.config import SpaceError
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import parse_objectives_tag
from optimix.core.space import build_space
from optimix.search import SearchOptions, run_search

from conftest import tiny_space


def tree(constraints=(), sampler: str = "tpe") -> dict:
    points = [{"model.d_model": 16}, {"model.d_model": 64}]
    return tiny_space("constrained", tasks={"background": {}, "facts": {}}, mixture={"rare_freq": 0.2},
                      model={"d_model": {"dist": "choice", "values": [16, 64]}},
                      train={"tokens": 40_000, "lr": 0.01}, eval={"size": 128},
                      search={"trials": 2, "sampler": sampler, "points_to_evaluate": points,
                              "constraints": list(constraints)})


# ---------------------------------------------------------------------------------------------
# Parsing and the frontier, on ledger entries


@pytest.mark.parametrize(("text", "message"), [
    ("acc/background => 0.2", "search.constraints.0: expected 'metric >= value'"),
    ("acc/nope >= 0.2", "search.constraints.0: unknown metric 'acc/nope'"),
    ("acc/background >= high", "search.constraints.0: 'high' is not a number"),
    ("acc/background >= nan", "search.constraints.0: the bound must be a finite number"),
])
def test_bad_constraints_name_their_key(text, message):
    with pytest.raises(SpaceError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        metrics.parse_constraints(build_space(tree([text])).base)


@pytest.mark.parametrize(("key", "values", "message"), [
    ("constraints", ["acc/nope >= 0.1"], "search.constraints.0: unknown metric 'acc/nope'"),
    ("constraints", ["params < 1e9", "acc/facts => 0.1"], "search.constraints.1: expected 'metric >= value'"),
    ("constraints", ["acc/facts >= nan"], "search.constraints.0: the bound must be a finite number"),
    ("constraints", ["acc/facts >= inf"], "search.constraints.0: the bound must be a finite number"),
    ("constraints", ["acc/mean(facts) >= 0.1"], "search.constraints.0: 'acc/mean.facts' aggregates one task"),
    ("constraints", ["acc/mean(facts,facts) >= 0.1"], "search.constraints.0: 'acc/mean.facts.facts' names a task twice"),
    ("constraints", ["loss/max(facts,nope) <= 2"], "search.constraints.0: unknown task 'nope'"),
    ("objectives", ["acc/mean(facts):max", "train_flops:min"], "search.objectives.0: 'acc/mean.facts' aggregates one"),
    ("objectives", ["acc/facts:max", "acc/min(nope,facts):max"], "search.objectives.1: unknown task 'nope'"),
])
def test_bad_constraints_and_objectives_are_refused_when_the_space_is_loaded(key, values, message):
    """``optimix validate`` (the loader) refuses them: a search never starts with one."""
    bad = tree()
    bad["search"][key] = values
    with pytest.raises(SpaceError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        build_space(bad)


def test_an_aggregate_of_two_tasks_loads():
    good = tree(["acc/mean(facts,background) >= 0.1"])
    assert metrics.parse_constraints(build_space(good).base)[0].metric == "acc/mean.facts.background"


def test_a_search_refused_for_its_constraints_writes_nothing(tmp_path, capsys, monkeypatch):
    """Refused before an experiment, a state folder or a parent run exists; so a --resume
    after it finds no search to take up, and writes nothing either."""
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(tree()))
    common = ["--storage-path", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
              "--set", "train.tokens=2000"]
    for extra in ([], ["--resume"]):
        with pytest.raises(SystemExit) as done:
            cli_main(["search", str(space), *common, *extra, "--set", 'search.constraints=["acc/nope >= 0.1"]'])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert err == "error: search.constraints.0: unknown metric 'acc/nope' (e.g. acc/background, " \
                      "acc/facts, train_flops, params)\n"
    with pytest.raises(SystemExit) as done:
        cli_main(["search", str(space), *common, "--resume"])
    assert done.value.code == 2
    assert capsys.readouterr().err.startswith("error: --resume: no search of 'constrained' under ")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_resume_refuses_when_the_latest_search_folder_is_gone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(tree()))
    (tmp_path / "runs" / "constrained").mkdir(parents=True)
    (tmp_path / "runs" / "constrained" / "latest").write_text("20260101T000000000000Z")
    with pytest.raises(SystemExit) as done:
        cli_main(["search", str(space), "--storage-path", str(tmp_path / "runs"), "--resume",
                  "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: the latest search of 'constrained' (") and err.count("\n") == 1
    assert "is gone" in err and not (tmp_path / "mlflow.db").exists()


def test_violation_is_optuna_style_and_strict_bounds_miss_on_equality():
    c = metrics.parse_constraint("acc/background >= 0.2")
    assert c.violation({"acc/background": 0.1}) == pytest.approx(0.1)
    assert c.violation({"acc/background": 0.3}) == pytest.approx(-0.1)
    assert c.violation({}) == float("inf")
    assert metrics.parse_constraint("params < 1000").violation({"params": 1000.0}) > 0
    assert metrics.parse_constraints_tag("acc/a >= 0.2; params < 1e+06") == [
        metrics.Constraint("acc/a", ">=", 0.2), metrics.Constraint("params", "<", 1e6)]


def entry(trial_id: str, flops: float, acc: float, background: float) -> LedgerEntry:
    result = {"train_flops": flops, "params": 1.0, "non_embedding_params": 1.0, "tokens": 1.0,
              "wall_s": 1.0, "train_s": 1.0, "tokens_per_s": 1.0, "steps": 10,
              "accuracy": {"facts": acc, "background": background}, "loss": {"facts": 1.0, "background": 1.0},
              "curve": [{"step": 5, "tokens": 0.5, "train_flops": flops / 2, "train_loss": 2.0,
                         "accuracy": {"facts": acc / 2, "background": background / 2},
                         "loss": {"facts": 1.0, "background": 1.0}}]}
    return LedgerEntry(trial_id=trial_id, status="ok", result=result)


def test_a_candidate_that_misses_a_constraint_is_never_on_the_frontier():
    objectives = parse_objectives_tag("acc/facts:max,train_flops:min")
    entries = [entry("small", 1e9, 0.9, 0.1), entry("large", 1e10, 0.95, 0.5)]
    free = {(c.trial_id, c.final) for c in frontier.front(frontier.candidates(entries, objectives), objectives)}
    assert ("small", True) in free and ("small", False) in free
    rule = [metrics.parse_constraint("acc/background >= 0.2")]
    held = frontier.front(frontier.candidates(entries, objectives, True, rule), objectives)
    # the large model's final (0.5) and its curve point (0.25) meet it; nothing of the small one
    assert {(c.trial_id, c.final) for c in held} == {("large", True), ("large", False)}


@pytest.mark.parametrize("trials, fitted", [(40, True), (3, False)])
def test_a_plan_with_no_trial_meeting_the_constraints_says_so(trials, fitted, capsys):
    """Whether or not the fit over every trial succeeds, the constraints line names them and
    says that nothing answers from them."""
    import numpy as np

    from optimix import report
    from optimix.core import fit, hardware
    from optimix.plan import plan

    sim = fit.simulate_trials(40, np.random.default_rng(0)).take(np.arange(trials))
    table = fit.TrialTable(**{n: getattr(sim, n) for n in fit._COLUMNS if n != "met"}, met=np.zeros(trials, bool))
    doc = plan.answer(table, metric="acc/x", budget_flops=float(np.median(sim.train_flops)),
                      hardware=hardware.PROFILES["cpu"], constraints=["acc/background > 1"])
    assert doc["constraints"]["met"] == 0 and doc["constraints"]["constraints"] == ["acc/background > 1"]
    assert doc["observed"] is None and doc["predicted"] is None and (doc["fit"] is not None) == fitted
    report.plan(doc | {"experiment": "e", "search_run_id": "r"})
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("constraints"))
    assert line.startswith(f"constraints none of the {trials} finished trials met the search's constraints "
                           "(acc/background > 1): no answer, recorded or predicted")
    assert ("fitted on all of them" in line) == fitted


# ---------------------------------------------------------------------------------------------
# End to end: real Ray, Optuna and MLflow


def two_rare(constraints=()) -> dict:
    """Two rare tasks (the facts' share searched), two model sizes: a 2 x 2 grid."""
    base = tree(constraints)
    base["tasks"]["rev"] = {"kind": "reverse", "length": 2, "alphabet": 8}
    base["mixture"] = {"rare": {"facts": {"dist": "choice", "values": [0.05, 0.2]}, "rev": 0.1}}
    base["search"].update(sampler="grid", trials=4)
    del base["search"]["points_to_evaluate"]
    return base


def by_width(client: MlflowClient, experiment: str) -> dict[int, list]:
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              "tags.`optimix.role` = 'trial'")
    out: dict[int, list] = {}
    for r in runs:
        out.setdefault(json.loads(r.data.tags["optimix.point"])["model.d_model"], []).append(r)
    return out


@pytest.mark.slow
def test_a_constraint_changes_the_frontier_and_the_plan_of_a_real_search(tmp_path, capsys):
    """Two real searches over the same grid (two rare tasks, two sizes): one free, one that
    holds the background to a level only the larger model reached in the first. The frontier
    loses the small model, every layer is told (MLflow tags, Optuna, optimix check), and
    optimix plan answers per rare task, over that task's own share, only with what met it."""
    from optimix.core import hardware
    from optimix.plan import plan
    from optimix.records.records import load_search

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_search(build_space(two_rare()), SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "a"),
                                                      experiment="free"))
    client = MlflowClient(uri)
    free = by_width(client, "free")
    background = {w: [r.data.metrics["acc/background"] for r in runs] for w, runs in free.items()}
    assert max(background[16]) < min(background[64]), background  # the setup: the larger model knows more
    assert any(r.data.tags["optimix.pareto"] == "true" for r in free[16])  # the cheapest, unconstrained
    assert all("optimix.constraints_met" not in r.data.tags for rs in free.values() for r in rs)

    rule = f"acc/background >= {(max(background[16]) + min(background[64])) / 2:.6f}"
    held = run_search(build_space(two_rare([rule])), SearchOptions(
        tracking_uri=uri, storage_path=str(tmp_path / "b"), experiment="held"))
    parent = client.get_run(held.parent_run_id)
    # MLflow 3 opens the experiment on its training runs, not on a GenAI traces page
    assert client.get_experiment_by_name("held").tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.tags["optimix.constraints"] == str(metrics.parse_constraint(rule))
    runs = by_width(client, "held")
    assert all(r.data.tags["optimix.constraints_met"].startswith("false: acc/background >=") for r in runs[16])
    assert all(r.data.tags["optimix.constraints_met"] == "true" for r in runs[64])
    assert all(r.data.tags["optimix.pareto"] == "false" and r.data.tags["optimix.status"] == "ok"
               for r in runs[16])
    assert held.frontier and {r["run_id"] for r in held.frontier} <= {r.info.run_id for r in runs[64]}
    # curve points sit on MLflow's time axis at the time each was measured
    history = sorted(client.get_metric_history(runs[64][0].info.run_id, "curve/train_loss"), key=lambda m: m.step)
    assert len(history) == 2 and history[0].timestamp < history[1].timestamp

    # Optuna was told: each trial carries its constraint values, <= 0 where met
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(held.state_dir) / "optuna.journal")))
    (name,) = optuna.get_all_study_names(storage)
    told = sorted(t.user_attrs[metrics.CONSTRAINT_ATTR][0] for t in optuna.load_study(
        study_name=name, storage=storage).trials)
    assert told[1] <= 0 < told[2]
    if hasattr(optuna.Trial, "set_constraint"):  # Optuna 5: what its samplers read
        study = optuna.load_study(study_name=name, storage=storage)
        assert sorted(v for t in study.trials for v in t.constraints.values()) == pytest.approx(told)
    # optimix check recomputes the frontier with the constraint: the tags agree
    cli_main(["check", "--tracking-uri", uri, "--experiment", "held", "--storage-path", str(tmp_path / "b")])

    record = load_search(uri, "held")
    assert {t.constraints_met for t in record.trials} == {True, False}
    _, table = plan.search_table(record, "facts")
    assert sorted(set(table.rare_freq)) == [0.05, 0.2]  # the facts task's own share
    head_rev, table_rev = plan.search_table(record, "rev")
    assert set(table_rev.rare_freq) == {0.1} and head_rev["metric"] == "acc/rev"
    doc = plan.answer(table, metric="acc/facts", budget_flops=1e15, hardware=hardware.PROFILES["cpu"])
    assert doc["constraints"]["met"] == 2 and doc["constraints"]["missed"] == 2
    assert doc["observed"]["run_id"] in {t.run_id for t in record.trials if t.constraints_met}
    if doc["predicted"] is not None:
        assert doc["predicted"]["config"]["params"] in doc["constraints"]["sizes"]
    capsys.readouterr()
    cli_main(["plan", "--tracking-uri", uri, "--experiment", "held", "--task", "facts", "--budget-flops", "1e15"])
    assert "met the search's constraints" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["train_flops", "params"])
def test_a_proposal_known_to_miss_a_constraint_is_recorded_infeasible_without_training(tmp_path, capsys, metric):
    """A bound on a metric the plan fixes (FLOPs, parameters) between the two sizes' values:
    the larger model is recorded infeasible, charged nothing, and never reaches Ray."""
    from optimix.search import SearchState
    from optimix.search.proposals import propose

    space = build_space(tree())
    small, large = (propose(space, {"model.d_model": d}).plan.known_metrics()[metric] for d in (16, 64))
    rule = f"{metric} <= {(small + large) / 2:.6g}"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_search(build_space(tree([rule], sampler="random")), SearchOptions(
        tracking_uri=uri, storage_path=str(tmp_path / "runs"), experiment="pre"))
    trials = {e.point["model.d_model"]: e for e in SearchState(Path(summary.state_dir)).trials()}
    assert trials[16].status == "ok" and trials[16].train_flops > 0
    infeasible = trials[64]
    assert infeasible.status == "infeasible" and infeasible.result["train_flops"] == 0.0
    assert infeasible.error.startswith(f"infeasible before training: {metric} ")
    assert infeasible.node is None and infeasible.result["steps"] == 0  # no worker ran it
    assert summary.spent_flops == trials[16].train_flops and summary.ok == 1
    cli_main(["check", "--tracking-uri", uri, "--experiment", "pre", "--storage-path", str(tmp_path / "runs")])
    assert capsys.readouterr().out.strip().endswith(": no violations")


@pytest.mark.slow
def test_a_real_search_no_trial_of_which_meets_its_constraints_plans_saying_so(tmp_path, capsys):
    """A bound no accuracy can reach: every trial misses it, and optimix plan says so for a task
    it can fit (facts, two shares) and for one it cannot (rev, one share)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_search(build_space(two_rare(["acc/background > 1"])), SearchOptions(
        tracking_uri=uri, storage_path=str(tmp_path / "runs"), experiment="unmet"))
    for task, fitted in (("facts", True), ("rev", False)):
        capsys.readouterr()
        cli_main(["plan", "--tracking-uri", uri, "--experiment", "unmet", "--task", task, "--budget-flops", "1e15"])
        out = capsys.readouterr().out
        assert ("constraints none of the 4 finished trials met the search's constraints (acc/background > 1): "
                "no answer, recorded or predicted") in out, out
        assert ("law " in out) == fitted, out
        cli_main(["plan", "--tracking-uri", uri, "--experiment", "unmet", "--task", task, "--budget-flops", "1e15",
                  "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert doc["constraints"]["met"] == 0 and doc["constraints"]["constraints"] == ["acc/background > 1"]


TWO_RARE = Path(__file__).resolve().parents[1] / "search_spaces" / "two_rare.yaml"
# Four points of search_spaces/two_rare.yaml: acc/rev is near 0.5 only at 17,304 params, and
# the two trials that meet acc/background >= 0.1 are at 45,480 and 109,632 params.
TWO_RARE_POINTS = [{"mixture.rare.facts": 0.0268, "mixture.rare.rev": 0.0954, "model.params": 17000},
                   {"mixture.rare.facts": 0.0220, "mixture.rare.rev": 0.0471, "model.params": 110000},
                   {"mixture.rare.facts": 0.0101, "mixture.rare.rev": 0.00923, "model.params": 45000},
                   {"mixture.rare.facts": 0.0989, "mixture.rare.rev": 0.241, "model.params": 17000}]


@pytest.mark.slow
def test_two_rare_threshold_no_trial_places_is_undetermined(tmp_path, capsys):
    """The README's two_rare plan on a real 4-trial search: the threshold at the answer's size
    (no rev trial near it there, no curve over sizes) is undetermined with its reason, never a
    frequency above 1 with a zero-width interval."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cli_main(["search", str(TWO_RARE), "--trials", "4", "--tracking-uri", uri, "--storage-path",
              str(tmp_path / "runs"), "--set", f"search.points_to_evaluate={json.dumps(TWO_RARE_POINTS)}"])
    capsys.readouterr()
    cli_main(["plan", "--tracking-uri", uri, "--experiment", "two_rare", "--task", "rev", "--budget-flops", "2e11"])
    out = capsys.readouterr().out
    threshold = next(x for x in out.splitlines() if x.startswith("threshold"))
    assert threshold.startswith("threshold   undetermined at "), out
    assert "sits near its threshold and no curve over sizes stands in" in threshold
    assert "[0.000, 0.000]" not in out
    cli_main(["plan", "--tracking-uri", uri, "--experiment", "two_rare", "--task", "rev", "--budget-flops", "2e11",
              "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["fit"]["threshold_freq"] is None and doc["fit"]["threshold_undetermined"]
    assert doc["constraints"]["constraints"] == ["acc/background >= 0.1"]
