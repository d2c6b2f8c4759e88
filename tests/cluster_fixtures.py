"""Helpers for the end-to-end tests that start real services: a multi-node Ray cluster on
loopback and an ``mlflow server``.

Every process these helpers start is launched in a new session (``start_new_session=True``),
and teardown ends every process of that session: Ray's daemons (GCS, raylets, agents) and
its workers stay in the session of the ``ray start`` that launched them (workers only change
their process group), so nothing another user's Ray or MLflow runs on the same machine is
ever touched, and ``ray stop`` (which stops every Ray on the machine) is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
MLFLOW = str(VENV_BIN / "mlflow")
OPTIMIX = str(VENV_BIN / "optimix")

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"

# The quickstart space made tiny: each trial trains in a second or two. Eight rare facts and a
# rare frequency up to 0.5 give accuracies that differ between trials, so the frontier is not
# decided by FLOPs alone.
TINY_OVERRIDES = (
    "train.tokens=20000",
    "eval.size=64",
    "tasks.background.n_facts=300",
    "tasks.facts.n_facts=8",
    "mixture.rare_freq={dist: loguniform, low: 0.01, high: 0.5}",
    "search.cpus_per_trial=1",
)
TASKS = ("copy", "reverse", "sort", "background", "facts")


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(entry))
    return out


def kill_sessions(sids: Iterable[int], grace_s: float = 8.0) -> list[int]:
    """SIGTERM every process of the sessions, SIGKILL what is left after ``grace_s``.

    Returns the pids still alive at the end (empty when all are gone).
    """
    sids = list(sids)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pids = [p for s in sids for p in session_pids(s)]
        if not pids:
            return []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(session_pids(s) for s in sids):
            time.sleep(0.2)
    return [p for s in sids for p in session_pids(s)]


@dataclass
class Completed:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float

    def describe(self) -> str:
        return (f"$ {' '.join(self.args)}\nexit {self.returncode} after {self.wall_s:.1f} s\n"
                f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}")


def run_in_session(args: list[str], *, env: dict[str, str], cwd: str | Path | None = None,
                   timeout: float, sessions: list[int] | None = None) -> Completed:
    """Run a command in a new session; on timeout, kill the whole session and fail.

    The session id is appended to ``sessions`` (when given) so that a caller can end what
    the command left running (``ray start`` leaves its daemons there by design).
    """
    started = time.monotonic()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    if sessions is not None:
        sessions.append(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_sessions([proc.pid], grace_s=3.0)
        out, err = proc.communicate()
        done = Completed(list(args), -9, out, err, time.monotonic() - started)
        raise AssertionError(f"timed out after {timeout:.0f} s\n{done.describe()}") from None
    finally:
        if sessions is None:  # nothing it started may outlive it
            kill_sessions([proc.pid], grace_s=3.0)
    return Completed(list(args), proc.returncode, out, err, time.monotonic() - started)


def base_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would point a tool elsewhere. An ``mlflow
    server`` (or ``mlflow ui``) started with it runs no job executor: that is MLflow's GenAI
    scoring, which optimix never uses, and its runner and seven Huey consumers took about
    20 CPU-s at each server's start, on a 2-core machine."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_")) and k not in ("TMPDIR",)}
    env.update(PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_USAGE_STATS="1",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.update(extra)
    return env


def short_tmp(prefix: str) -> Path:
    """A short directory under /tmp: Ray's Unix socket paths must stay under ~107 chars."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def optimix_search_args(*extra: str) -> list[str]:
    """``optimix search`` of the quickstart space made tiny, with ``extra`` arguments."""
    args = [OPTIMIX, "search", str(QUICKSTART)]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    return args + list(extra)


