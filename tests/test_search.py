"""End-to-end searches: real Ray (in-process), real Optuna, real MLflow (SQLite). No mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from optimix.cli import main as cli_main
from optimix.core.config import SpaceError
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import SearchSpec, parse_objectives_tag
from optimix.core.space import build_space
from optimix.search import SearchOptions, SearchState, cheapest_flops, run_search, trial_flops
from optimix.search.run import SearchSummary

from cluster_fixtures import Holds, frontier_by_hand
from conftest import FAULTS, tiny_space

pytestmark = pytest.mark.slow


def children(client: MlflowClient, parent_id: str):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)


@pytest.fixture(scope="module")
def faulty_search(tmp_path_factory) -> tuple[str, SearchSummary]:
    """(tracking URI, summary) of one real search of seven trials at fixed points: four ok,
    one that raises, one that diverges, one whose worker exits; the frontier's models kept.
    Read only: the tests below look at it from three sides."""
    root = tmp_path_factory.mktemp("faulty")
    points = [
        {"mixture.rare_freq": 0.3, "model.d_model": 16, "train.fault": "none"},
        {"mixture.rare_freq": 0.02, "model.d_model": 32, "train.fault": "none"},
        {"mixture.rare_freq": 0.1, "model.d_model": 32, "train.fault": "none"},
        {"mixture.rare_freq": 0.05, "model.d_model": 16, "train.fault": "raise"},
        {"mixture.rare_freq": 0.05, "model.d_model": 16, "train.fault": "nan"},
        {"mixture.rare_freq": 0.05, "model.d_model": 32, "train.fault": "exit"},
        {"mixture.rare_freq": 0.01, "model.d_model": 16, "train.fault": "none"},
    ]
    space = build_space(tiny_space(train={"fault": FAULTS}, search={"trials": 7, "points_to_evaluate": points,
                                                                    "save_models": "frontier"}))
    uri = f"sqlite:///{root}/mlflow.db"
    return uri, run_search(space, SearchOptions(tracking_uri=uri, storage_path=str(root / "runs")))


def test_search_records_every_trial_failures_included_and_tags_the_frontier(faulty_search, tmp_path):
    uri, summary = faulty_search
    client = MlflowClient(uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.tags["optimix.role"] == "search"
    assert parent.data.tags["optimix.objectives"] == "acc/facts:max,train_flops:min"
    runs = children(client, summary.parent_run_id)
    assert len(runs) == 7 == summary.trials
    by_fault = {json.loads(r.data.tags["optimix.point"])["train.fault"] + str(i): r
                for i, r in enumerate(runs)}
    statuses = {}
    for r in runs:
        fault = json.loads(r.data.tags["optimix.point"])["train.fault"]
        statuses.setdefault(fault, []).append(r.data.tags["optimix.status"])
        assert r.data.tags["optimix.role"] == "trial"
        assert r.data.params["mixture.rare_task"] == "facts"
        assert r.data.metrics["train_flops"] >= 0  # a trial that failed at once spent nothing
        if r.data.tags["optimix.status"] != "ok":
            assert "acc/facts" not in r.data.metrics  # never a made-up score
            assert r.data.tags["optimix.pareto"] == "false"
    assert statuses == {"none": ["ok"] * 4, "raise": ["failed"], "nan": ["infeasible"], "exit": ["failed"]}
    assert any("injected fault" in r.data.tags.get("optimix.error", "") for r in by_fault.values())
    assert len({r.data.tags["optimix.trial_id"] for r in runs}) == 7

    finals, steps = frontier_by_hand(client, runs)
    assert steps  # the cheapest candidate is a learning-curve point (eval.points: 2)
    tagged = {r.info.run_id for r in runs if r.data.tags["optimix.pareto"] == "true"}
    assert tagged == finals
    assert {r.info.run_id: json.loads(r.data.tags["optimix.pareto_steps"]) for r in runs
            if r.data.tags["optimix.pareto_steps"] != "[]"} == steps
    assert {(row["run_id"], row["final"]) for row in summary.frontier} == \
        {(run, True) for run in finals} | {(run, False) for run in steps}

    artifacts = {a.path for a in client.list_artifacts(summary.parent_run_id)}
    assert {"frontier.json", "frontier.png", "frontier.html", "rare_map.png", "space.yaml"} <= artifacts
    frontier_file = client.download_artifacts(summary.parent_run_id, "frontier.json", str(tmp_path))
    assert json.loads(Path(frontier_file).read_text()) == summary.frontier

    # Optuna was told the truth: no trial left RUNNING; the three faults are FAIL.
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(summary.state_dir) / "optuna.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 3 and "RUNNING" not in states


def test_tune_writes_no_result_files_of_its_own(faulty_search):
    """Every result is in the ledger and MLflow: Tune's per-trial CSV, JSON and TensorBoard
    loggers are off (``ray_session.tune_environment``), so a search's folder holds none."""
    _, summary = faulty_search
    names = {p.name for p in Path(summary.state_dir).rglob("*") if p.is_file()}
    assert "results.jsonl" in names  # the ledger
    assert not {n for n in names if n in ("progress.csv", "result.json", "params.json", "params.pkl")
                or n.startswith("events.out.tfevents")}, sorted(names)


