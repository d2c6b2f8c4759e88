"""The machinery of the fault benchmarks (``faults.py``, ``hostile.py``): a search's folder
under /tmp (``Workdir``), its commands run in sessions of their own and ended whole, ``optimix
check`` plus an independent frontier by hand, and the record of one run of a case (``Run``)."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from optimix.search.ledger import SearchState  # noqa: E402

from cluster_fixtures import OPTIMIX, base_env, frontier_by_hand, kill_sessions  # noqa: E402

EXPERIMENT = "faults"
# The search every fault case stops: 4 trials of a second or two each, 2 at a time, with
# the default sampler (``auto``), so that a resumed sampler that proposes a trained point
# again shows as a ``repeat`` violation.
TINY = {
    "name": EXPERIMENT,
    "tasks": {
        "copy": {"kind": "copy", "length": 3, "alphabet": 8},
        "background": {"kind": "facts", "n_facts": 300, "zipf": 1.0, "alphabet": 16},
        "facts": {"kind": "facts", "n_facts": 20, "alphabet": 16},
    },
    "mixture": {"rare_task": "facts", "rare_freq": {"dist": "loguniform", "low": 0.01, "high": 0.3}},
    "model": {"d_model": {"dist": "choice", "values": [16, 32]}, "n_layer": 1, "n_head": 2},
    "train": {"tokens": 12_000, "batch_size": 32, "threads": 1},
    "eval": {"points": 2, "size": 32},
    "search": {"trials": 4, "max_concurrent": 2, "cpus_per_trial": 1},
}
TIMED_OUT = 124
SEARCH_TIMEOUT_S = 300.0


@dataclass
class Run:
    """One run of a case: the fault, whether it landed, and what came of it."""

    case: str
    fault: str
    landed: bool = False
    """The fault hit the search (it was killed, interrupted, refused, or MLflow faulted)."""
    exit: int | None = None
    """The exit status of the search the fault hit (negative: the signal that ended it)."""
    recover_s: float | None = None
    """Wall time of the ``--resume`` that completed the search (None: none was needed)."""
    wall_s: float | None = None
    trials: int | None = None
    before: int | None = None
    """Trials in the ledger when the fault landed (kills: when the driver died)."""
    violations: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    kept: str | None = None
    """The run's folder, kept when it found a violation."""
    notes: dict = field(default_factory=dict)


