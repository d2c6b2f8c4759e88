"""Records that cannot lie: every trial once, complete and in its place, whatever stops the
search. Real searches (``optimix search`` in a subprocess, in-process Ray, MLflow in SQLite),
interrupted by signals and by exact kill points, then checked with ``optimix check``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from optimix.core.entry import LedgerEntry
from optimix.search import SearchState
from optimix.search.ledger import LedgerError

from cluster_fixtures import OPTIMIX, Holds, base_env, kill_sessions, short_tmp
from conftest import Search, records_space

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def points_of(trials: list[LedgerEntry]) -> list[tuple]:
    return [tuple(sorted(t.point.items())) for t in trials]


def assert_clean(search: Search, trials: int) -> None:
    done = search.check()
    assert done.returncode == 0, done.stdout + done.stderr
    found = search.trials()
    assert len(found) == trials, [t.trial_id for t in found]
    assert len(set(points_of(found))) == trials  # every point once
    assert "RUNNING" not in {t.state.name for t in search.study().trials}


# ---------------------------------------------------------------------------------------------
# Resume


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Search:
    search = Search(tmp_path_factory.mktemp("recorded"), records_space())
    done = search.run()
    assert done.returncode == 0, done.stderr[-3000:]
    return search


def test_resume_refuses_a_changed_space_naming_the_first_key_that_differs(recorded):
    """Refused before Ray starts: nothing of a Ray session in its temporary folder."""
    before = recorded.state().ledger.read_bytes()
    ray_tmp = short_tmp("rs")
    try:
        for change, key in ((["--set", "train.tokens=24000"], "train.tokens"),
                            (["--set", "model.d_model=16"], "model.d_model"),
                            (["--seed", "3"], "seed")):
            done = recorded.run("--resume", *change, env={**recorded.env, "RAY_TMPDIR": str(ray_tmp)}, timeout=60)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: --resume: " + key), done.stderr
        assert not list(ray_tmp.iterdir())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert recorded.state().ledger.read_bytes() == before  # nothing lost, nothing added


def test_a_second_driver_on_a_running_search_is_refused(recorded, tmp_path):
    """The first driver is held (OPTIMIX_HOLD_AT) where its one new trial has finished, the
    folder's lock taken and nothing written yet, until the second has been refused: it cannot
    have ended first, however slow the second is to start."""
    holds = Holds(tmp_path, ["before_ledger:1"])
    ray_tmp = short_tmp("rd")
    first = recorded.start("--resume", "--trials", "4", env={**recorded.env, **holds.env})
    try:
        holds.reached("before_ledger:1", first)
        assert recorded.state().running()
        second = recorded.run("--resume", "--trials", "8", env={**recorded.env, "RAY_TMPDIR": str(ray_tmp)},
                              timeout=120)
        assert second.returncode == 2 and "still running" in second.stderr, second.stderr
        assert not list(ray_tmp.iterdir())  # refused before Ray started
        holds.release_all()
        assert first.wait(timeout=180) == 0, first.stderr.read()[-2000:]
    finally:
        holds.release_all()
        kill_sessions([first.pid], grace_s=3.0)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert_clean(recorded, 4)


def test_resume_extends_a_search_without_training_any_point_twice_and_retags_the_frontier(recorded):
    # A run that left the frontier while MLflow was down keeps a stale tag until a resume
    # rewrites it: flip one run's tag by hand, as the outage would have left it.
    client = MlflowClient(recorded.uri)
    runs = client.search_runs([client.get_experiment_by_name("records").experiment_id],
                              "tags.`optimix.role` = 'trial'")
    off = [r for r in runs if r.data.tags["optimix.pareto"] == "false"]
    on = [r for r in runs if r.data.tags["optimix.pareto"] == "true"]
    stale = (off or on)[0]
    client.set_tag(stale.info.run_id, "optimix.pareto", "true" if off else "false")
    assert recorded.check().returncode == 1  # the check sees it

    # The random sampler's seeded stream, restarted, proposes its first points again.
    done = recorded.run("--resume", "--trials", "7")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_clean(recorded, 7)
    assert recorded.parent().info.status == "FINISHED"


def test_resume_restores_a_deleted_trial_run_and_logs_a_purged_one_again(tmp_path):
    """Runs deleted in MLflow after the search: one deleted (restored as it was), one also
    purged by ``mlflow gc`` (logged again). The resume runs from another folder without
    --tracking-uri: the store is the one the search recorded."""
    search = Search(tmp_path, records_space())
    done = search.run()
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(search.uri)
    (deleted, deleted_run), (purged, purged_run) = [(t.trial_id, t.run_id) for t in search.state().trials()[:2]]
    client.delete_run(deleted_run)
    client.delete_run(purged_run)
    gc = subprocess.run([str(Path(OPTIMIX).parent / "mlflow"), "gc", "--backend-store-uri", search.uri,
                         "--tracking-uri", search.uri,
                         "--run-ids", purged_run], capture_output=True, text=True, timeout=120, env=search.env)
    assert gc.returncode == 0, gc.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = subprocess.run([OPTIMIX, "search", str(search.space), "--storage-path", str(search.storage),
                              "--resume"], cwd=elsewhere, env=search.env, capture_output=True, text=True,
                             timeout=240, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (elsewhere / "mlflow.db").exists()
    runs = {t.trial_id: t.run_id for t in search.state().trials()}
    assert runs[deleted] == deleted_run and client.get_run(deleted_run).info.lifecycle_stage == "active"
    assert runs[purged] != purged_run and client.get_run(runs[purged]).info.status == "FINISHED"
    assert_clean(search, 3)


def test_a_space_with_fewer_points_than_trials_ends_when_every_point_has_run(tmp_path):
    tree = records_space(trials=20)
    tree["mixture"]["rare_freq"]["values"] = [0.1, 0.3]
    search = Search(tmp_path, tree)
    done = search.run()
    assert done.returncode == 0, done.stderr[-3000:]
    assert_clean(search, 4)


# ---------------------------------------------------------------------------------------------
# Interruptions


def interrupt(search: Search, proc: subprocess.Popen, sig: signal.Signals, after: int) -> None:
    """``sig`` to the search once ``after`` trials are in its ledger; it must stop as an
    interrupted search does: exit 128 + sig, a one-line resume hint, no summary, its parent
    run KILLED, its state interrupted, nothing left RUNNING, and its records clean."""
    try:
        search.wait_for_trials(after, proc)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C reaches the terminal's whole process group
        else:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_sessions([proc.pid], grace_s=3.0)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"interrupted by {sig.name}" in err and "--resume" in err, err[-3000:]
    assert "Traceback" not in err and "Tuner.restore" not in err, err[-3000:]
    assert "Pareto frontier" not in out  # no summary of a finished search
    parent = search.parent()
    assert parent.info.status == "KILLED" and parent.data.tags["optimix.ended"] == sig.name
    assert search.state().read()["status"] == "interrupted"
    assert "RUNNING" not in {t.state.name for t in search.study().trials}
    check = search.check()
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_signal_never_reports_success_and_resume_finishes_the_search(tmp_path):
    """SIGTERM stops the search, SIGINT (as Ctrl-C) stops its resume; a second resume
    finishes it, every trial once, what each kept still there."""
    search = Search(tmp_path, records_space(trials=6))
    interrupt(search, search.start(), signal.SIGTERM, after=1)
    kept = search.trials()
    interrupt(search, search.start("--resume"), signal.SIGINT, after=len(kept) + 1)
    kept = search.trials()
    assert len(kept) >= 2

    done = search.run("--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_clean(search, 6)
    assert {t.trial_id for t in kept} <= {t.trial_id for t in search.trials()}
    assert search.parent().info.status == "FINISHED"


# The two points whose defects the records issue names (a trial COMPLETE in Optuna but not in
# the ledger; a line glued onto a torn one); every kill point, 5 random visits each, is in
# benchmarks/faults.py (docs/reliability.md).
def test_a_driver_killed_at_any_point_loses_nothing_and_counts_nothing_twice(tmp_path):
    """Killed while writing its second ledger line (a torn line), then its resume killed
    before its second tell to Optuna (a trial in the ledger, RUNNING in Optuna); a second
    resume finishes the search, every trial once, no line glued onto the torn one."""
    search = Search(tmp_path, records_space(trials=5))
    for resume, point in (((), "torn_ledger:2"), (("--resume",), "before_tell:2")):
        killed = search.run(*resume, env={**search.env, "OPTIMIX_KILL_AT": point})
        assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stderr[-3000:]}"
    done = search.run("--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_clean(search, 5)
    lines = search.state().ledger.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no line glued onto a torn one


def test_a_worker_that_dies_is_tried_once_more_and_recorded_once(tmp_path):
    """The first trial's worker is held where the trial starts (``trial_started:1``) and
    killed there: by construction a worker with a trial, not one between trials."""
    search = Search(tmp_path, records_space(trials=3, max_concurrent=1))
    holds = Holds(tmp_path, ["trial_started:1"])
    proc = search.start(env={**search.env, **holds.env})
    try:
        [victim] = holds.reached("trial_started:1", proc)
        os.kill(victim, signal.SIGKILL)
        holds.release_all()
        out, err = proc.communicate(timeout=240)
    finally:
        holds.release_all()
        kill_sessions([proc.pid], grace_s=3.0)
    assert proc.returncode == 0, err[-3000:]
    trials = search.trials()
    assert len(trials) == 3 and all(t.status == "ok" for t in trials), trials
    assert_clean(search, 3)


# ---------------------------------------------------------------------------------------------
# Objectives, grids, budgets (in-process: real Ray, real Optuna, real MLflow)


def _in_process(tmp_path, tree):
    from optimix.core.space import build_space
    from optimix.search import SearchOptions, run_search

    space = build_space(tree)
    summary = run_search(space, SearchOptions(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                                              storage_path=str(tmp_path / "runs")))
    state = SearchState(Path(summary.state_dir))
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(state.journal)))
    return summary, state, optuna.load_study(study_name=tree["name"], storage=storage)


def test_every_reported_metric_can_be_an_objective(tmp_path, ray_session):
    tree = records_space(trials=2, objectives=["acc/facts:max", "wall_s:min"])
    summary, state, study = _in_process(tmp_path, tree)
    assert summary.ok == 2
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2 and all(len(t.values) == 2 for t in complete)
    by_id = {e.trial_id: e for e in state.trials()}
    for t in complete:
        assert t.values[1] == pytest.approx(by_id[t.user_attrs["optimix.trial_id"]].result["wall_s"])


def test_a_grid_of_stacked_trials_runs_every_point_once(tmp_path, ray_session):
    tree = records_space(trials=8, sampler="grid", stack=2)
    tree["mixture"]["rare_freq"]["values"] = [0.1, 0.3]
    summary, state, study = _in_process(tmp_path, tree)
    trials = state.trials()
    assert summary.trials == 4 == len(trials) and summary.ok == 4
    assert len(set(points_of(trials))) == 4
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(summary.parent_run_id).info.status == "FINISHED"


def test_a_grid_under_a_budget_runs_grid_points_only_and_stays_within_it(tmp_path, ray_session):
    from optimix.core.space import build_space
    from optimix.search import trial_flops

    tree = records_space(trials=8, sampler="grid")
    space = build_space(tree)
    costs = sorted(trial_flops(space, {"mixture.rare_freq": f, "model.d_model": d})
                   for f in (0.05, 0.1, 0.2, 0.4) for d in (16, 32))
    tree["search"]["budget_flops"] = sum(costs[:5]) * 1.01  # not the whole grid
    summary, state, _ = _in_process(tmp_path, tree)
    grid = {(f, d) for f in (0.05, 0.1, 0.2, 0.4) for d in (16, 32)}
    trials = state.trials()
    ran = {(t.point["mixture.rare_freq"], t.point["model.d_model"]) for t in trials}
    assert ran <= grid and len(ran) == len(trials) >= 2  # grid points only, each once
    left = tree["search"]["budget_flops"] - summary.spent_flops
    assert left >= 0
    unrun = [trial_flops(space, {"mixture.rare_freq": f, "model.d_model": d}) for f, d in grid - ran]
    assert all(cost > left for cost in unrun)  # it stopped only when no grid point fitted


def test_a_crashed_worker_is_charged_what_it_trained_not_its_plan(tmp_path, ray_session):
    from optimix.core.space import build_space
    from optimix.search import trial_flops

    tree = records_space(trials=1, points_to_evaluate=[{"mixture.rare_freq": 0.1, "model.d_model": 16}])
    tree["train"]["fault"] = "exit"  # the worker process dies at its first step, twice
    summary, state, study = _in_process(tmp_path, tree)
    [trial] = state.trials()
    assert trial.status == "failed"
    planned = trial_flops(build_space(tree), trial.point)
    assert trial.result["train_flops"] < planned
    assert summary.spent_flops == trial.result["train_flops"]
    assert [t.state.name for t in study.trials] == ["FAIL"]


def test_what_the_in_process_ray_listens_on_is_what_the_readme_says(tmp_path, ray_session):
    """README, "Running safely on shared machines": Ray's own processes (GCS, raylets, its
    agents and workers, the driver's core worker) listen, token-authenticated; nothing else
    of a search does, and no dashboard starts."""
    import psutil

    _in_process(tmp_path, records_space(trials=1))  # Ray stays up until the module ends
    me = psutil.Process()
    listening = []
    for proc in me.children(recursive=True) + [me]:
        try:
            conns = proc.net_connections(kind="inet")
            name = "driver" if proc.pid == me.pid else proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        listening += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening, "found no listening socket of Ray's"
    documented = ("gcs_server", "raylet", "ray::", "driver")
    assert all(name.startswith(documented) for name, _, _ in listening), listening
    assert not [x for x in listening if x[2] in (8265, 6379)], listening  # no dashboard, no GCS default port
    assert (Path.home() / ".ray" / "auth_token").exists()  # token authentication is on


# ---------------------------------------------------------------------------------------------
# Two searches on one new SQLite store


def lock_waiters(lock: Path) -> int:
    """Processes blocked on a ``flock`` of ``lock`` (``/proc/locks`` marks them ``->``)."""
    inode = f":{os.stat(lock).st_ino} "
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and inode in line)


def test_two_searches_started_at_once_on_a_new_sqlite_store_both_succeed(tmp_path):
    """Both searches are held at the store's lock (this test holds it) and let go together:
    both open the new store at once, as two commands started together would."""
    import fcntl
    from concurrent.futures import ThreadPoolExecutor

    from cluster_fixtures import optimix_search

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    lock = Path(f"{db}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(optimix_search, tmp_path, "--trials", "2", "--max-concurrent", "1",
                                "--experiment", name, "--tracking-uri", uri, "--storage-path", str(tmp_path / "runs"),
                                env=base_env(), timeout=300) for name in ("A", "B")]
            deadline = time.monotonic() + 120
            while lock_waiters(lock) < 2:
                assert not any(r.done() for r in runs), [r.result().describe() for r in runs if r.done()]
                assert time.monotonic() < deadline, "the two searches never both waited for the store's lock"
                time.sleep(0.1)
            os.close(fd)  # both go
            fd = -1
            done = [r.result() for r in runs]
    finally:
        if fd >= 0:
            os.close(fd)
    for run in done:
        assert run.returncode == 0, run.describe()
        assert "Traceback" not in run.stderr and "resume with" not in run.stderr, run.describe()
    client = MlflowClient(uri)
    for name in ("A", "B"):
        exp = client.get_experiment_by_name(name)
        assert len(client.search_runs([exp.experiment_id], "tags.`optimix.role` = 'trial'")) == 2, name
        assert len(SearchState.latest(tmp_path / "runs", name).trials()) == 2


# ---------------------------------------------------------------------------------------------
# Small things that records depend on (fast)


@pytest.mark.parametrize("name", ["..", "../elsewhere", "a/b", "/etc", ".hidden", "x" * 300])
def test_an_experiment_name_never_leaves_the_storage_path(tmp_path, name):
    state = SearchState.create(tmp_path / "runs", name[:200])
    assert (tmp_path / "runs").resolve() in state.path.parents
    assert state.path.parent.parent == (tmp_path / "runs").resolve()


@pytest.mark.parametrize(("a", "b"), [("rt b", "rt_b"), ("rt/b", "rt_b"), ("rt b", "rt/b"), (".x", "x"),
                                      ("a" * 300, "a" * 301), ("", "search")])
def test_two_experiment_names_never_share_a_state_folder(tmp_path, a, b):
    first, second = SearchState.create(tmp_path, a), SearchState.create(tmp_path, b)
    assert first.path.parent != second.path.parent
    assert SearchState.latest(tmp_path, a).path == first.path
    assert SearchState.latest(tmp_path, b).path == second.path


@pytest.mark.parametrize("name", ["records", "rt_b", "quickstart-2.v1"])
def test_a_name_that_is_a_folder_name_keeps_its_folder(tmp_path, name):
    """Searches recorded before names got their own folders still ``--resume``."""
    assert SearchState.create(tmp_path, name).path.parent == tmp_path.resolve() / name


def cli_search(capsys, *args: str) -> tuple[int | str | None, str]:
    """``optimix search ARGS`` in this process: exit status and stderr."""
    from optimix.cli import main

    try:
        main(["search", *args])
        code = 0
    except SystemExit as err:
        code = err.code
    return code, capsys.readouterr().err


def test_a_resume_of_another_experiment_or_store_is_refused_before_anything_is_written(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(records_space()))
    storage, here, elsewhere = tmp_path / "runs", tmp_path / "here.db", tmp_path / "elsewhere.db"
    state = SearchState.create(storage, "rt_b")
    # As an optimix that gave "rt b" and "rt_b" one folder left it: a search of "rt b" there.
    state.write({"experiment": "rt b", "parent_run_id": "p", "tracking_uri": f"sqlite:///{here}",
                 "attempts": 0})
    common = ("--storage-path", str(storage), "--resume")

    code, err = cli_search(capsys, str(space), "--experiment", "rt b", *common, "--tracking-uri", f"sqlite:///{here}")
    assert code == 2 and err.startswith("error: --resume: no search of 'rt b'") and err.count("\n") == 1, err
    code, err = cli_search(capsys, str(space), "--experiment", "rt_b", *common, "--tracking-uri", f"sqlite:///{here}")
    assert code == 2 and err.startswith("error: --experiment:") and "'rt b'" in err and err.count("\n") == 1, err

    state.write({**state.read(), "experiment": "rt_b"})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, err = cli_search(capsys, str(space), "--experiment", "rt_b", *common,
                           "--tracking-uri", f"sqlite:///{elsewhere}")
    assert code == 2 and err.startswith("error: --tracking-uri:") and err.count("\n") == 1, err
    assert str(here) in err and str(elsewhere) in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no store, no folder


def ledger_line(trial_id: str, status: str = "ok", **result) -> dict:
    """A trial line as the driver writes it (the fields ``ledger.parse_line`` checks)."""
    counts = dict.fromkeys(("train_flops", "params", "non_embedding_params", "tokens", "wall_s",
                            "train_s", "tokens_per_s"), 1.0)
    return {"trial_id": trial_id, "status": status, "name": trial_id, "point": {}, "params": {},
            "result": {**counts, "accuracy": {}, "loss": {}, **result}}


def test_an_append_after_a_torn_line_is_never_glued_onto_it(tmp_path):
    state = SearchState(tmp_path)
    state.append(LedgerEntry.from_json(ledger_line("a")))
    with open(state.ledger, "a") as f:
        f.write('{"trial_id": "b", "n"')  # killed mid-write
    state.append(LedgerEntry.from_json(ledger_line("c")))
    assert state.ledger.read_text().splitlines() == [json.dumps(LedgerEntry.from_json(ledger_line(t)).to_json())
                                                     for t in "ac"]
    assert state.repair() == 0
    with open(state.ledger, "a") as f:
        f.write('{"trial_id": "d"')
    assert [e["trial_id"] for e in state.entries()] == ["a", "c"]  # a torn last line is left out
    assert state.repair() > 0 and state.ledger.read_text().endswith("\n")
    assert [e["trial_id"] for e in state.entries()] == ["a", "c"]


@pytest.mark.parametrize(("line", "problem"), [
    ("null", "line 2: null is not a ledger line (a JSON object)"),
    ("[1, 2, 3]", "line 2: [1, 2, 3] is not a ledger line (a JSON object)"),
    ('{"trial_id": "b", "n"', "line 2: not JSON ("),
    ('{"x": 1}', "line 2: an object with none of trial_id, logged, interrupted"),
    (json.dumps(ledger_line("b", train_flops="abc")), 'line 2: result.train_flops is "abc", not a finite number'),
    (json.dumps(ledger_line("b", status="great")), 'line 2: status is "great", not one of ok, failed'),
    (json.dumps(ledger_line("b", accuracy={"facts": "high"})), 'line 2: result.accuracy.facts is "high"'),
    ('{"logged": "a", "run_id": 7}', "line 2: run_id is 7, not a non-empty string"),
    ('{"interrupted": "a", "train_flops": -1}', "line 2: train_flops is -1, not a finite number >= 0"),
], ids=["null", "list", "torn-inside", "unknown", "flops-text", "status", "accuracy", "run-id", "negative"])
def test_a_malformed_ledger_line_is_one_line_naming_the_file_the_line_and_the_fault(tmp_path, line, problem):
    state = SearchState(tmp_path)
    state.append(LedgerEntry.from_json(ledger_line("a")))
    with open(state.ledger, "a") as f:
        f.write(line + "\n")
    state.append(LedgerEntry.from_json(ledger_line("c")))
    with pytest.raises(LedgerError) as err:
        state.entries()
    assert str(err.value).startswith(f"{state.ledger}: {problem}") and "\n" not in str(err.value)
    lines, errors = state.read_lines()  # what optimix check reads: the rest, and each fault
    assert [e["trial_id"] for e in lines] == ["a", "c"] and len(errors) == 1


def test_ci_never_stops_every_ray_on_the_machine():
    text = (ROOT / ".ci" / "run").read_text()
    assert "ray stop" not in text


def test_a_search_recorded_before_these_records_resumes_and_is_checked(tmp_path):
    """tests/data/pre_records_search: a 3-trial search recorded by optimix 8a37e8a (before
    the ledger-first searcher), whose seeded random sampler trained (0.1, 32) twice."""
    import gzip
    import shutil
    import sqlite3

    data = ROOT / "tests" / "data" / "pre_records_search"
    shutil.copytree(data / "runs", tmp_path / "runs")
    shutil.copy(data / "space.yaml", tmp_path / "space.yaml")
    db = tmp_path / "mlflow.db"
    db.write_bytes(gzip.decompress((data / "mlflow.db.gz").read_bytes()))
    with sqlite3.connect(db) as conn:  # its artifacts were kept where it ran: here instead
        conn.execute("UPDATE experiments SET artifact_location = replace(artifact_location, '/tmp/oldrec', ?)",
                     (str(tmp_path),))
        conn.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, '/tmp/oldrec', ?)", (str(tmp_path),))
    search = Search.__new__(Search)
    search.root, search.space, search.uri = tmp_path, tmp_path / "space.yaml", f"sqlite:///{db}"
    search.storage, search.env = tmp_path / "runs", base_env()
    before = {t.trial_id for t in SearchState.latest(search.storage, "before").trials()}

    done = search.run("--resume", "--trials", "5", "--experiment", "before")
    assert done.returncode == 0, done.stderr[-3000:]
    trials = SearchState.latest(search.storage, "before").trials()
    assert len(trials) == 5 and before <= {t.trial_id for t in trials}
    assert len(set(points_of(trials))) == 4  # the old repeat stays; nothing new repeats it
    check = subprocess.run([OPTIMIX, "check", "--experiment", "before", "--tracking-uri", search.uri,
                            "--storage-path", str(search.storage)], capture_output=True, text=True,
                           cwd=tmp_path, env=search.env, timeout=120)
    violations = [line for line in check.stdout.splitlines() if line.startswith("violation:")]
    assert check.returncode == 1 and len(violations) == 1, check.stdout
    assert violations[0].startswith("violation: repeat:"), violations