def test_grid_points_whose_config_cannot_be_built_are_infeasible_and_the_search_goes_on(tmp_path, capsys,
                                                                                       monkeypatch):
    """Dimensions valid one by one but not together (a share of 0.2 delivered in bursts of
    duty 0.1): those grid points are infeasible trials in the ledger, Optuna and MLflow, with
    the reason, never trained and charged nothing; the search finishes, ``optimix check``
    passes, and ``--resume`` finds nothing left to run."""
    from optimix.search import check

    monkeypatch.chdir(tmp_path)
    tree = tiny_space(search={"sampler": "grid", "trials": 10}, model={"d_model": 16},
                      mixture={"rare_freq": {"dist": "choice", "values": [0.05, 0.2]},
                               "delivery": {"dist": "choice", "values": ["even", "bursts"]}, "burst_duty": 0.1})
    (tmp_path / "s.json").write_text(json.dumps(tree))
    args = ["search", "s.json", "--storage-path", "runs", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    for extra in ([], ["--resume"]):
        try:
            cli_main([*args, *extra])
        except SystemExit as done:
            assert done.code in (0, None), capsys.readouterr().err
    record = check.read("runs", "tiny", None)
    assert check.check(record) == []
    entries = {json.dumps(t.point, sort_keys=True): t for t in record.ledger}
    assert len(entries) == len(record.ledger) == 4
    bad = entries[json.dumps({"mixture.delivery": "bursts", "mixture.rare_freq": 0.2}, sort_keys=True)]
    assert bad.status == "infeasible" and bad.train_flops == 0
    assert bad.entry.error == ("mixture.burst_duty: 0.1 is below rare_freq=0.2: a burst cannot carry "
                                  "more than all of its sequences")
    assert sorted(t.status for t in record.ledger) == ["infeasible", "ok", "ok", "ok"]
    run = next(r for r in record.children if r.trial_id == bad.trial_id)
    assert run.tags["optimix.status"] == "infeasible" and "burst_duty" in run.tags["optimix.error"]
    told = [ot for ot in record.optuna if ot.trial_id == bad.trial_id]
    assert [ot.state for ot in told] == ["FAIL"]


def test_optimix_frontier_reads_back_what_the_search_tagged(faulty_search, tmp_path, capsys):
    uri, summary = faulty_search
    cli_main(["frontier", "--tracking-uri", uri, "--experiment", "tiny", "--json",
              "--plot", str(tmp_path / "f.png")])
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in summary.frontier]
    assert all("acc/facts" in r and "train_flops" in r for r in rows)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_the_budget_is_never_exceeded_and_unaffordable_points_never_start(tmp_path):
    tree = tiny_space(search={"trials": 20, "sampler": "random"})
    space = build_space(tree)
    cheapest = cheapest_flops(space)
    dearest = trial_flops(space, {"model.d_model": 32, "mixture.rare_freq": 0.1})
    budget = cheapest * 2 + dearest * 0.5
    tree["search"]["budget_flops"] = budget
    space = build_space(tree)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_search(space, SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "runs")))
    assert summary.spent_flops <= budget
    assert 1 <= summary.trials < 20
    assert budget - summary.spent_flops < dearest  # it stopped because nothing more fitted ...
    runs = children(MlflowClient(uri), summary.parent_run_id)
    assert sum(r.data.metrics["train_flops"] for r in runs) == pytest.approx(summary.spent_flops)


