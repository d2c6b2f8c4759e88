"""What the Tracker leaves in MLflow when things go wrong: a real SQLite store, and a real
``mlflow server`` behind a proxy that injects faults (``tests/mlflow_proxy.py``).

The invariant: after ``log_trial`` a trial has exactly one non-deleted child run, and it is
complete (params, metrics without duplicated history, terminated); or ``log_trial`` raised a
one-line ``TrackingError`` within the time bound, and the next ``log_trial`` (once MLflow is
back) leaves exactly one complete child run.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Param, ViewType
from mlflow.tracking import MlflowClient

from optimix.core import metrics
from optimix.core.entry import LedgerEntry
from optimix.records import mlflow_client, mlflow_store, records, tracking
from optimix.records.tracking import Tracker, TrackingError, TrackingRejected

from cluster_fixtures import (
    OPTIMIX,
    QUICKSTART,
    TINY_OVERRIDES,
    base_env,
    free_port,
    kill_sessions,
    mlflow_server,
)
from mlflow_proxy import FaultyProxy

TASKS = ("copy", "facts")
LONG_TASK = "t" * 260  # a metric key "acc/ttt…" of 264 characters: over MLflow's 250


def trial_record(trial_id: str = "0", tasks: tuple[str, ...] = TASKS) -> LedgerEntry:
    """A finished trial as the search driver hands it to ``log_trial`` (two curve points)."""
    curve = [{"step": s, "tokens": 1000 * s, "train_flops": 1e6 * s, "train_loss": 2.0 / s,
              "accuracy": {t: 0.1 * s for t in tasks}, "loss": {t: 1.0 / s for t in tasks}}
             for s in (1, 2)]
    result = {"train_flops": 2e6, "params": 1000, "non_embedding_params": 800, "tokens": 2000,
              "wall_s": 1.5, "train_s": 1.2, "tokens_per_s": 1600.0,
              "accuracy": {t: 0.2 for t in tasks}, "loss": {t: 0.5 for t in tasks},
              "shape": {"d_model": 16, "n_layer": 1}, "curve": curve}
    return LedgerEntry(trial_id=trial_id, name=f"trial-{trial_id}", status=metrics.OK,
                       params={"model.d_model": 16, "mixture.rare_freq": 0.1}, result=result,
                       point={"mixture.rare_freq": 0.1}, node="127.0.0.1")


def trial_runs(tracker: Tracker, parent_id: str, trial_id: str) -> tuple[list, list]:
    """(non-deleted, deleted) child runs of a trial, read with a client of the test's own."""
    client = MlflowClient(tracking_uri=tracker.uri)
    runs = client.search_runs([tracker.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                              f"tags.`optimix.trial_id` = '{trial_id}'", run_view_type=ViewType.ALL)
    live = [r for r in runs if r.info.lifecycle_stage == "active"]
    return live, [r for r in runs if r.info.lifecycle_stage == "deleted"]


def assert_one_complete_run(tracker: Tracker, parent_id: str, trial_id: str) -> str:
    live, _ = trial_runs(tracker, parent_id, trial_id)
    assert len(live) == 1, f"{len(live)} child runs of trial {trial_id}: {[r.info for r in live]}"
    run = live[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.d_model"] == "16" and run.data.params["shape.n_layer"] == "1"
    assert run.data.metrics["acc/facts"] == pytest.approx(0.2)
    client = MlflowClient(tracking_uri=tracker.uri)
    # A re-sent batch must not have doubled any history.
    assert len(client.get_metric_history(run.info.run_id, "train_flops")) == 1
    assert [m.step for m in client.get_metric_history(run.info.run_id, "curve/acc/facts")] == [1, 2]
    return run.info.run_id


def start_parent(tracker: Tracker, state_dir: Path) -> str:
    return tracker.start_search("s-search", "acc/facts:max,train_flops:min", {"seed": 0},
                                "name: s\n", None, str(state_dir))


@pytest.fixture(autouse=True)
def mlflow_env() -> Iterator[None]:
    """No MLFLOW_HTTP_* / MLFLOW_TRACKING_* setting from outside: the Tracker's own defaults
    apply. The environment is left as it was found."""
    def ours() -> list[str]:
        return [k for k in os.environ if k.startswith(("MLFLOW_HTTP_", "MLFLOW_TRACKING_"))]

    saved = {k: os.environ.pop(k) for k in ours()}
    yield
    for key in ours():
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as running:
        yield running


@pytest.fixture
def proxy(server) -> Iterator[FaultyProxy]:
    with FaultyProxy(server.uri) as running:
        yield running


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# ---------------------------------------------------------------------------------------------
# The modules that talk to MLflow

MLFLOW_MODULES = {"tracking.py", "records.py", "mlflow_client.py", "mlflow_store.py", "serving.py", "served_model.py"}


def test_only_the_tracking_modules_import_mlflow():
    root = Path(tracking.__file__).parent
    talkers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                talkers.add(str(path.relative_to(root)))
    assert talkers <= MLFLOW_MODULES, talkers - MLFLOW_MODULES


def test_the_old_import_paths_still_work():
    from optimix.records.records import SearchRecord, TrackingError, TrialRecord, load_search

    assert (SearchRecord, TrialRecord, load_search) == (
        records.SearchRecord, records.TrialRecord, records.load_search)
    assert TrackingError is mlflow_client.TrackingError
    with pytest.raises(AttributeError):
        tracking.no_such_name  # noqa: B018


def test_tag_filters_quote_dotted_tags():
    assert mlflow_client.tag_is(metrics.PARENT, "r1") == "tags.`mlflow.parentRunId` = 'r1'"
    assert mlflow_client.tag_is("plain", "x") == "tags.plain = 'x'"


def test_all_pages_follows_the_page_token():
    class Page(list):
        def __init__(self, items, token):
            super().__init__(items)
            self.token = token

    pages = {None: Page([1, 2], "a"), "a": Page([3], "b"), "b": Page([], None)}
    asked = []
    assert mlflow_client.all_pages(lambda t: asked.append(t) or pages[t]) == [1, 2, 3]
    assert asked == [None, "a", "b"]


# ---------------------------------------------------------------------------------------------
# Half-made child runs


def test_a_half_made_child_run_is_deleted_and_the_trial_logged_again(tmp_path):
    tracker = Tracker(sqlite_uri(tmp_path), "half")
    parent = start_parent(tracker, tmp_path)
    record = trial_record("7")
    # What a crash between create_run and set_terminated leaves: the tags, some params.
    client = MlflowClient(tracking_uri=tracker.uri)
    half = client.create_run(tracker.experiment_id, run_name=record.name, tags={
        metrics.ROLE: "trial", metrics.PARENT: parent, metrics.TRIAL_ID: "7",
        metrics.STATUS: metrics.OK}).info.run_id
    client.log_batch(half, params=[Param("model.d_model", "16")])
    assert tracker.find_trial(parent, "7") is None  # half-made is not logged

    run_id = tracker.log_trial(parent, record)

    assert run_id != half
    assert assert_one_complete_run(tracker, parent, "7") == run_id
    _, deleted = trial_runs(tracker, parent, "7")
    assert [r.info.run_id for r in deleted] == [half]
    assert tracker.find_trial(parent, "7") == run_id
    assert tracker.log_trial(parent, record) == run_id  # logged once: nothing more is written


def test_a_terminated_child_run_from_an_older_version_counts_as_logged(tmp_path):
    tracker = Tracker(sqlite_uri(tmp_path), "older")
    parent = start_parent(tracker, tmp_path)
    client = MlflowClient(tracking_uri=tracker.uri)
    old = client.create_run(tracker.experiment_id, tags={
        metrics.ROLE: "trial", metrics.PARENT: parent, metrics.TRIAL_ID: "3",
        metrics.STATUS: metrics.FAILED}).info.run_id
    client.set_terminated(old, "FAILED")

    assert tracker.find_trial(parent, "3") == old
    assert tracker.log_trial(parent, trial_record("3")) == old
    live, deleted = trial_runs(tracker, parent, "3")
    assert [r.info.run_id for r in live] == [old] and not deleted


def test_a_twin_committed_after_the_client_gave_up_is_removed_at_the_end(tmp_path):
    # A slow server commits a create the client had timed out on, after the trial was logged
    # again: two runs of one trial. The ledger says which one counts; the other goes.
    tracker = Tracker(sqlite_uri(tmp_path), "twins")
    parent = start_parent(tracker, tmp_path)
    kept = tracker.log_trial(parent, trial_record("5"))
    client = MlflowClient(tracking_uri=tracker.uri)
    late = client.create_run(tracker.experiment_id, tags={
        metrics.ROLE: "trial", metrics.PARENT: parent, metrics.TRIAL_ID: "5"}).info.run_id
    stray = client.create_run(tracker.experiment_id, tags={
        metrics.ROLE: "trial", metrics.PARENT: parent, metrics.TRIAL_ID: "not-in-ledger"}).info.run_id

    assert tracker.remove_strays(parent, {"5": kept}) == 2
    live, deleted = trial_runs(tracker, parent, "5")
    assert [r.info.run_id for r in live] == [kept] and [r.info.run_id for r in deleted] == [late]
    assert client.get_run(stray).info.lifecycle_stage == "deleted"
    assert tracker.remove_strays(parent, {"5": kept}) == 0


# ---------------------------------------------------------------------------------------------
# Rejections name what was rejected


@pytest.mark.parametrize("store", ["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def test_a_rejected_metric_key_is_named_and_leaves_no_run(store, tmp_path, request):
    uri = sqlite_uri(tmp_path) if store == "sqlite" else request.getfixturevalue("server").uri
    tracker = Tracker(uri, f"rejected-{uuid.uuid4().hex[:8]}")
    parent = start_parent(tracker, tmp_path)
    key = f"acc/{LONG_TASK}"

    with pytest.raises(TrackingRejected) as caught:
        tracker.log_trial(parent, trial_record("1", tasks=("copy", LONG_TASK)))

    text = str(caught.value)
    assert len(text.splitlines()) == 1
    assert f"metric '{key[:60]}…' ({len(key)} characters)" in text, text
    assert "INVALID_PARAMETER_VALUE" in text and "reachable" not in text, text
    assert isinstance(caught.value, TrackingError)  # callers that catch TrackingError still do
    live, _ = trial_runs(tracker, parent, "1")
    assert not live  # no half-made run is left behind


# ---------------------------------------------------------------------------------------------
# Credentials


@pytest.mark.parametrize(("uri", "shown"), [
    ("http://bob:hunter2@127.0.0.1:5000", "http://***@127.0.0.1:5000"),
    ("https://token@mlflow.example.org/prefix?auth=abc#x", "https://***@mlflow.example.org/prefix"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("sqlite:////tmp/a dir/x.db?mode=ro", "sqlite:////tmp/a dir/x.db"),
    ("databricks://profile", "databricks://profile"),
])
def test_redact_uri(uri, shown):
    assert mlflow_client.redact_uri(uri) == shown


def test_an_unreachable_server_with_credentials_does_not_show_them(caplog):
    caplog.set_level(logging.DEBUG)
    uri = f"http://bob:hunter2@127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingError) as caught:
        Tracker(uri, "secret")
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(caught.value) and "***@127.0.0.1" in str(caught.value)
    assert "hunter2" not in caplog.text


@pytest.mark.slow
def test_mlflow_errors_through_a_uri_with_credentials_do_not_show_them(proxy, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    uri = proxy.url.replace("http://", "http://bob:hunter2@")
    tracker = Tracker(uri, f"secret-{uuid.uuid4().hex[:8]}")
    assert tracker.uri == uri and "hunter2" not in tracker.display_uri
    parent = start_parent(tracker, tmp_path)
    proxy.mode = "refuse"
    with pytest.raises(TrackingError) as caught:
        tracker.log_trial(parent, trial_record("1"))
    assert "hunter2" not in str(caught.value) and "not reachable" in str(caught.value)
    with pytest.raises(TrackingError) as caught:
        records.load_search(uri, tracker.experiment)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in caplog.text


def cli(capsys, *args: str) -> tuple[int | str | None, str, str]:
    """``optimix ARGS`` in this process: exit status, stdout, stderr."""
    from optimix.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as err:
        code = err.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_run_id_alone_finds_its_own_experiment_and_must_be_a_searchs_parent(tmp_path, capsys):
    uri = sqlite_uri(tmp_path)
    first = Tracker(uri, "first")
    parent = start_parent(first, tmp_path / "a")
    child = first.log_trial(parent, trial_record("0"))
    first.set_frontier_tags({child: (True, [])})
    later = Tracker(uri, "later")  # the experiment updated last, with a search of no trial
    start_parent(later, tmp_path / "b")

    code, out, err = cli(capsys, "frontier", "--tracking-uri", uri, "--run-id", parent, "--json")
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == [child], (out, err)
    code, out, err = cli(capsys, "plan", "--tracking-uri", uri, "--run-id", parent, "--budget-flops", "1e6")
    assert code == 0 and out.startswith(f"experiment first, search {parent}:"), (out, err)
    assert "(1 of 1 trials finished)" in out, out  # too few to fit: the point is which it read
    for run_id, extra, says in ((child, (), "not an optimix search's parent run"),
                                ("0123456789abcdef0123456789abcdef", (), "no run"),
                                (parent, ("--experiment", "later"), "of experiment 'first', not of 'later'")):
        code, out, err = cli(capsys, "frontier", "--tracking-uri", uri, "--run-id", run_id, *extra)
        assert code == 2 and out == "" and err.startswith("error: --run-id:") and says in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_a_sqlite_store_left_half_migrated_is_finished_or_refused_in_one_line(tmp_path, capsys):
    """What two processes migrating one new store at once left behind (before the store's
    lock): copies of tables beside them, a schema behind MLflow's, a table only in its copy."""
    import sqlite3

    uri = sqlite_uri(tmp_path)
    tracker = Tracker(uri, "half")
    parent = start_parent(tracker, tmp_path / "state")
    tracker.log_trial(parent, trial_record("0"))

    def sql(*statements: str) -> list:
        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            return [db.execute(statement).fetchall() for statement in statements][-1]

    sql("CREATE TABLE _alembic_tmp_metrics AS SELECT * FROM metrics")  # a copy left beside its table
    code, out, err = cli(capsys, "frontier", "--tracking-uri", uri, "--experiment", "half")
    assert code == 0 and "1 trials" in out, (out, err)
    assert sql("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'") == []

    head = sql("SELECT version_num FROM alembic_version")[0][0]
    sql("UPDATE alembic_version SET version_num = 'before'")  # a store stuck at an older schema
    for args in (("frontier",), ("plan", "--budget-flops", "1e9")):  # new processes: MLflow keeps a store it opened
        done = subprocess.run([OPTIMIX, *args, "--tracking-uri", uri, "--experiment", "half"], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path, env=base_env())
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and f"mlflow db upgrade {uri}" in done.stderr, (args, done.stderr)
    sql(f"UPDATE alembic_version SET version_num = '{head}'",
        "CREATE TABLE _alembic_tmp_params AS SELECT * FROM params", "DROP TABLE params")
    with pytest.raises(TrackingError) as caught:
        mlflow_client.connect(uri)
    assert "_alembic_tmp_params holds its rows" in str(caught.value) and "mlflow db upgrade" in str(caught.value)


def _sorted_dump(path: Path) -> list[str]:
    """A store's schema and rows in a fixed order (the clauses of a statement too: a migration
    may write a table's constraints in either order), its creation times masked."""
    import re
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        statements = [re.sub(r"\b1\d{12}\b", "<ms>", s).splitlines() for s in db.iterdump()]
    return sorted(" ".join(sorted(line.strip().rstrip(",") for line in s)) for s in statements)


def test_a_new_sqlite_store_starts_from_the_template_and_holds_what_mlflow_makes(tmp_path, monkeypatch):
    """A new store is a copy of an empty store at MLflow's schema, built once in the user's
    cache, and ends up as a store MLflow made itself: the same tables, indexes and rows."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # both stores' default artifact root is ./mlruns
    mlflow_store.open_sqlite(f"sqlite:///{tmp_path / 'ours.db'}").search_experiments()
    template = mlflow_store.template()
    assert template is not None and template.parent == tmp_path / "cache" / "optimix", template
    assert not [line for line in _sorted_dump(template) if line.startswith('INSERT INTO "experiments"')]
    assert not [p.name for p in [*tmp_path.iterdir(), *template.parent.iterdir()] if p.name.endswith(".tmp")]
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflows.db'}").search_experiments()
    ours, theirs = _sorted_dump(tmp_path / "ours.db"), _sorted_dump(tmp_path / "mlflows.db")
    assert any(line.startswith('INSERT INTO "experiments"') for line in ours)
    assert ours == theirs


def test_a_template_at_another_schema_is_built_again(tmp_path, monkeypatch):
    """A template not at this MLflow's schema head (left by a build of MLflow with other
    migrations) is never copied: it is built again."""
    import sqlite3

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = mlflow_store.template()
    with contextlib.closing(sqlite3.connect(template)) as db:
        db.execute("UPDATE alembic_version SET version_num = 'before'")
        db.commit()
    client = mlflow_store.open_sqlite(f"sqlite:///{tmp_path / 'store.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    with contextlib.closing(sqlite3.connect(template)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] != "before"


def test_without_a_cache_to_build_the_template_in_mlflow_makes_the_store(tmp_path, monkeypatch):
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not_a_folder"))
    assert mlflow_store.template() is None
    client = mlflow_store.open_sqlite(f"sqlite:///{tmp_path / 'store.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_the_resume_line_shows_no_credentials(monkeypatch):
    from optimix.cli import _resume_line

    monkeypatch.setattr(sys, "argv", ["optimix", "search", "q.yaml", "--tracking-uri",
                                      "http://bob:hunter2@127.0.0.1:5000", "--address=ray://u:pw@h:1"])
    line = _resume_line("q.yaml")
    assert "hunter2" not in line and ":pw@" not in line, line
    assert line.endswith("q.yaml --tracking-uri 'http://***@127.0.0.1:5000' '--address=ray://***@h:1' --resume")


@pytest.mark.slow
def test_a_search_through_a_uri_with_credentials_sends_them_and_prints_them_nowhere(proxy, tmp_path):
    """A real search, interrupted once a trial is in MLflow, then resumed: the password goes
    to the server (HTTP basic authentication) and to no line of the output; MLflow's own
    "View run ... at: URL" lines are off."""
    uri = proxy.url.replace("http://", "http://alice:s3cr3tPW@")
    experiment = f"cred-{uuid.uuid4().hex[:8]}"
    args = [OPTIMIX, "search", str(QUICKSTART), *[x for o in TINY_OVERRIDES for x in ("--set", o)],
            "--trials", "3", "--max-concurrent", "1", "--tracking-uri", uri, "--experiment", experiment,
            "--storage-path", str(tmp_path / "runs")]
    proc = subprocess.Popen(args, cwd=tmp_path, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        ledger = tmp_path / "runs" / experiment
        while not any('"logged"' in p.read_text() for p in ledger.glob("*/results.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_sessions([proc.pid], grace_s=3.0)
    assert proc.returncode == 130, err
    assert "resume with:" in err and "'http://***@127.0.0.1:" in err, err
    resumed = subprocess.run([*args, "--resume"], cwd=tmp_path, env=base_env(), capture_output=True, text=True,
                             timeout=240, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr
    for text in (out, err, resumed.stdout, resumed.stderr):
        assert "s3cr3tPW" not in text and "View run" not in text, text
    sent = base64.b64encode(b"alice:s3cr3tPW").decode()
    assert proxy.authorizations == {"", f"Basic {sent}"}  # "": the /health probe
    client = MlflowClient(proxy.url)
    exp = client.get_experiment_by_name(experiment)
    assert len(client.search_runs([exp.experiment_id], "tags.`optimix.role` = 'trial'")) == 3


# ---------------------------------------------------------------------------------------------
# Server faults

# (mode, path, times, outcome): "ok" must log the trial despite the fault; "error" must raise
# a TrackingError; "either" may do one or the other (the write was committed, its answer lost).
FAULTS = [
    ("5xx_after_commit", "runs/create", 1, "ok"),
    ("5xx_after_commit", "runs/create", None, "ok"),  # committed every time: found, not redone
    ("5xx_after_commit", "runs/log-batch", 3, "ok"),  # params, metrics, curve: each sent twice
    ("5xx_after_commit", "runs/update", None, "either"),  # terminated, but never told so
    ("5xx_after_commit", "", None, "error"),
    ("429", "runs/create", 1, "ok"),
    ("429", "", None, "error"),
    ("refuse", "", 2, "ok"),
    ("refuse", "runs/log-batch", None, "error"),
    ("hang", "runs/log-batch", None, "error"),
    ("hang", "", None, "error"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "path", "times", "outcome"), FAULTS,
                         ids=[f"{m}-{p or 'all'}-{t or 'always'}" for m, p, t, _ in FAULTS])
def test_log_trial_under_a_server_fault_leaves_one_complete_run(proxy, tmp_path, mode, path, times,
                                                                outcome):
    tracker = Tracker(proxy.url, f"faults-{uuid.uuid4().hex[:8]}")
    parent = start_parent(tracker, tmp_path)
    record = trial_record("5")
    proxy.set(mode, path, times)
    started = time.monotonic()
    try:
        run_id: str | None = tracker.log_trial(parent, record)
    except TrackingError as err:
        assert outcome != "ok", f"{mode} on {path or 'every request'}: {err}"
        assert len(str(err).splitlines()) == 1 and not isinstance(err, TrackingRejected)
        if mode == "429":
            assert "HTTP 429" in str(err)
        if mode == "hang":
            assert "did not answer within 10 s" in str(err)
        run_id = None
    else:
        assert outcome != "error", f"{mode} on {path or 'every request'}: no error"
    elapsed = time.monotonic() - started
    assert proxy.faulted >= 1
    assert elapsed < mlflow_client.CALL_BUDGET_S + 5, f"{elapsed:.1f} s"
    if mode == "429":
        assert elapsed >= 1.0  # it waited before asking again
    if run_id is not None:
        assert assert_one_complete_run(tracker, parent, "5") == run_id

    proxy.mode = "ok"
    again = tracker.log_trial(parent, record)
    assert assert_one_complete_run(tracker, parent, "5") == again
    assert run_id in (None, again)


@pytest.mark.slow
def test_duplicates_made_by_mlflows_own_retries_are_deleted(proxy, tmp_path, monkeypatch):
    # A user's setting wins over the Tracker's default: MLflow's client then re-sends a
    # runs/create whose answer was a 408, and the server commits it twice. (From MLflow 3.18
    # on, its client re-sends a create only after a 408 or 429, no longer after a 5xx.)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    tracker = Tracker(proxy.url, f"retries-{uuid.uuid4().hex[:8]}")
    proxy.set("408_after_commit", "runs/create", 1)
    parent = start_parent(tracker, tmp_path)
    assert proxy.faulted == 1
    client = MlflowClient(tracking_uri=tracker.uri)
    parents = client.search_runs([tracker.experiment_id], "tags.`optimix.role` = 'search'")
    assert [r.info.run_id for r in parents] == [parent]
    assert tracker.find_search(str(tmp_path)) == parent

    proxy.set("408_after_commit", "runs/create", 1)
    run_id = tracker.log_trial(parent, trial_record("2"))
    assert proxy.faulted == 2
    assert assert_one_complete_run(tracker, parent, "2") == run_id
    _, deleted = trial_runs(tracker, parent, "2")
    assert len(deleted) == 1  # the twin the retry committed
