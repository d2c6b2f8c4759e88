"""The Ray a search starts in-process: token authentication on whatever Ray's default, and
nothing of it left once the driver is killed outright. Real searches (``optimix search`` in a
subprocess of its own session), real Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cluster_fixtures import Holds, base_env, kill_sessions, session_pids
from conftest import Search, records_space

pytestmark = pytest.mark.slow


def test_the_in_process_ray_uses_token_auth_and_refuses_a_client_without_the_token(tmp_path):
    """Even where ``RAY_AUTH_MODE=disabled`` was set (as Ray before 2.59 defaults): the search's
    Ray runs in token mode, and a client that brings no token is refused."""
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(records_space(trials=1)))
    script = textwrap.dedent(f"""
        import json, os, subprocess, sys
        import ray  # imported (and its config read) before the search sets the mode
        from optimix.search import SearchOptions, run_search
        from optimix.core.space import load_space
        run_search(load_space({str(space)!r}), SearchOptions(
            tracking_uri="sqlite:///{tmp_path}/mlflow.db", storage_path="{tmp_path}/runs"))
        worker_mode = ray.get(ray.remote(lambda: os.environ.get("RAY_AUTH_MODE")).remote())
        gcs = ray.get_runtime_context().gcs_address
        client = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=" + repr(gcs) + ")"],
                                env={{**os.environ, "RAY_AUTH_MODE": "disabled", "HOME": {str(tmp_path)!r},
                                     "RAY_AUTH_TOKEN": ""}}, capture_output=True, text=True, timeout=120)
        print("RESULT=" + json.dumps({{"worker_mode": worker_mode, "client_rc": client.returncode,
                                      "client_err": client.stderr[-2000:]}}))
        ray.shutdown()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=base_env(RAY_AUTH_MODE="disabled"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        kill_sessions([proc.pid], grace_s=3.0)
    assert proc.returncode == 0, err[-3000:]
    [line] = [s for s in out.splitlines() if s.startswith("RESULT=")]
    result = json.loads(line[len("RESULT="):])
    assert result["worker_mode"] == "token", result
    assert result["client_rc"] != 0 and "InvalidAuthToken" in result["client_err"], result


def test_no_idle_ray_worker_runs_beside_the_trials_and_none_outlives_a_driver_killed_outright(tmp_path):
    """The driver's first trial held in its worker (``trial_started:1``):

    - no idle Ray worker runs beside it. Tune gives each trial actor a runtime env of its own,
      so workers Ray prestarts (seconds before, as the driver connects) could never run a
      trial; the local Ray prestarts none;
    - then ``kill -9`` of the driver: every process of its session (Ray's daemons, agents,
      workers) ends within seconds. (Ray's agents alone would wait a minute, listening, to
      report the raylet's death to a GCS that died with it.)"""
    search = Search(tmp_path, records_space(trials=2, max_concurrent=1))
    holds = Holds(tmp_path, ["trial_started:1"])
    proc = search.start(env={**search.env, **holds.env})
    try:
        holds.reached("trial_started:1", proc)
        idle = [pid for pid in session_pids(proc.pid) if _name(pid).startswith("ray::IDLE")]
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 20
        while session_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: _name(pid) for pid in session_pids(proc.pid)}
    finally:
        holds.release_all()
        kill_sessions([proc.pid], grace_s=3.0)
    assert not idle, f"idle Ray workers beside the trials: {idle}"
    assert not left, f"left 20 s after the driver was killed: {left}"


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


def test_ctrl_c_while_ray_starts_ends_the_search_in_one_line_and_writes_nothing(tmp_path):
    """SIGINT to the whole process group (as Ctrl-C), with the search held just after Ray
    started and before it wrote anything: one line, exit 130, no traceback, no store, no folder."""
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(records_space(trials=1)))
    holds = Holds(tmp_path, ["ray_started:1"])
    proc = subprocess.Popen([str(Path(sys.executable).parent / "optimix"), "search", str(space),
                             "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                             "--storage-path", str(tmp_path / "runs")],
                            cwd=tmp_path, env=base_env(**holds.env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        holds.reached("ray_started:1", proc)
        os.killpg(proc.pid, signal.SIGINT)
        holds.release_all()
        _, err = proc.communicate(timeout=120)
    finally:
        kill_sessions([proc.pid], grace_s=3.0)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip() == "search: interrupted by SIGINT while Ray started; nothing was written", err[-2000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()