def test_a_budget_below_the_cheapest_trial_is_bad_input():
    tree = tiny_space(search={"budget_flops": 1e3})
    with pytest.raises(SpaceError, match="search.budget_flops: .* below the cheapest trial"):
        run_search(build_space(tree), SearchOptions(storage_path="/nonexistent"))


def test_more_cpus_or_gpus_per_trial_than_any_node_has_are_refused_before_anything_is_written(tmp_path):
    """Tune would wait for them forever (asking again every minute)."""
    for key, value, resource in (("cpus_per_trial", 4000, "CPUs"), ("gpus_per_trial", 8, "GPUs")):
        with pytest.raises(SpaceError, match=rf"^search\.{key}: {value} per trial, but the largest node of "
                                             rf"the Ray cluster has \d+ {resource} \(1 live nodes\)"):
            run_search(build_space(tiny_space(search={key: value})),
                       SearchOptions(storage_path=str(tmp_path / "runs"),
                                     tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no state folder, no parent run


def test_grid_needs_values_for_a_continuous_dimension():
    with pytest.raises(SpaceError, match="mixture.rare_freq.grid"):
        run_search(build_space(tiny_space(search={"sampler": "grid"})), SearchOptions(storage_path="/nonexistent"))


def test_resume_after_sigkill_of_the_driver_process_group(tmp_path):
    # A grid: after the resume every grid point has run exactly once; the trials the kill
    # interrupted are run again, not replaced by repeats of finished points. The driver is
    # held where the third trial has finished and its ledger line is not yet written
    # (OPTIMIX_HOLD_AT), and its process group killed there: exactly two trials are recorded,
    # the third's result and whatever else was running are lost.
    tree = tiny_space(search={"trials": 6, "sampler": "grid"},
                      mixture={"rare_freq": {"dist": "loguniform", "low": 0.01, "high": 0.3,
                                             "grid": [0.01, 0.05, 0.3]}})
    space_file = tmp_path / "space.yaml"
    space_file.write_text(json.dumps(tree))  # JSON is YAML
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "optimix.cli", "search", str(space_file), "--tracking-uri", uri,
           "--storage-path", str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    holds = Holds(tmp_path, ["before_ledger:3"])
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**env, **holds.env}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        holds.reached("before_ledger:3", proc, timeout=240)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        holds.release_all()
    [ledger] = (tmp_path / "runs").glob("tiny/*/results.jsonl")
    before = [json.loads(x) for x in ledger.read_text().splitlines() if '"trial_id"' in x]
    assert len(before) == 2

    done = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    # Nothing from below leaks out: no traceback, no grid-sampler error, no Ray auth notice.
    for noise in ("Traceback", "grid_id", "Study.stop", "Token authentication"):
        assert noise not in done.stderr, done.stderr[-2000:]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    parents = client.search_runs([exp.experiment_id], "tags.`optimix.role` = 'search'")
    assert len(parents) == 1  # the same parent run
    runs = children(client, parents[0].info.run_id)
    ids = [r.data.tags["optimix.trial_id"] for r in runs]
    assert len(runs) == 6 and len(set(ids)) == 6  # every trial finished exactly once
    assert {e["trial_id"] for e in before} <= set(ids)  # finished before the kill: kept, not rerun
    entries = SearchState(ledger.parent).entries()
    finished = [e for e in entries if "trial_id" in e]
    assert sorted(e["trial_id"] for e in finished) == sorted(ids)
    points = sorted((e["point"]["mixture.rare_freq"], e["point"]["model.d_model"]) for e in finished)
    assert points == [(f, d) for f in (0.01, 0.05, 0.3) for d in (16, 32)]
    spent = sum(e["result"]["train_flops"] for e in finished)
    assert parents[0].data.metrics["spent_flops"] == pytest.approx(spent)
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(ledger.parent / "optuna.journal"))))
    assert "RUNNING" not in [t.state.name for t in study.trials]