def optimix_search(cwd: Path, *extra: str, env: dict[str, str], timeout: float = 150) -> Completed:
    return run_in_session(optimix_search_args(*extra), env=env, cwd=cwd, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# A two-node Ray cluster on loopback


@dataclass
class RayCluster:
    address: str
    temp_dir: Path
    env: dict[str, str]
    sessions: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def alive_nodes(self, want: int, timeout: float = 45) -> list[dict]:
        """Connect as a driver (in a subprocess) and list the alive nodes and their
        resources; waits until at least ``want`` are alive."""
        script = textwrap.dedent(f"""
            import json, time, ray
            ray.init(address={self.address!r}, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
            deadline = time.monotonic() + {timeout}
            while True:
                nodes = [n for n in ray.nodes() if n["Alive"]]
                if len(nodes) >= {want} or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            print("NODES=" + json.dumps([{{"id": n["NodeID"], "ip": n["NodeManagerAddress"],
                                          "resources": n["Resources"]}} for n in nodes]))
            ray.shutdown()
        """)
        done = run_in_session([sys.executable, "-c", script], env=self.env, timeout=timeout + 30)
        assert done.returncode == 0, done.describe()
        line = [s for s in done.stdout.splitlines() if s.startswith("NODES=")]
        assert line, done.describe()
        return json.loads(line[-1][len("NODES="):])

    def status(self, expect: Iterable[str] = (), timeout: float = 60) -> Completed:
        """``ray status``, repeated until its output names every string in ``expect``.

        ``ray status`` prints the autoscaler's snapshot, refreshed every few seconds, so a
        node that the GCS already lists as alive can be missing from it for a while.
        """
        deadline = time.monotonic() + timeout
        while True:
            done = run_in_session([RAY, "status", "--address", self.address], env=self.env,
                                  timeout=60)
            if (done.returncode != 0 or all(e in done.stdout for e in expect)
                    or time.monotonic() > deadline):
                return done
            time.sleep(1.0)


@contextlib.contextmanager
def ray_cluster(timeout: float = 90, **extra_env: str) -> Iterator[RayCluster]:
    """``ray start --head`` plus one more node, both on 127.0.0.1, with token auth, each
    with 1 CPU. ``extra_env``: more variables for the nodes, whose workers inherit them (e.g.
    ``Holds.env``).

    The token is this cluster's own (``RAY_AUTH_TOKEN``), never ``~/.ray/auth_token``; the
    temp dir is a fresh short one, so the cluster's address file and sessions stay out of
    ``/tmp/ray``. Teardown ends both nodes' sessions, whatever happened.
    """
    temp_dir = short_tmp("rt")
    env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                   RAY_TMPDIR=str(temp_dir), **extra_env)
    port = free_port()
    cluster = RayCluster(address=f"127.0.0.1:{port}", temp_dir=temp_dir, env=env)
    head = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--num-cpus", "1", "--num-gpus", "0", "--resources", json.dumps({"node_head": 1}),
            "--include-dashboard", "false", "--dashboard-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()),
            "--disable-usage-stats", "--temp-dir", str(temp_dir)]
    worker = [RAY, "start", "--address", cluster.address, "--node-ip-address", "127.0.0.1",
              "--num-cpus", "1", "--num-gpus", "0", "--resources", json.dumps({"node_worker": 1}),
              "--dashboard-agent-listen-port", str(free_port()),
              "--disable-usage-stats", "--temp-dir", str(temp_dir)]
    try:
        for args in (head, worker):
            done = run_in_session(args, env=env, timeout=timeout, sessions=cluster.sessions)
            cluster.log.append(done.describe())
            assert done.returncode == 0, "\n\n".join(cluster.log)
        yield cluster
    finally:
        left = kill_sessions(cluster.sessions, grace_s=3.0)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes survived teardown: {left}"


# ---------------------------------------------------------------------------------------------
# An MLflow tracking server


@dataclass
class MlflowServer:
    uri: str
    root: Path
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""


@contextlib.contextmanager
def mlflow_server(root: Path, timeout: float = 60, port: int | None = None) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1 with a SQLite store, proxying artifacts to a folder; on
    ``port`` if given (a server restarted where it was), else on a free one."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = root / "server.log"
    args = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
            "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
            "--workers", "1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, env=base_env(), cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", root, proc, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"mlflow server exited {proc.returncode}:\n{server.log_tail()}"
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server not healthy in {timeout} s:\n{server.log_tail()}"
            time.sleep(0.3)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        left = kill_sessions([proc.pid], grace_s=2.0)  # the server's workers, huey consumers
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        assert not left, f"mlflow processes survived teardown: {left}"


# ---------------------------------------------------------------------------------------------
# Reading a search back


