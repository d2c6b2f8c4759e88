"""Hostile probes: what a user trying to break optimix tries, each through the real CLI and
judged by ``optimix check`` plus the promise the probe names. Run by ``benchmarks/faults.py
--cases hostile`` (one run per probe); each returns a ``fault_workdir.Run`` whose violations are the
broken promises.

The probes (one per defect found by a hostile review, each with its test in ``tests/``):

- ``credentials``: a password in ``--tracking-uri`` (a real ``mlflow server``) never reaches
  stdout, stderr or the state folder, in a finished and an interrupted search;
- ``experiment-names``: experiments whose names differ only in characters a folder name
  cannot hold ("rt b", "rt_b") keep separate state; each resumes its own search;
- ``new-store-race``: two searches started together on a store that does not exist yet;
- ``refused-leaves-nothing``: a search refused for bad input writes no experiment, folder or
  parent run, and a ``--resume`` after it is refused too; ``validate`` refuses bad constraints;
- ``joint-infeasible``: grid points that cannot be built (a share above its burst duty) are
  infeasible trials, and the search goes on to its end;
- ``check-while-running``: ``optimix check`` run again and again during a search finds nothing;
- ``run-id-alone``: ``frontier --run-id`` and ``plan --run-id`` without ``--experiment``;
- ``deleted-child``: a child run deleted in MLflow is restored by ``--resume`` (or the resume
  fails saying so);
- ``seed-range``: a seed outside [0, 2**32) is bad input to validate, train and search;
- ``malformed-ledger``: ``null``, a non-number FLOPs count and a stray list in the ledger:
  ``check`` names the line (exit 1), ``--resume`` refuses (exit 2) and fails nothing;
- ``null-answer``: a dataset row whose answer is null is refused, naming the row;
- ``long-text-line``: a 5 MB line in a text corpus validates in bounded time;
- ``unschedulable``: ``search.cpus_per_trial`` no node can hold is refused in one line;
- ``all-failed``: a search whose every trial failed exits non-zero;
- ``tampered``: an accuracy edited in MLflow, a point edited in the ledger, ``state.json``
  deleted: ``check`` finds each.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from fault_workdir import (
    OPTIMIX,
    TINY,
    Done,
    Run,
    Workdir,
    completed,
    last_line,
    no_traceback,
    wait_for,
)

from cluster_fixtures import mlflow_server

PROBES: list[Callable[[bool], Run]] = []


def probe(fn: Callable[[Workdir], None]) -> Callable[[bool], Run]:
    """A probe: ``fn(workdir)`` adds its violations to ``workdir.run``; a crash of the probe
    itself is a violation too (to look at), never a crash of the benchmark."""
    name = fn.__name__.replace("_", "-")

    def run(keep: bool) -> Run:
        r = Run(f"hostile:{name}", (fn.__doc__ or "").strip().splitlines()[0])
        w = Workdir(tiny(2), r)
        try:
            fn(w)
            r.landed = True
        except Exception as err:
            r.violations.append(f"benchmark: {type(err).__name__}: {err}")
        w.close(keep)
        return r

    run.__name__ = name
    PROBES.append(run)
    return run


def tiny(trials: int, **changes) -> dict:
    tree = json.loads(json.dumps(TINY))
    tree["search"]["trials"] = trials
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _refused(w: Workdir, done: Done, what: str, *, code: int = 2) -> None:
    """Bad input: exit ``code``, one line on stderr, no traceback."""
    if done.returncode != code:
        w.run.violations.append(f"{what}: exit {done.returncode}, not {code}: {last_line(done.stderr)}")
    no_traceback(w, done, what)
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    if done.returncode == code and len(lines) != 1:
        w.run.violations.append(f"{what}: not one 'error:' line: {done.stderr[-300:]!r}")


def _experiments(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return []
    return [e.name for e in MlflowClient(uri).search_experiments() if e.name != "Default"]


def _use(w: Workdir, tree: dict) -> None:
    w.space.write_text(json.dumps(tree))


@probe
def credentials(w: Workdir) -> None:
    """a password in --tracking-uri: a finished search, then one interrupted by SIGINT"""
    secret = "s3cr3tPW"
    with mlflow_server(w.root / "server") as server:
        w.uri, w.hand_uri = server.uri.replace("http://", f"http://alice:{secret}@"), server.uri
        outputs = [w.call(w.search_args())]
        completed(w, outputs[0], "search")
        started = w.start(w.search_args("--resume", "--set", "search.trials=4"))
        wait_for(lambda: w.ledger_trials() >= 3, started, 180)
        if started.proc.poll() is None:
            os.killpg(started.proc.pid, signal.SIGINT)
        outputs.append(w.finish(started))
        outputs.append(w.call(w.search_args("--resume", "--set", "search.trials=4")))
        completed(w, outputs[-1], "--resume")
        for done in outputs:
            if secret in done.stdout + done.stderr:
                line = next(x for x in (done.stdout + done.stderr).splitlines() if secret in x)
                w.run.violations.append(f"the password printed: {line[:200]!r}")
        for path in w.storage.rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                w.run.violations.append(f"the password written to {path.relative_to(w.root)}")
        w.check(4)


@probe
def experiment_names(w: Workdir) -> None:
    """--experiment "rt b" and --experiment rt_b, then "rt b" --resume"""
    for name in ("rt b", "rt_b"):
        completed(w, w.call(w.search_args("--experiment", name)), f"search {name!r}")
    paths = {name: w.state(name) for name in ("rt b", "rt_b")}
    if None in paths.values() or paths["rt b"].path == paths["rt_b"].path:
        w.run.violations.append(f"state folders: {({k: str(v and v.path) for k, v in paths.items()})}")
    completed(w, w.call(w.search_args("--experiment", "rt b", "--resume", "--set", "search.trials=3")),
               "'rt b' --resume")
    w.check(3, experiment="rt b")
    w.check(2, experiment="rt_b")


@probe
def new_store_race(w: Workdir) -> None:
    """two searches started together on a store that does not exist yet"""
    started = [w.start(w.search_args("--experiment", name)) for name in ("A", "B")]
    for name, s in zip(("A", "B"), started, strict=True):
        completed(w, w.finish(s), f"search {name}")
    for name in ("A", "B"):
        w.check(2, experiment=name)


BAD_CONSTRAINTS = ("acc/nope >= 0.1", "acc/facts => 0.1", "acc/facts >= nan", "acc/facts >= inf",
                   "acc/mean(facts) >= 0.1")


@probe
def refused_leaves_nothing(w: Workdir) -> None:
    """a search refused for a bad constraint, then --resume; validate on bad constraints"""
    for bad in BAD_CONSTRAINTS:
        _use(w, tiny(2, **{"search.constraints": [bad]}))
        _refused(w, w.call([OPTIMIX, "validate", str(w.space)], timeout=120), f"validate {bad!r}")
    _use(w, tiny(2, **{"search.constraints": [BAD_CONSTRAINTS[0]]}))
    _refused(w, w.call(w.search_args()), "search")
    if _experiments(w.uri):
        w.run.violations.append(f"a refused search created experiments {_experiments(w.uri)}")
    if w.storage.exists() and any(w.storage.iterdir()):
        w.run.violations.append(f"a refused search left {sorted(p.name for p in w.storage.iterdir())}")
    _refused(w, w.call(w.search_args("--resume")), "--resume after a refused search")
    if _experiments(w.uri):
        w.run.violations.append(f"--resume of nothing created experiments {_experiments(w.uri)}")


@probe
def joint_infeasible(w: Workdir) -> None:
    """grid over rare_freq up to 0.2 and delivery [even, bursts] with burst_duty 0.1"""
    _use(w, tiny(4, **{"mixture.rare_freq": {"dist": "choice", "values": [0.05, 0.2]},
                       "mixture.delivery": {"dist": "choice", "values": ["even", "bursts"]},
                       "mixture.burst_duty": 0.1, "model.d_model": 16, "search.sampler": "grid"}))
    completed(w, w.call(w.search_args()), "search")
    w.check(4)


@probe
def check_while_running(w: Workdir) -> None:
    """optimix check again and again while a 6-trial search runs"""
    _use(w, tiny(6))
    started = w.start(w.search_args())
    checks = 0
    wait_for(lambda: w.ledger_trials() >= 1, started, 180)
    while started.proc.poll() is None:
        done = w.call([OPTIMIX, "check", "--experiment", "faults", "--tracking-uri", w.uri,
                       "--storage-path", str(w.storage), "--json"], timeout=120)
        checks += 1
        if done.returncode not in (0, 1) or not done.stdout.strip():
            w.run.violations.append(f"check during the search: exit {done.returncode}: {last_line(done.stderr)}")
            continue
        found = json.loads(done.stdout)["violations"]
        w.run.violations += [f"during the search: {v['kind']}: {v['detail']}" for v in found]
    w.run.notes["checks_during"] = checks
    completed(w, w.finish(started), "search")
    w.check(6)


@probe
def run_id_alone(w: Workdir) -> None:
    """frontier and plan --run-id of a search that is not the latest, no --experiment"""
    completed(w, w.call(w.search_args("--experiment", "first")), "search first")
    completed(w, w.call(w.search_args("--experiment", "second")), "search second")
    parent = w.state("first").read()["parent_run_id"]
    common = ["--tracking-uri", w.uri, "--storage-path", str(w.storage), "--run-id", parent]
    done = w.call([OPTIMIX, "frontier", *common, "--json"], timeout=120)
    completed(w, done, "frontier --run-id")
    if done.returncode == 0 and not json.loads(done.stdout):
        w.run.violations.append("frontier --run-id: an empty frontier for a search with finished trials")
    done = w.call([OPTIMIX, "frontier", *common], timeout=120)
    if "experiment first," not in done.stdout:
        w.run.violations.append(f"frontier --run-id does not name experiment 'first': {done.stdout[:200]!r}")
    done = w.call([OPTIMIX, "frontier", "--tracking-uri", w.uri, "--run-id", "0" * 32], timeout=120)
    _refused(w, done, "frontier --run-id of no search")


@probe
def deleted_child(w: Workdir) -> None:
    """a child run deleted in MLflow, then --resume"""
    from mlflow.tracking import MlflowClient

    completed(w, w.call(w.search_args()), "search")
    client = MlflowClient(w.uri)
    parent = w.state().read()["parent_run_id"]
    exp = client.get_experiment_by_name("faults")
    child = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")[0]
    client.delete_run(child.info.run_id)
    done = w.call(w.search_args("--resume"))
    no_traceback(w, done, "--resume")
    if done.returncode == 0:
        w.check(2)
    elif "--resume" not in done.stderr and child.info.run_id not in done.stderr:
        w.run.violations.append(f"--resume failed without saying what is missing: {last_line(done.stderr)}")


@probe
def seed_range(w: Workdir) -> None:
    """seed 2**32 to validate, search and train; a 26-digit seed to train"""
    _refused(w, w.call([OPTIMIX, "validate", str(w.space), "--set", "seed=4294967296"], timeout=120),
             "validate seed=2**32")
    _refused(w, w.call(w.search_args("--seed", "4294967296")), "search --seed 2**32")
    _refused(w, w.call([OPTIMIX, "train", str(w.space), "--set", "seed=" + "9" * 26], timeout=120),
             "train 26-digit seed")
    if _experiments(w.uri):
        w.run.violations.append(f"a refused search created experiments {_experiments(w.uri)}")


@probe
def malformed_ledger(w: Workdir) -> None:
    """null, a FLOPs count 'abc' and [1,2,3] in the ledger: check, then --resume"""
    from mlflow.tracking import MlflowClient

    completed(w, w.call(w.search_args()), "search")
    ledger = w.state().ledger
    whole = ledger.read_text()
    lines = whole.splitlines()
    first = json.loads(lines[0])
    first["result"]["train_flops"] = "abc"
    broken = {"null": whole + "null\n", "abc": "\n".join([json.dumps(first), *lines[1:]]) + "\n",
              "[1, 2, 3]": whole + "[1, 2, 3]\n"}
    for bad, text in broken.items():
        ledger.write_text(text)
        done = w.call([OPTIMIX, "check", "--experiment", "faults", "--tracking-uri", w.uri,
                       "--storage-path", str(w.storage)], timeout=120)
        no_traceback(w, done, f"check with {bad[:30]!r}")
        if done.returncode != 1:
            w.run.violations.append(f"check with {bad[:30]!r} in the ledger: exit {done.returncode}, not 1")
        _refused(w, w.call(w.search_args("--resume")), f"--resume with {bad[:30]!r}")
    status = MlflowClient(w.uri).get_run(w.state().read()["parent_run_id"]).info.status
    if status == "FAILED":
        w.run.violations.append("a refused --resume marked the parent run FAILED")
    ledger.write_text(whole)
    w.check(2)


@probe
def null_answer(w: Workdir) -> None:
    """a dataset row whose answer is null"""
    data = w.root / "rows.jsonl"
    rows = [{"prompt": f"p{i}", "answer": f"a{i}"} for i in range(20)] + [{"prompt": "px", "answer": None}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree = tiny(2)
    tree["tasks"]["facts"] = {"kind": "dataset", "path": str(data)}
    _use(w, tree)
    for args in ([OPTIMIX, "validate", str(w.space)], [OPTIMIX, "train", str(w.space)]):
        done = w.call(args, timeout=120)
        _refused(w, done, args[1])
        if "21" not in done.stderr:  # the row, counted from 1
            w.run.violations.append(f"{args[1]}: the message names no row: {last_line(done.stderr)}")


@probe
def long_text_line(w: Workdir) -> None:
    """a 5 MB line in a text corpus, validated"""
    corpus = w.root / "corpus.txt"
    words = " ".join(f"w{i % 997}" for i in range(900_000))[:5_000_000]
    corpus.write_text("short line one\nshort line two\n" + words + "\n" + "another line\n" * 20)
    tree = tiny(2)
    tree["tasks"]["prose"] = {"kind": "text", "path": str(corpus), "weight": 1}
    _use(w, tree)
    t0 = time.monotonic()
    done = w.call([OPTIMIX, "validate", str(w.space)], timeout=120)
    w.run.wall_s = round(time.monotonic() - t0, 1)
    no_traceback(w, done, "validate")
    if done.returncode not in (0, 2):
        w.run.violations.append(f"validate: exit {done.returncode}: {last_line(done.stderr)}")


@probe
def unschedulable(w: Workdir) -> None:
    """search.cpus_per_trial=1e300, and more CPUs than the machine has"""
    for value in ("1e300", str(4 * (os.cpu_count() or 2))):
        t0 = time.monotonic()
        _refused(w, w.call(w.search_args("--set", f"search.cpus_per_trial={value}"), timeout=120),
                 f"cpus_per_trial={value}")
        if time.monotonic() - t0 > 90:
            w.run.violations.append(f"cpus_per_trial={value}: refused only after {time.monotonic() - t0:.0f} s")
    if _experiments(w.uri):
        w.run.violations.append(f"an unschedulable search left experiments {_experiments(w.uri)}")


@probe
def all_failed(w: Workdir) -> None:
    """every trial raises (train.fault: raise)"""
    _use(w, tiny(2, **{"train.fault": "raise"}))
    done = w.call(w.search_args())
    no_traceback(w, done, "search")
    if done.returncode == 0:
        w.run.violations.append("a search whose every trial failed exited 0")
    w.check(2)


@probe
def tampered(w: Workdir) -> None:
    """an accuracy edited in MLflow, a point edited in the ledger, state.json deleted"""
    from mlflow.tracking import MlflowClient

    completed(w, w.call(w.search_args()), "search")
    state = w.state()
    saved, whole = state.read(), state.ledger.read_text()
    client = MlflowClient(w.uri)
    exp = client.get_experiment_by_name("faults")
    child = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{saved['parent_run_id']}'")[0]

    def caught(what: str) -> None:
        done = w.call([OPTIMIX, "check", "--experiment", "faults", "--tracking-uri", w.uri,
                       "--storage-path", str(w.storage)], timeout=120)
        no_traceback(w, done, f"check after {what}")
        if done.returncode != 1:
            w.run.violations.append(f"check missed {what} (exit {done.returncode})")

    old = child.data.metrics["acc/facts"]
    client.log_metric(child.info.run_id, "acc/facts", 1.0 - old if old != 0.5 else 0.9)
    caught("an accuracy edited in MLflow")
    client.log_metric(child.info.run_id, "acc/facts", old)
    lines = whole.splitlines()
    entry = json.loads(lines[0])
    entry["point"] = {k: (v * 1.5 if isinstance(v, float) else v) for k, v in entry["point"].items()}
    state.ledger.write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")
    caught("a point edited in the ledger")
    state.ledger.write_text(whole)
    (state.path / "state.json").unlink()
    caught("state.json deleted")