def test_an_interrupted_trial_is_queued_again_once(tmp_path):
    from optuna.distributions import FloatDistribution

    from optimix.search.study import reconcile

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(0))
    first = study.ask({"x": FloatDistribution(0, 1)})  # left RUNNING by a killed driver
    reconcile(study, storage, [], SearchSpec(tuple(parse_objectives_tag("x:max"))))
    assert study.trials[first.number].state.name == "FAIL"
    rerun = study.ask({"x": FloatDistribution(0, 1)})  # the queued point comes first
    assert rerun.params == first.params
    reconcile(study, storage, [], SearchSpec(tuple(parse_objectives_tag("x:max"))))  # the rerun interrupted too: not queued a third time
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]


def test_a_trial_in_the_ledger_but_running_in_optuna_is_told_what_the_ledger_says(tmp_path):
    from optuna.distributions import FloatDistribution

    from optimix.search.study import reconcile

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    trial = study.ask({"mixture.rare_freq": FloatDistribution(0, 1)})
    trial.set_user_attr("optimix.trial_id", "t1")  # the driver died after the ledger line
    result = {"train_flops": 100.0, "params": 10, "non_embedding_params": 5, "tokens": 50, "wall_s": 1.0,
              "train_s": 0.5, "tokens_per_s": 100.0, "accuracy": {"facts": 0.5}, "loss": {"facts": 1.0},
              "curve": [], "steps": 4, "planned_steps": 4}
    entry = LedgerEntry(trial_id="t1", status="ok", result=result)
    reconcile(study, storage, [entry], SearchSpec(tuple(parse_objectives_tag("acc/facts:max,train_flops:min"))))
    [done] = study.trials
    assert done.state.name == "COMPLETE" and done.values == [0.5, 2.0]  # FLOPs in log10
    assert len(study.trials) == 1  # not queued again: it finished


def test_frontier_models_are_kept_and_reload_with_transformers(faulty_search, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    uri, summary = faulty_search
    client = MlflowClient(uri)
    for run in children(client, summary.parent_run_id):
        has_model = any(a.path == "model" for a in client.list_artifacts(run.info.run_id))
        assert has_model == (run.data.tags["optimix.pareto"] == "true")
        if has_model:
            local = client.download_artifacts(run.info.run_id, "model", str(tmp_path / run.info.run_id))
            assert (Path(local) / "MLmodel").exists()  # an MLflow model, the save_pretrained folder inside
            [local] = (Path(local) / "artifacts").iterdir()
            model = AutoModelForCausalLM.from_pretrained(local)
            tokenizer = AutoTokenizer.from_pretrained(local)
            assert sum(p.numel() for p in model.parameters()) == run.data.metrics["params"]
            ids = tokenizer("<t:facts> s1 s2 s3 <sep>", return_tensors="pt")["input_ids"]
            assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size


def test_an_unreachable_tracking_server_fails_fast_before_any_training(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "optimix.cli", "search", str(Path(__file__).parents[1] / "search_spaces" / "quickstart.yaml"),
         "--tracking-uri", f"http://127.0.0.1:{port}", "--storage-path", str(tmp_path / "runs")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert time.time() - started < 60
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1].startswith("error: MLflow at http://127.0.0.1:")
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "runs").glob("*/*/results.jsonl"))  # nothing was trained