def frontier_by_hand(client, runs, metric: str = "acc/facts") -> tuple[set[str], dict[str, list[int]]]:
    """The (accuracy up, FLOPs down) frontier over every ok trial's final metrics and every
    earlier learning-curve point of ok and pruned trials, read from what MLflow logged.

    Returns (runs whose final result is on it, {run: its curve steps on it}), to compare
    with the ``optimix.pareto`` and ``optimix.pareto_steps`` tags.
    """
    points: dict[tuple[str, int | None], tuple[float, float]] = {}
    for r in runs:
        status = r.data.tags["optimix.status"]
        if status not in ("ok", "pruned"):
            continue
        acc = {m.step: m.value for m in client.get_metric_history(r.info.run_id, f"curve/{metric}")}
        flops = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "curve/train_flops")}
        last = max(acc) if status == "ok" else None
        for step in acc:
            if step != last:
                points[(r.info.run_id, step)] = (acc[step], flops[step])
        if status == "ok":
            points[(r.info.run_id, None)] = (r.data.metrics[metric], r.data.metrics["train_flops"])
    front = pareto_set(points)
    # A curve point tied with a final result is left out; of tied curve points, the one of
    # the smallest (trial id, step) is kept.
    trial_ids = {r.info.run_id: r.data.tags["optimix.trial_id"] for r in runs}
    final_values = {points[k] for k in front if k[1] is None}
    kept: dict[tuple[float, float], tuple[str, int]] = {}
    for run, step in front:
        if step is not None and points[(run, step)] not in final_values:
            best = kept.get(points[(run, step)])
            if best is None or (trial_ids[run], step) < (trial_ids[best[0]], best[1]):
                kept[points[(run, step)]] = (run, step)
    front = {k for k in front if k[1] is None} | set(kept.values())
    finals = {run for run, step in front if step is None}
    steps: dict[str, list[int]] = {}
    for run, step in sorted(front, key=lambda k: (k[0], k[1] or 0)):
        if step is not None:
            steps.setdefault(run, []).append(step)
    return finals, steps


def pareto_set(points: dict) -> set:
    """Keys of the points no other point dominates: (accuracy, max) and (FLOPs, min)."""
    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    return {k for k, p in points.items()
            if not any(dominates(q, p) for j, q in points.items() if j != k)}


# ---------------------------------------------------------------------------------------------
# A search held at chosen points (optimix.core.faults: OPTIMIX_HOLD_AT), by construction


class Holds:
    """The FIFOs a search held at ``OPTIMIX_HOLD_AT`` points waits on (``optimix.core.faults``)."""

    def __init__(self, folder: Path, points: list[str]):
        self.folder = folder
        self.env = {"OPTIMIX_HOLD_AT": ",".join(points), "OPTIMIX_HOLD_DIR": str(folder)}
        self.open: dict[str, int] = {}
        for point in points:
            os.mkfifo(folder / point.replace(":", "."))

    def reached(self, point: str, proc: subprocess.Popen, timeout: float = 180,
                processes: int = 1) -> list[int]:
        """Wait until ``processes`` processes of the search are held at ``point`` at once (its
        FIFO's readers are there: 1, the driver; more, a barrier of the trials' workers at
        such a point as ``trial_started:1``) and hold them. Returns their pids.

        Every later visit of ``point`` then passes without a hold (the FIFO is swapped for an
        empty file, which those already held do not see): a worker that comes later, or a
        trial run again in a new worker, never waits for ever."""
        fifo = str(self.folder / point.replace(":", "."))
        opened: list[int] = []
        opener = threading.Thread(target=lambda: opened.append(os.open(fifo, os.O_WRONLY)), daemon=True)
        opener.start()
        deadline = time.monotonic() + timeout
        while opener.is_alive() and proc.poll() is None and time.monotonic() < deadline:
            opener.join(timeout=1.0)
        if not opened:
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the opener go
            opener.join()
            raise AssertionError(f"the search never reached {point} (exit {proc.poll()})")
        self.open[point] = opened[0]
        while len(held := fifo_readers(fifo)) < processes:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{len(held)} of {processes} processes reached {point} "
                                     f"(exit {proc.poll()}): {held}")
            time.sleep(0.2)
        passed = f"{fifo}.passed"
        Path(passed).touch()
        os.replace(passed, fifo)
        return held

    def release(self, point: str) -> None:
        """Let the search go on from ``point``."""
        os.close(self.open.pop(point))

    def release_all(self) -> None:
        for point in list(self.open):
            self.release(point)


def fifo_readers(fifo: str) -> list[int]:
    """The processes other than this one that have ``fifo`` open (held at it)."""
    fifo = os.path.realpath(fifo)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") == fifo for fd in os.listdir(f"/proc/{entry}/fd")):
                found.append(int(entry))
    return found