@dataclass
class Done:
    """A finished command."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float


@dataclass
class Started:
    """A running command: its process (the leader of its own session) and output files."""

    proc: subprocess.Popen
    out: Path
    err: Path
    at: float


class Workdir:
    """One search's folder: the space, the MLflow store, the search state, Ray's temp dir."""

    def __init__(self, tree: dict, run: Run):
        self.root = Path(tempfile.mkdtemp(prefix="ofx", dir="/tmp"))  # short: Ray's socket paths
        self.space = self.root / "space.yaml"
        self.space.write_text(json.dumps(tree))  # JSON is YAML
        self.uri = f"sqlite:///{self.root}/mlflow.db"
        self.hand_uri: str | None = None  # where frontier_by_hand reads (default: uri)
        self.storage = self.root / "runs"
        self.env = base_env(RAY_TMPDIR=str(self.root / "ray"))
        self.run = run
        self.n = 0

    def search_args(self, *extra: str) -> list[str]:
        return [OPTIMIX, "search", str(self.space), "--tracking-uri", self.uri,
                "--storage-path", str(self.storage), *extra]

    def start(self, args: list[str], env: dict[str, str] | None = None) -> Started:
        """Start a command in a session of its own, its output to files (never a full pipe)."""
        env = env or {}
        self.run.commands.append(" ".join([*(f"{k}={v}" for k, v in env.items()), shlex.join(args)]))
        self.n += 1
        out, err = self.root / f"cmd{self.n}.out", self.root / f"cmd{self.n}.err"
        with open(out, "w") as fo, open(err, "w") as fe:
            proc = subprocess.Popen(args, cwd=self.root, env={**self.env, **env}, stdout=fo, stderr=fe,
                                    start_new_session=True)
        return Started(proc, out, err, time.monotonic())

    def finish(self, started: Started, timeout: float = SEARCH_TIMEOUT_S) -> Done:
        """Wait for the command, then end whatever it left in its session."""
        proc = started.proc
        try:
            proc.wait(timeout=max(1.0, started.at + timeout - time.monotonic()))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = TIMED_OUT
        wall = time.monotonic() - started.at
        kill_sessions([proc.pid], grace_s=3.0)
        proc.wait()
        out, err = started.out.read_text(errors="replace"), started.err.read_text(errors="replace")
        for text in (out, err):
            if "database is locked" in text:
                self.run.violations.append(f"'database is locked' in the output of: {shlex.join(proc.args)}")
        if code == TIMED_OUT:
            self.run.violations.append(f"timed out after {timeout:.0f} s: {shlex.join(proc.args)}")
        return Done(code, out, err, wall)

    def call(self, args: list[str], env: dict[str, str] | None = None,
             timeout: float = SEARCH_TIMEOUT_S) -> Done:
        return self.finish(self.start(args, env), timeout)

    def state(self, experiment: str = EXPERIMENT) -> SearchState | None:
        try:
            return SearchState.latest(self.storage, experiment)
        except Exception:  # not there yet
            return None

    def ledger_trials(self) -> int:
        state = self.state()
        return 0 if state is None else sum("trial_id" in e for e in state.entries())

    def resume(self) -> Done:
        """``--resume`` when the search got far enough to have a folder, else a new start."""
        if self.state() is None:
            self.run.notes["restarted"] = "no search folder yet: started anew"
            return self.call(self.search_args())
        return self.call(self.search_args("--resume"))

    def check(self, trials: int, curve_points: int | None = None, experiment: str = EXPERIMENT) -> None:
        """``optimix check``, then what the case adds to it; violations go to the run."""
        v = self.run.violations
        done = self.call([OPTIMIX, "check", "--experiment", experiment, "--tracking-uri", self.uri,
                          "--storage-path", str(self.storage), "--json"], timeout=180)
        if done.returncode not in (0, 1):
            v.append(f"optimix check: exit {done.returncode}: {last_line(done.stderr)}")
            return
        report = json.loads(done.stdout)
        v += [f"{x['kind']}: {x['detail']}" for x in report["violations"]]
        if report["violations"] and done.returncode != 1:
            v.append(f"optimix check: exit {done.returncode} with violations")
        if report["running"]:
            v.append("optimix check: the search still counts as running")
        self.run.trials = report["trials"]
        if report["trials"] != trials:
            v.append(f"trials: {report['trials']} in the ledger, {trials} planned")
        state = self.state(experiment)
        for i, line in enumerate(state.ledger.read_text().splitlines() if state else []):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                v.append(f"ledger: line {i + 1} is not whole JSON: {line[:80]!r}")
        v += hand_check(self.hand_uri or self.uri, report["parent_run_id"], curve_points, experiment)

    def close(self, keep: bool) -> None:
        if keep and self.run.violations:
            self.run.kept = str(self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def hand_check(uri: str, parent_id: str | None, curve_points: int | None,
               experiment: str = EXPERIMENT) -> list[str]:
    """The test suite's frontier, computed from what MLflow logged, against the tags."""
    from mlflow.tracking import MlflowClient

    if parent_id is None:
        return []
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    out = []
    try:
        finals, steps = frontier_by_hand(client, runs)
    except KeyError as err:  # a run without the tags or metrics a logged trial has
        return [f"frontier-by-hand: a child run lacks {err}"]
    tagged = {r.info.run_id for r in runs if r.data.tags.get("optimix.pareto") == "true"}
    if tagged != finals:
        out.append(f"frontier-by-hand: pareto tags {sorted(tagged)} != {sorted(finals)}")
    tagged_steps = {r.info.run_id: json.loads(r.data.tags["optimix.pareto_steps"]) for r in runs
                    if r.data.tags.get("optimix.pareto_steps", "[]") != "[]"}
    if tagged_steps != steps:
        out.append(f"frontier-by-hand: pareto_steps tags {tagged_steps} != {steps}")
    if curve_points:
        for r in runs:
            n = len(client.get_metric_history(r.info.run_id, "curve/acc/facts"))
            if n != curve_points:
                out.append(f"curve: run {r.info.run_id} has {n} of {curve_points} learning-curve points")
    return out


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


def no_traceback(w: Workdir, done: Done, what: str) -> None:
    if "Traceback" in done.stderr:
        at = done.stderr.index("Traceback")
        w.run.violations.append(f"{what}: a traceback on stderr: {done.stderr[at:at + 300]!r}")


def completed(w: Workdir, done: Done, what: str) -> None:
    """A search that must end normally (the resume, or one no fault stopped)."""
    if done.returncode != 0:
        w.run.violations.append(f"{what}: exit {done.returncode}: {last_line(done.stderr)}")
    no_traceback(w, done, what)


def interrupted_record(w: Workdir, saved: dict, sig: signal.Signals) -> list[str]:
    """What an interrupted search leaves: state ``interrupted``, its parent run KILLED and
    tagged ``optimix.ended`` with the signal's name."""
    from mlflow.tracking import MlflowClient

    out = []
    if saved.get("status") != "interrupted":
        out.append(f"state.json: status {saved.get('status')!r} after {sig.name}, not 'interrupted'")
    if saved.get("parent_run_id"):
        parent = MlflowClient(w.uri).get_run(saved["parent_run_id"])
        ended = parent.data.tags.get("optimix.ended")
        if parent.info.status != "KILLED" or ended != sig.name:
            out.append(f"parent run: {parent.info.status}, optimix.ended {ended!r} after {sig.name}")
    return out


def wait_for(cond: Callable[[], bool], started: Started, timeout: float) -> bool:
    """Poll ``cond`` until it holds (True), or the process ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if started.proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False