def test_a_trial_dominated_at_equal_flops_is_pruned_and_told_to_optuna_as_pruned(tmp_path):
    # One at a time, in this order: a small model shown the rare facts often, then a large
    # one that almost never sees them. At half its training the large one has spent more
    # FLOPs than the whole small trial and recalls fewer facts: it is stopped there.
    points = [{"mixture.rare_freq": 0.3, "model.d_model": 16},
              {"mixture.rare_freq": 0.01, "model.d_model": 32}]
    tree = tiny_space(train={"tokens": 40_000}, eval={"points": 4},
                      search={"trials": 2, "sampler": "random", "max_concurrent": 1, "points_to_evaluate": points,
                              "prune": "dominated", "prune_margin": 0.0})
    space = build_space(tree)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_search(space, SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "runs")))

    client = MlflowClient(uri)
    runs = sorted(children(client, summary.parent_run_id),
                  key=lambda r: json.loads(r.data.tags["optimix.point"])["model.d_model"])
    small, large = runs
    assert small.data.tags["optimix.status"] == "ok"
    assert small.data.metrics["acc/facts"] > 0
    assert large.data.tags["optimix.status"] == "pruned"
    assert summary.pruned == 1 and summary.ok == 1
    planned = trial_flops(space, points[1])
    assert large.data.metrics["train_flops"] < planned  # it stopped early ...
    assert large.data.metrics["train_flops"] >= planned / 2  # ... no earlier than prune_from
    assert summary.spent_flops == pytest.approx(small.data.metrics["train_flops"]
                                                + large.data.metrics["train_flops"])

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(Path(summary.state_dir) / "optuna.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "PRUNED"]


def test_stacked_trials_train_together_and_record_each_point_as_run_trial_would(tmp_path):
    from optimix.trial.train import run_trial

    tree = tiny_space(search={"trials": 4, "sampler": "random", "max_concurrent": 1, "stack": 2})
    space = build_space(tree)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    running = []
    summary = run_search(space, SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "runs"),
                                              progress=lambda p: running.append(p.running)))
    assert summary.trials == 4 and summary.ok == 4
    assert max(running) == 2  # the progress view counts models: one Tune trial trains two

    runs = children(MlflowClient(uri), summary.parent_run_id)
    assert len(runs) == 4
    groups: dict[str, list] = {}
    for r in runs:
        tune_trial, _, member = r.data.tags["optimix.trial_id"].rpartition("_")
        groups.setdefault(tune_trial, []).append(r)
    assert sorted(len(g) for g in groups.values()) == [2, 2]  # two Tune trials of two models
    for group in groups.values():
        points = [json.loads(r.data.tags["optimix.point"]) for r in group]
        assert len({p["model.d_model"] for p in points}) == 1  # one shape per stack
        assert len({p["mixture.rare_freq"] for p in points}) == 2  # searched per model
    for r in runs[:2]:  # each point's numbers are what training it alone gives
        alone = run_trial(space.resolve(json.loads(r.data.tags["optimix.point"])))
        assert r.data.metrics["acc/facts"] == pytest.approx(alone.accuracy["facts"], abs=1e-6)
        assert r.data.metrics["loss/facts"] == pytest.approx(alone.loss["facts"], rel=1e-4)
        assert r.data.metrics["train_flops"] == alone.train_flops

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(Path(summary.state_dir) / "optuna.journal")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4


def test_a_search_in_which_every_trial_failed_exits_1_saying_why(tmp_path):
    tree = tiny_space(train={"fault": "raise"}, search={"trials": 2, "sampler": "random"})
    (tmp_path / "space.yaml").write_text(json.dumps(tree))  # JSON is YAML
    done = subprocess.run(
        [sys.executable, "-m", "optimix.cli", "search", "space.yaml", "--tracking-uri",
         f"sqlite:///{tmp_path}/mlflow.db", "--storage-path", str(tmp_path / "runs")],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every trial failed (2 of 2 failed or infeasible); the first, trial-00"), last
    assert "RuntimeError: injected fault (train.fault=raise)" in last and "results.jsonl" in last
    assert "Traceback" not in done.stderr
    assert "search tiny: 2 trials (0 ok, 2 failed or infeasible)" in done.stdout  # the summary still shows
