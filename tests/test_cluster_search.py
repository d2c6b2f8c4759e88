"""End to end: ``optimix search`` on a real two-node Ray cluster, and against a real
``mlflow server``. Slow (each starts real services); run with ``pytest -m slow``.

The services and the teardown that ends them live in ``cluster_fixtures.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from cluster_fixtures import (
    TASKS,
    Holds,
    base_env,
    frontier_by_hand,
    kill_sessions,
    mlflow_server,
    optimix_search,
    optimix_search_args,
    ray_cluster,
    run_in_session,
    short_tmp,
)

pytestmark = pytest.mark.slow

OBJECTIVES = "acc/facts:max,train_flops:min"
SEARCHED = {"mixture.rare_freq", "model.d_model"}


@pytest.fixture
def server(tmp_path):
    with mlflow_server(tmp_path / "server") as s:
        yield s


def _search_runs(client, experiment: str):
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    parents = [r for r in runs if r.data.tags.get("optimix.role") == "search"]
    children = [r for r in runs if r.data.tags.get("optimix.role") == "trial"]
    assert len(parents) + len(children) == len(runs), [r.data.tags for r in runs]
    return parents, children


def _check_trial(run, parent_id: str) -> dict:
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent_id
    assert tags["optimix.status"] == "ok", tags.get("optimix.error")
    assert tags["optimix.pareto"] in ("true", "false")
    assert tags["optimix.trial_id"]
    assert tags.get("optimix.node"), "no optimix.node tag"
    point = json.loads(tags["optimix.point"])
    assert set(point) == SEARCHED
    params = run.data.params
    assert float(params["mixture.rare_freq"]) == pytest.approx(point["mixture.rare_freq"])
    assert int(params["model.d_model"]) == point["model.d_model"]
    assert point["model.d_model"] in (32, 64, 128)
    assert 0.01 <= point["mixture.rare_freq"] <= 0.5
    assert params["train.tokens"] == "20000"
    assert params["tasks.facts.n_facts"] == "8"
    metrics = run.data.metrics
    for name in ("train_flops", "params", "tokens"):
        assert metrics[name] > 0, name
    for task in TASKS:
        assert 0.0 <= metrics[f"acc/{task}"] <= 1.0
        assert metrics[f"loss/{task}"] > 0
    assert run.info.status == "FINISHED"
    return point


def test_search_spreads_trials_over_a_two_node_ray_cluster(tmp_path):
    """Each node has one CPU and each trial takes one: the first two trials are held at
    their start (``trial_started:1`` in every worker, the nodes' environment) until both are
    there at once, so they run on the two nodes by construction, however loaded the machine
    (without the hold, a trial could end before the next started, on the same node)."""
    import subprocess

    from mlflow.tracking import MlflowClient

    holds = Holds(tmp_path, ["trial_started:1"])
    with ray_cluster(**holds.env) as cluster:
        nodes = cluster.alive_nodes(want=2)
        assert len(nodes) == 2, nodes
        # One machine: Ray rewrites --node-ip-address 127.0.0.1 to the host's reachable address.
        assert len({n["ip"] for n in nodes}) == 1, nodes
        assert sorted(r for n in nodes for r in n["resources"] if r.startswith("node_")) == [
            "node_head", "node_worker"]
        status = cluster.status(expect=("node_head", "node_worker"))
        assert status.returncode == 0, status.describe()
        assert "node_head" in status.stdout and "node_worker" in status.stdout, status.describe()
        node_ids = {n["id"] for n in nodes}

        db = tmp_path / "mlflow.db"
        args = optimix_search_args("--trials", "4", "--max-concurrent", "2", "--address", cluster.address,
                                   "--tracking-uri", f"sqlite:///{db}", "--experiment", "cluster")
        proc = subprocess.Popen(args, cwd=tmp_path, env=cluster.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            holds.reached("trial_started:1", proc, timeout=150, processes=2)
            holds.release_all()
            out, err = proc.communicate(timeout=150)
        finally:
            holds.release_all()
            kill_sessions([proc.pid], grace_s=3.0)
    assert proc.returncode == 0, err[-3000:]
    assert "4 trials (4 ok" in out, out + err[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    parents, children = _search_runs(client, "cluster")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["optimix.objectives"] == OBJECTIVES
    assert parent.info.status == "FINISHED"
    assert len(children) == 4
    for run in children:
        _check_trial(run, parent.info.run_id)
    assert len({r.data.tags["optimix.trial_id"] for r in children}) == 4
    used = {r.data.tags["optimix.node"] for r in children}
    assert used <= node_ids, (used, node_ids)
    assert len(used) == 2, f"all trials ran on {used}; cluster nodes {node_ids}"


def test_search_logs_to_an_mlflow_server(server, tmp_path):
    from mlflow.tracking import MlflowClient

    # Ray starts in-process; RAY_TMPDIR keeps its session (and any ``ray start`` address file
    # another user's cluster left in /tmp/ray) apart from this test.
    ray_tmp = short_tmp("rl")
    try:  # optimix_search ends the search's whole session (Ray's local daemons included)
        done = optimix_search(tmp_path, "--trials", "4", "--max-concurrent", "2",
                              "--tracking-uri", server.uri,
                              env=base_env(RAY_TMPDIR=str(ray_tmp)))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.describe() + "\n--- server ---\n" + server.log_tail()
    assert "4 trials (4 ok" in done.stdout, done.describe()
    assert not (tmp_path / "mlflow.db").exists(), "wrote a local store despite --tracking-uri"

    client = MlflowClient(tracking_uri=server.uri)
    parents, children = _search_runs(client, "quickstart")
    assert len(parents) == 1
    parent = parents[0]
    pid = parent.info.run_id
    assert parent.data.tags["optimix.objectives"] == OBJECTIVES
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.trials"] == "4"
    assert parent.data.params["search.max_concurrent"] == "2"
    assert parent.data.metrics["trials"] == 4
    assert parent.data.metrics["trials_ok"] == 4

    assert len(children) == 4
    for run in children:
        _check_trial(run, pid)
    assert len({r.data.tags["optimix.node"] for r in children}) == 1  # one local node

    # Artifacts went through the server (proxied), into its artifacts destination.
    names = {a.path for a in client.list_artifacts(pid)}
    assert {"frontier.json", "frontier.png", "frontier.html", "space.yaml"} <= names, names
    stored = {p.name for p in (server.root / "artifacts").rglob("*") if p.is_file()}
    assert {"frontier.json", "frontier.png", "frontier.html", "space.yaml"} <= stored, stored
    local = Path(client.download_artifacts(pid, "frontier.json", str(tmp_path)))
    frontier = json.loads(local.read_text())
    assert Path(client.download_artifacts(pid, "frontier.png", str(tmp_path))).read_bytes()[:8] \
        == b"\x89PNG\r\n\x1a\n"

    # Pareto tags == the non-dominated set over final results and learning-curve points,
    # computed here from the logged metrics.
    finals, steps = frontier_by_hand(client, children)
    tagged = {r.info.run_id for r in children if r.data.tags["optimix.pareto"] == "true"}
    assert tagged == finals, {"tagged": tagged, "expected": finals}
    assert {r.info.run_id: json.loads(r.data.tags["optimix.pareto_steps"]) for r in children
            if r.data.tags["optimix.pareto_steps"] != "[]"} == steps
    assert {(row["run_id"], row["final"]) for row in frontier} == \
        {(run, True) for run in finals} | {(run, False) for run in steps}
    assert parent.data.metrics["frontier_size"] == len(frontier)


def test_a_tracking_server_lost_mid_search_loses_no_result(tmp_path):
    """The server dies after the first trial is logged (the driver held at ``before_logged:1``,
    the run complete in MLflow, its ``logged`` line not yet in the ledger, until the server is
    killed): training goes on, every result stays in the ledger, the search ends with exit 3;
    after a restart on the same address (the store the search recorded), --resume records each
    trial once."""
    import subprocess

    from mlflow.tracking import MlflowClient

    from cluster_fixtures import OPTIMIX, QUICKSTART, TINY_OVERRIDES

    ray_tmp = short_tmp("rl")
    store = tmp_path / "server"
    args = [OPTIMIX, "search", str(QUICKSTART), "--trials", "6", "--max-concurrent", "2",
            "--storage-path", str(tmp_path / "runs")]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    env = base_env(RAY_TMPDIR=str(ray_tmp))
    holds = Holds(tmp_path, ["before_logged:1"])
    try:
        with mlflow_server(store) as first:
            port = int(first.uri.rsplit(":", 1)[1])
            proc = subprocess.Popen([*args, "--tracking-uri", first.uri], cwd=tmp_path,
                                    env={**env, **holds.env}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            holds.reached("before_logged:1", proc, timeout=150)
            # Killed, not stopped: a graceful stop keeps serving open connections for seconds.
            os.killpg(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=30)
        holds.release_all()
        try:  # the server is gone now; the search must finish its trials anyway
            out, err = proc.communicate(timeout=300)
        finally:
            kill_sessions([proc.pid], grace_s=3.0)
        assert proc.returncode == 3, err[-3000:]
        assert "Traceback" not in err and "--resume" in err.strip().splitlines()[-1]
        ledger = next((tmp_path / "runs").glob("quickstart/*/results.jsonl"))
        finished = [json.loads(x) for x in ledger.read_text().splitlines() if '"trial_id"' in x]
        assert len(finished) == 6

        with mlflow_server(store, port=port) as second:
            done = run_in_session([*args, "--tracking-uri", second.uri, "--resume"], env=env,
                                  cwd=tmp_path, timeout=200)
            assert done.returncode == 0, done.describe()
            client = MlflowClient(tracking_uri=second.uri)
            parents, children = _search_runs(client, "quickstart")
            assert len(parents) == 1
            # A run the lost server left half-made is deleted and the trial logged again:
            # among the live runs, each trial once, none lost.
            live = [r for r in children if r.info.lifecycle_stage == "active"]
            ids = sorted(r.data.tags["optimix.trial_id"] for r in live)
            assert ids == sorted(e["trial_id"] for e in finished)
            assert all(r.info.status == "RUNNING" for r in children if r not in live)  # only half-made ones
            check = run_in_session([OPTIMIX, "check", "--experiment", "quickstart", "--tracking-uri", second.uri,
                                    "--storage-path", str(tmp_path / "runs")], env=env, cwd=tmp_path, timeout=120)
            assert check.returncode == 0, check.describe()
    finally:
        holds.release_all()
        shutil.rmtree(ray_tmp, ignore_errors=True)
