"""What the tests share: the one tiny search space, the in-process Ray, the real searches that
many tests read, and small helpers. No test module imports another; each imports from here
(``from conftest import ...``) or from the helper modules ``cluster_fixtures`` and
``mlflow_proxy``.

A fixture that runs a real search is session-scoped when its tests only read what it
recorded (each runs once per ``pytest`` run, whichever modules ask for it); a test that
changes a search's records runs its own.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import optuna
import pytest
from mlflow.tracking import MlflowClient

from optimix.core.entry import LedgerEntry
from optimix.core.metrics import parse_objectives_tag
from optimix.search import SearchState

from cluster_fixtures import OPTIMIX, base_env, kill_sessions, optimix_search, short_tmp

# ---------------------------------------------------------------------------------------------
# The tiny space

# The tasks a tiny space draws on, each small enough to learn in seconds.
TASKS: dict[str, dict[str, Any]] = {
    "copy": {"kind": "copy", "length": 3, "alphabet": 8},
    "reverse": {"kind": "reverse", "length": 3, "alphabet": 8},
    "sort": {"kind": "sort", "length": 4, "alphabet": 8},
    "background": {"kind": "facts", "n_facts": 300, "zipf": 1.0, "alphabet": 16},
    "facts": {"kind": "facts", "n_facts": 20, "alphabet": 16},
    "modadd": {"kind": "modadd", "p": 11},
    "compare": {"kind": "compare", "p": 11},
}

TINY: dict[str, Any] = {
    "name": "tiny",
    "tasks": {name: TASKS[name] for name in ("copy", "background", "facts")},
    "mixture": {"rare_task": "facts", "rare_freq": {"dist": "loguniform", "low": 0.01, "high": 0.3}},
    "model": {"d_model": {"dist": "choice", "values": [16, 32]}, "n_layer": 1, "n_head": 2},
    "train": {"tokens": 15_000, "batch_size": 32, "threads": 1},
    "eval": {"points": 2, "size": 64},
    "search": {"trials": 6, "max_concurrent": 1, "cpus_per_trial": 1, "sampler": "tpe",
               "replicates": "off"},  # a test of replicates turns them on (test_replicates)
}
# One trial at a time unless a test asks for more: each concurrent trial has a Ray worker of its
# own, whose import of torch and transformers (about 5 CPU-s) is most of a tiny search's cost.

# A search dimension of injected faults (``train.fault``): trials that raise, diverge or kill
# their worker, at points a test names.
FAULTS = {"dist": "choice", "values": ["none", "raise", "nan", "exit"], "default": "none"}


def tiny_space(name: str = "tiny", *, tasks: Mapping[str, Mapping[str, Any]] | None = None,
               **sections: Any) -> dict:
    """The tiny space's tree (``TINY``: a trial trains in a second or two), named ``name``.

    ``tasks`` (name -> spec) replaces the tasks whole, in its order (the vocabulary's); a
    name of ``TASKS`` takes its spec there, updated with what is given (``{"facts": {}}``:
    the facts as they are). Every other section given (``mixture``, ``model``, ``train``,
    ``eval``, ``search``) is merged into ``TINY``'s key by key: a key given ``None`` is left
    out, and a section given ``None`` is left out whole. A section that is not a mapping
    (``seed``) is set as given.
    """
    tree = copy.deepcopy(TINY)
    tree["name"] = name
    if tasks is not None:
        tree["tasks"] = {task: {**TASKS.get(task, {}), **copy.deepcopy(dict(spec))}
                         for task, spec in tasks.items()}
    for section, given in sections.items():
        if given is None:
            tree.pop(section, None)
        elif isinstance(given, Mapping):
            merged = {**tree.get(section, {}), **copy.deepcopy(dict(given))}
            tree[section] = {k: v for k, v in merged.items() if v is not None}
        else:
            tree[section] = given
    return tree


# ---------------------------------------------------------------------------------------------
# The in-process Ray


@pytest.fixture(scope="session", autouse=True)
def ray_session():
    """The Ray an in-process ``run_search`` starts stays up for the whole run (each search
    finds it started: ``optimix.search.run._start_ray``) and is shut down once, at the end.
    Ray's start-up costs seconds; searches in subprocesses start their own."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------------------------------------
# Ledger entries made by hand

OBJ = parse_objectives_tag("acc/x:max,train_flops:min")


def curve_entry(trial_id: str, status: str, curve: list[tuple[int, float, float]], steps: int = 4) -> LedgerEntry:
    """A ledger entry of accuracy ``x`` whose learning curve is ``[(step, acc, flops), ...]``
    (the last point is its final result)."""
    points = [{"step": s, "tokens": 10 * s, "train_flops": f, "train_loss": 1.0, "train_s": 1.0,
               "accuracy": {"x": a}, "loss": {"x": 1 - a}} for s, a, f in curve]
    last = points[-1] if points else {"step": 0, "tokens": 0, "train_flops": 0.0, "accuracy": {}, "loss": {}}
    return LedgerEntry(trial_id=trial_id, status=status, result={
        "train_flops": last["train_flops"], "params": 100, "non_embedding_params": 50,
        "tokens": last["tokens"], "wall_s": 1.0, "train_s": 1.0, "tokens_per_s": 1.0,
        "steps": last["step"], "planned_steps": steps, "accuracy": last["accuracy"],
        "loss": last["loss"], "curve": points})


# ---------------------------------------------------------------------------------------------
# A real six-trial search that plan, verify and the MLflow UI read

PLAN_EXPERIMENT = "records"
# Every trial at a fixed point (two widths, rare frequencies from starved to saturated), so the
# records are the same from run to run whatever the sampler would have picked.
PLAN_POINTS = [(32, 0.4), (32, 0.1), (32, 0.02), (64, 0.3), (64, 0.05), (64, 0.01)]


@dataclass
class Recorded:
    """A search recorded through the command line: its folder (``mlflow.db``, ``runs/``), its
    store, its experiment and what it printed."""

    root: Path
    uri: str
    experiment: str
    stdout: str
    trials: int


@pytest.fixture(scope="session")
def quickstart_search(tmp_path_factory, worker_id) -> Recorded:
    """One real six-trial quickstart search (made tiny) through the command line, every trial
    at a fixed point. Read only: plan and verify read its records (test_records_plan,
    test_verify_records), the MLflow UI shows it (test_mlflow_ui). Recorded once per run:
    under pytest-xdist the first worker to ask records it, in the workers' shared folder, and
    the others wait on its lock and read it (``shared_once``)."""
    with shared_once(tmp_path_factory, worker_id, "records") as (root, done):
        if not done.exists():
            uri = f"sqlite:///{root / 'mlflow.db'}"
            points = json.dumps([{"model.d_model": d, "mixture.rare_freq": f} for d, f in PLAN_POINTS])
            ray_tmp = short_tmp("rp")
            try:
                run = optimix_search(
                    root, "--trials", str(len(PLAN_POINTS)), "--max-concurrent", "2", "--seed", "0",
                    "--tracking-uri", uri, "--experiment", PLAN_EXPERIMENT, "--storage-path", str(root / "runs"),
                    "--set", f"search.points_to_evaluate={points}",
                    env=base_env(RAY_TMPDIR=str(ray_tmp)), timeout=300)
            finally:
                shutil.rmtree(ray_tmp, ignore_errors=True)
            assert run.returncode == 0, run.describe()
            done.write_text(run.stdout)
    return Recorded(root, f"sqlite:///{root / 'mlflow.db'}", PLAN_EXPERIMENT, done.read_text(), len(PLAN_POINTS))


@contextlib.contextmanager
def shared_once(tmp_path_factory, worker_id: str, name: str):
    """(folder, marker) for something built once per ``pytest`` run and only read after: under
    pytest-xdist a folder in the workers' shared temporary root, held under a file lock while
    the caller builds it (it writes ``marker`` when done; a worker that finds the marker
    reads what is there); without xdist, a fresh folder."""
    if worker_id == "master":
        root = tmp_path_factory.mktemp(name)
        yield root, root / "done"
        return
    root = tmp_path_factory.getbasetemp().parent / name
    with filelock.FileLock(str(root) + ".lock"):
        if not (root / "done").exists():  # nothing yet, or what a failed build left
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
        yield root, root / "done"


@pytest.fixture(scope="session")
def plan_records(quickstart_search: Recorded):
    """(tracking URI, the search as ``load_search`` reads it) of ``quickstart_search``."""
    from optimix.records.records import load_search

    record = load_search(quickstart_search.uri, PLAN_EXPERIMENT)
    assert len(record.trials) == len(PLAN_POINTS) and all(t.status == "ok" for t in record.trials)
    assert all("shape.d_model" in t.params for t in record.trials)  # what made verify fail
    return quickstart_search.uri, record


def plan_cli(uri: str, capsys, *args: str) -> tuple[int | str | None, dict, str]:
    """``optimix plan --json ARGS`` on ``plan_records``' experiment, in-process: (exit status,
    document, stderr)."""
    from optimix.cli import main as cli_main

    code: int | str | None = 0
    try:
        cli_main(["plan", "--experiment", PLAN_EXPERIMENT, "--tracking-uri", uri, "--json", *args])
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


# ---------------------------------------------------------------------------------------------
# A search driven through the command line (test_records, test_ray_runtime)


def records_space(**search) -> dict:
    """Tiny trials (a second or two each) over choices only, so a seeded sampler that
    restarts its stream, or any repeat, shows as the same point twice."""
    return tiny_space("records",
                      tasks={"background": {"n_facts": 200}, "facts": {"n_facts": 8}},
                      mixture={"rare_freq": {"dist": "choice", "values": [0.05, 0.1, 0.2, 0.4]}},
                      train={"tokens": 12_000}, eval={"size": 32},
                      search={"trials": 3, "sampler": "random", **search})



def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """``optimix ARGS`` run in this process (the command line's own ``main``; a subprocess
    would spend seconds importing what pytest has imported): exit status, stdout, stderr."""
    from optimix.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    code: int | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main(args)
        except SystemExit as done:
            code = done.code
    return subprocess.CompletedProcess([OPTIMIX, *args], code or 0, out.getvalue(), err.getvalue())

class Search:
    """One search's files in a tmp folder, driven through the CLI as a user would."""

    def __init__(self, root: Path, tree: dict):
        self.root = root
        self.space = root / "space.yaml"
        self.space.write_text(json.dumps(tree))  # JSON is YAML
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.storage = root / "runs"
        self.env = base_env()

    def args(self, *extra: str, command: str = "search") -> list[str]:
        if command == "check":
            return [OPTIMIX, "check", "--experiment", "records", "--tracking-uri", self.uri,
                    "--storage-path", str(self.storage), *extra]
        return [OPTIMIX, "search", str(self.space), "--tracking-uri", self.uri,
                "--storage-path", str(self.storage), *extra]

    def run(self, *extra: str, command: str = "search", env: dict | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(self.args(*extra, command=command), cwd=self.root, env=env or self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            kill_sessions([proc.pid], grace_s=3.0)  # nothing it started outlives it
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def start(self, *extra: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.args(*extra), cwd=self.root, env=env or self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def state(self) -> SearchState:
        return SearchState.latest(self.storage, "records")

    def trials(self) -> list[LedgerEntry]:
        return [LedgerEntry.from_json(e) for e in self.state().entries() if "trial_id" in e]

    def wait_for_trials(self, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.trials()) >= n:
                    return
            except Exception:  # the folder is not there yet
                pass
            assert proc.poll() is None, f"the search ended first ({proc.returncode}): {proc.stderr.read()[-2000:]}"
            time.sleep(0.1)
        raise AssertionError(f"fewer than {n} trials finished in {timeout} s")

    def check(self) -> subprocess.CompletedProcess:
        """``optimix check`` on this search, run in this process (``run_cli``)."""
        return run_cli(self.args(command="check")[1:])

    def study(self) -> optuna.Study:
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(self.state().journal)))
        return optuna.load_study(study_name="records", storage=storage)

    def parent(self):
        client = MlflowClient(self.uri)
        exp = client.get_experiment_by_name("records")
        parents = client.search_runs([exp.experiment_id], "tags.`optimix.role` = 'search'")
        assert len(parents) == 1
        return parents[0]
