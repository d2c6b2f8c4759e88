"""``optimix check``: a real search's records agree; each way of breaking them is named.

One real tiny search (real Ray, MLflow, Optuna) through the CLI; then copies of its state
folder and MLflow database, each broken one way through the libraries' public APIs, must
give exactly one violation of the expected kind. The invariants' edge cases run on hand-made
records (no search).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from optimix.core import frontier
from optimix.core.metrics import parse_objectives_tag
from optimix.core.space import build_space
from optimix.records.records import RunRecord
from optimix.search import check, check_record
from optimix.search.check import LedgerTrial, OptunaTrial, Record

from cluster_fixtures import OPTIMIX, Holds, base_env, kill_sessions, short_tmp
from conftest import FAULTS, run_cli, tiny_space


def run_check(*args: str) -> tuple[int, list[str], str]:
    """``optimix check ARGS`` in this process (``conftest.run_cli``): exit status, stdout
    lines, stderr."""
    done = run_cli(["check", *args])
    return done.returncode, done.stdout.splitlines(), done.stderr


# ---------------------------------------------------------------------------------------------
# A real search, checked as recorded and broken one way at a time


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A finished search of four trials (three ok, one failed) in ``root/runs`` and
    ``root/mlflow.db``."""
    root = tmp_path_factory.mktemp("recorded")
    points = [{"mixture.rare_freq": 0.3, "model.d_model": 16, "train.fault": "none"},
              {"mixture.rare_freq": 0.05, "model.d_model": 16, "train.fault": "raise"}]
    tree = tiny_space(train={"fault": {**FAULTS, "values": ["none", "raise"]}},
                      search={"trials": 4, "sampler": "random", "points_to_evaluate": points})
    (root / "space.yaml").write_text(json.dumps(tree))  # JSON is YAML
    done = subprocess.run(
        [sys.executable, "-m", "optimix.cli", "search", "space.yaml", "--tracking-uri",
         f"sqlite:///{root}/mlflow.db", "--storage-path", str(root / "runs")],
        cwd=root, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@dataclass
class Copy:
    """A copy of the recorded search to break."""

    root: Path
    state_dir: Path
    uri: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def args(self) -> list[str]:
        return ["--storage-path", str(self.root / "runs"), "--tracking-uri", self.uri]

    def ledger(self) -> list[dict]:
        lines = (self.state_dir / "results.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines if '"trial_id"' in x]

    def parent_id(self) -> str:
        return json.loads((self.state_dir / "state.json").read_text())["parent_run_id"]

    def children(self):
        parent = self.client.get_run(self.parent_id())
        return self.client.search_runs([parent.info.experiment_id],
                                       f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")

    def ok_child(self):
        return next(r for r in self.children() if r.data.tags["optimix.status"] == "ok")

    def storage(self) -> optuna.storages.JournalStorage:
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(self.state_dir / "optuna.journal")))

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="tiny", storage=self.storage())


@pytest.fixture
def copy(recorded, tmp_path) -> Copy:
    shutil.copytree(recorded / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("ray-*"))
    shutil.copy(recorded / "mlflow.db", tmp_path / "mlflow.db")
    stamp = (tmp_path / "runs" / "tiny" / "latest").read_text().strip()
    copied = Copy(tmp_path, tmp_path / "runs" / "tiny" / stamp, f"sqlite:///{tmp_path}/mlflow.db")
    state = copied.state_dir / "state.json"  # the copy's store is its own (a --resume writes only there)
    state.write_text(json.dumps({**json.loads(state.read_text()), "tracking_uri": copied.uri}))
    return copied


@pytest.mark.slow
def test_the_recorded_search_passes(recorded):
    code, out, err = run_check("--storage-path", str(recorded / "runs"))
    assert code == 0, out
    assert out[-1].endswith(": no violations")
    assert "4 ledger trials, 4 MLflow child runs, 4 Optuna trials" in out[-1]
    assert not err
    code, out, _ = run_check("--storage-path", str(recorded / "runs"), "--experiment",
                             "tiny", "--json")
    doc = json.loads("\n".join(out))
    assert code == 0 and doc["ok"] and doc["violations"] == [] and doc["trials"] == 4


def delete_child(c: Copy) -> None:
    c.client.delete_run(c.ok_child().info.run_id)


def flip_pareto(c: Copy) -> None:
    run = c.ok_child()
    flipped = "false" if run.data.tags["optimix.pareto"] == "true" else "true"
    c.client.set_tag(run.info.run_id, "optimix.pareto", flipped)


def duplicate_ledger_line(c: Copy) -> None:
    with open(c.state_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(c.ledger()[1]) + "\n")


def optuna_running(c: Copy) -> None:
    # Optuna's storage refuses to change a finished trial's state, so the trial a killed
    # driver leaves behind is made as it would be: a COMPLETE trial's point, RUNNING.
    storage = c.storage()
    study_id = storage.get_study_id_from_name("tiny")
    done = next(t for t in storage.get_all_trials(study_id) if t.state.name == "COMPLETE")
    template = optuna.trial.FrozenTrial(
        number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=None,
        datetime_complete=None, params=done.params, distributions=done.distributions,
        user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=-1)
    storage.create_new_trial(study_id, template_trial=template)


def change_train_flops(c: Copy) -> None:
    run = c.ok_child()
    c.client.log_metric(run.info.run_id, "train_flops", run.data.metrics["train_flops"] * 2)


def stray_child(c: Copy) -> None:
    exp = c.client.get_run(c.parent_id()).info.experiment_id
    c.client.create_run(exp, tags={"mlflow.parentRunId": c.parent_id(), "optimix.role": "trial",
                                   "optimix.trial_id": "deadbeef", "optimix.status": "ok"})


def change_status_tag(c: Copy) -> None:
    c.client.set_tag(c.ok_child().info.run_id, "optimix.status", "failed")


def change_spent_flops(c: Copy) -> None:
    parent = c.client.get_run(c.parent_id())
    c.client.log_metric(c.parent_id(), "spent_flops", parent.data.metrics["spent_flops"] + 1e6)


def extra_complete_trial(c: Copy) -> None:
    study = c.study()
    done = next(t for t in study.get_trials() if t.state.name == "COMPLETE")
    params = {**done.params, "mixture.rare_freq": 0.123}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=done.distributions,
                                              values=done.values))


def delete_parent(c: Copy) -> None:
    c.client.delete_run(c.parent_id())


def change_accuracy(c: Copy) -> None:
    run = c.ok_child()
    c.client.log_metric(run.info.run_id, "acc/facts", 1.0 - run.data.metrics["acc/facts"] / 2)


def edit_ledger(c: Copy, edit) -> None:
    """Rewrite the ledger's first ok trial line with ``edit`` (the other lines as they are)."""
    path = c.state_dir / "results.jsonl"
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '"status": "ok"' in line)
    entry = json.loads(lines[at])
    edit(entry)
    lines[at] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")


def change_point(c: Copy) -> None:
    edit_ledger(c, lambda e: e["point"].update({"mixture.rare_freq": 0.123}))


def delete_state(c: Copy) -> None:
    (c.state_dir / "state.json").unlink()


def stray_ledger_line(c: Copy, line: str = "[1, 2, 3]") -> None:
    path = c.state_dir / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], line, *lines[2:]]) + "\n")


def null_ledger_line(c: Copy) -> None:
    stray_ledger_line(c, "null")


@pytest.mark.slow
@pytest.mark.parametrize(("corrupt", "kind"), [
    (delete_child, "child-missing"),
    (flip_pareto, "pareto"),
    (duplicate_ledger_line, "ledger-duplicate"),
    (optuna_running, "optuna-running"),
    (change_train_flops, "flops-mlflow"),
    (stray_child, "child-stray"),
    (change_status_tag, "child-status"),
    (change_spent_flops, "flops-parent"),
    (extra_complete_trial, "optuna-complete"),
    (delete_parent, "parent"),
    (change_accuracy, "metric-mlflow"),
    (change_point, "point"),
    (delete_state, "state"),
    (stray_ledger_line, "ledger-malformed"),
    (null_ledger_line, "ledger-malformed"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_each_way_of_breaking_the_record_is_one_named_violation(copy, corrupt, kind):
    code, out, _ = run_check(*copy.args())
    assert code == 0, out  # the copy agrees before it is broken
    corrupt(copy)
    code, out, err = run_check(*copy.args())
    assert code == 1
    violations = [line for line in out if line.startswith("violation: ")]
    assert len(violations) == 1 and violations[0].startswith(f"violation: {kind}: "), out
    assert out[-1].endswith(f": 1 violation ({kind} 1)")
    assert not err


def text_train_flops(c: Copy) -> None:
    edit_ledger(c, lambda e: e["result"].update({"train_flops": "abc"}))


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [null_ledger_line, stray_ledger_line, text_train_flops],
                         ids=["null", "list", "flops-text"])
def test_a_malformed_ledger_line_is_a_violation_and_resume_refuses_it_before_writing(
        recorded, copy, corrupt):
    corrupt(copy)
    code, out, err = run_check(*copy.args())
    ledger = copy.state_dir / "results.jsonl"
    assert code == 1 and not err, out
    assert [line for line in out if line.startswith("violation: ledger-malformed: ")] == [
        line for line in out if line.startswith(f"violation: ledger-malformed: {ledger}: line ")], out
    assert any(line.startswith("violation: ledger-malformed: ") for line in out), out
    before = {p.name: p.read_bytes() for p in copy.state_dir.iterdir() if p.is_file() and p.name != "lock"}
    ray_tmp = short_tmp("rl")
    try:
        done = subprocess.run([OPTIMIX, "search", str(recorded / "space.yaml"), "--resume", *copy.args()],
                              cwd=copy.root, env=base_env(RAY_TMPDIR=str(ray_tmp)), capture_output=True, text=True,
                              timeout=120)
        assert not list(ray_tmp.iterdir())  # refused before Ray started
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith(f"error: {ledger}: line ") and len(done.stderr.splitlines()) == 1, done.stderr
    after = {p.name: p.read_bytes() for p in copy.state_dir.iterdir() if p.is_file() and p.name != "lock"}
    assert after == before  # nothing written: no state change, no ledger line
    assert copy.client.get_run(copy.parent_id()).info.status == "FINISHED"  # not reopened, not FAILED


@pytest.mark.slow
def test_a_running_trial_is_only_a_violation_when_no_driver_holds_the_lock(copy):
    optuna_running(copy)
    state_file = copy.state_dir / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "status": "running"}))
    with open(copy.state_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a live driver
        code, out, _ = run_check(*copy.args())
        assert code == 0, out
        assert "running" in out[-1]
        fcntl.flock(lock, fcntl.LOCK_UN)  # the driver died: the lock is free
        code, out, _ = run_check(*copy.args())
        assert code == 1 and out[0].startswith("violation: optuna-running: Optuna trial #4 ")


@pytest.mark.parametrize(("args", "message"), [
    (["--storage-path", "{tmp}/nowhere"], "error: --storage-path: no folder "),
    (["--storage-path", "{tmp}"], "error: --storage-path: no search under "),
    (["--storage-path", "{tmp}", "--experiment", "nope"], "error: --experiment: no search of 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    code, out, err = run_check(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and not out
    assert err.strip().startswith(message) and len(err.strip().splitlines()) == 1


def test_a_missing_mlflow_database_is_bad_input_and_is_not_created(tmp_path):
    state = tmp_path / "runs" / "tiny" / "20260101T000000000000Z"
    state.mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "latest").write_text(state.name)
    (state / "state.json").write_text(json.dumps({"experiment": "tiny", "parent_run_id": "p"}))
    code, _, err = run_check("--storage-path", str(tmp_path / "runs"), "--tracking-uri",
                             f"sqlite:///{tmp_path}/none.db")
    assert code == 2 and err.startswith("error: --tracking-uri: no MLflow database at ")
    assert not (tmp_path / "none.db").exists()


# ---------------------------------------------------------------------------------------------
# The invariants on hand-made records


def ledger_trial(trial_id: str, status: str = "ok", flops: float = 100.0, seed: int = 0,
                 rare_freq: float = 0.1) -> LedgerTrial:
    point = {"mixture.rare_freq": rare_freq}
    result = {"train_flops": flops, "params": 10, "non_embedding_params": 5, "tokens": 50,
              "wall_s": 1.0, "train_s": 1.0, "tokens_per_s": 50.0, "steps": 4, "planned_steps": 4,
              "accuracy": {"facts": rare_freq}, "loss": {"facts": 1.0}, "curve": []}
    entry = {"trial_id": trial_id, "status": status, "name": trial_id, "point": point,
             "params": {"seed": seed, **point}, "result": result}
    return LedgerTrial.from_entry(entry)


def record_of(trials: list[LedgerTrial], optuna_trials: list[OptunaTrial] | None = None,
              budget: str = "", **kw) -> Record:
    """A record in which MLflow agrees with ``trials`` (frontier tags as recomputed)."""
    objectives = parse_objectives_tag("acc/facts:max,train_flops:min")
    state_dir = Path("/s/tiny/1")
    parent = RunRecord("P", "FINISHED", True,
                 tags={"optimix.role": "search", "optimix.state_dir": str(state_dir),
                       "optimix.objectives": "acc/facts:max,train_flops:min",
                       "optimix.budget_flops": budget},
                 metrics={"spent_flops": sum(t.train_flops for t in trials)})
    first = list({t.trial_id: t for t in reversed(trials)}.values())[::-1]  # a repeated line once
    on = frontier.membership(frontier.candidates([t.entry for t in first], objectives), objectives)
    children = [RunRecord(f"r{t.trial_id}", "FINISHED", True,
                    tags={"optimix.trial_id": t.trial_id, "optimix.status": t.status,
                          "optimix.pareto": "true" if on.get(t.trial_id, (False, []))[0] else "false",
                          "optimix.pareto_steps": "[]"},
                    params={k: str(v) for k, v in t.params.items()},
                    metrics=(t.entry.final_metrics() if t.status in ("ok", "pruned")
                             else {"train_flops": t.train_flops})) for t in first]
    if optuna_trials is None:
        state = {"ok": "COMPLETE", "pruned": "PRUNED"}
        optuna_trials = [OptunaTrial(i, state.get(t.status, "FAIL"), t.point, trial_id=t.trial_id,
                                     train_flops=t.train_flops) for i, t in enumerate(first)]
    fields = dict(state_dir=state_dir, experiment="tiny", tracking_uri="sqlite:///x.db",
                  state={"parent_run_id": "P", "experiment": "tiny", "status": "finished"},
                  ledger=trials, logged={t.trial_id: f"r{t.trial_id}" for t in first},
                  parents=[parent], parent=parent, children=children, optuna=optuna_trials,
                  running=False)
    return Record(**{**fields, **kw})


def kinds(record: Record) -> list[str]:
    return [v.kind for v in check.check(record)]


def test_a_consistent_hand_made_record_passes():
    assert kinds(record_of([ledger_trial("a"), ledger_trial("b", rare_freq=0.2, flops=200.0),
                            ledger_trial("c", "failed", rare_freq=0.3)])) == []


def test_the_same_config_twice_is_a_repeat_even_when_seed_is_searched():
    a, b = ledger_trial("a"), ledger_trial("b")
    assert kinds(record_of([a, b])) == ["repeat"]  # by the ledger's params
    assert kinds(record_of([a, ledger_trial("b", seed=1)])) == []  # another seed: not a repeat
    space = build_space(tiny_space(train={"fault": FAULTS}))
    assert kinds(record_of([a, b], space=space)) == ["repeat"]  # by budget.effective_key
    assert kinds(record_of([a, ledger_trial("b", rare_freq=0.2)], space=space)) == []
    searched = tiny_space(train={"fault": FAULTS}, seed={"dist": "int", "low": 0, "high": 9})
    assert kinds(record_of([a, b], space=build_space(searched))) == ["repeat"]  # one seed, twice


@pytest.mark.parametrize(("budget", "expected"), [("", []), ("300", []), ("300.0001", []),
                                                  ("299", ["flops-budget"])])
def test_the_budget_holds_within_a_relative_1e_6(budget, expected):
    trials = [ledger_trial("a"), ledger_trial("b", rare_freq=0.2, flops=200.0)]
    assert kinds(record_of(trials, budget=budget)) == expected


def test_optuna_is_matched_by_trial_id_where_recorded_and_by_point_otherwise():
    a, b = ledger_trial("a"), ledger_trial("b", "pruned", rare_freq=0.2)
    by_id = [OptunaTrial(0, "COMPLETE", {}, trial_id="a", train_flops=100.0),
             OptunaTrial(1, "PRUNED", {}, trial_id="b")]
    assert kinds(record_of([a, b], by_id)) == []
    by_point = [OptunaTrial(0, "COMPLETE", a.point), OptunaTrial(1, "PRUNED", b.point),
                OptunaTrial(2, "FAIL", {"mixture.rare_freq": 0.7})]  # a proposal never started
    assert kinds(record_of([a, b], by_point)) == []
    swapped = [OptunaTrial(0, "PRUNED", {}, trial_id="a"), OptunaTrial(1, "COMPLETE", {}, trial_id="b")]
    assert sorted(kinds(record_of([a, b], swapped))) == ["optuna-complete", "optuna-complete",
                                                          "optuna-pruned", "optuna-pruned"]
    told_fail = [OptunaTrial(0, "FAIL", a.point), OptunaTrial(1, "PRUNED", b.point)]
    assert kinds(record_of([a, b], told_fail)) == ["optuna-complete"]
    wrong_flops = [OptunaTrial(0, "COMPLETE", {}, trial_id="a", train_flops=101.0),
                   OptunaTrial(1, "PRUNED", {}, trial_id="b", train_flops=100.0)]
    assert kinds(record_of([a, b], wrong_flops)) == ["flops-optuna"]
    assert kinds(record_of([a, b], None, optuna=None)) == ["optuna-study"]


def test_a_child_run_must_be_complete_and_unique():
    record = record_of([ledger_trial("a")])
    child = record.children[0]
    unfinished = replace(child, status="RUNNING", ended=False, metrics={})
    assert kinds(replace(record, children=[unfinished])) == ["child-incomplete"]
    message = check.check(replace(record, children=[unfinished]))[0].detail
    assert "not terminated" in message and "no train_flops metric" in message
    wrong_param = replace(child, params={**child.params, "seed": "7"})
    assert kinds(replace(record, children=[wrong_param])) == ["child-incomplete"]
    assert kinds(replace(record, children=[child, replace(child, run_id="again")])) == ["child-duplicate"]


def test_while_the_search_runs_what_follows_the_ledger_may_lag():
    a, b = ledger_trial("a"), ledger_trial("b", rare_freq=0.2)
    record = record_of([a, b], [OptunaTrial(0, "COMPLETE", a.point), OptunaTrial(1, "RUNNING", b.point)])
    lagging = replace(record, children=record.children[:1], logged={"a": "ra"},
                      parent=replace(record.parent, metrics={}))
    assert sorted(kinds(lagging)) == ["child-missing", "flops-parent", "optuna-complete",
                                      "optuna-running"]
    assert kinds(replace(lagging, running=True)) == []


# ---------------------------------------------------------------------------------------------
# A search checked while it runs (held in the middle by construction: optimix.core.faults)


@pytest.mark.slow
def test_a_running_search_checks_clean_whatever_moves_between_the_reads(tmp_path, monkeypatch):
    """Held at chosen points, the search moves a trial on between check's reads of MLflow,
    Optuna and the ledger: what is not settled yet is in flight, never a violation."""
    # every trial ok (no faults): each one becomes COMPLETE in Optuna
    tree = tiny_space(search={"trials": 4, "sampler": "random", "max_concurrent": 2})
    (tmp_path / "space.yaml").write_text(json.dumps(tree))
    holds = Holds(tmp_path, ["before_ledger:2", "before_logged:2", "before_ledger:3", "before_ledger:4"])
    args = ["--storage-path", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    proc = subprocess.Popen([OPTIMIX, "search", "space.yaml", *args], cwd=tmp_path,
                            env=base_env(**holds.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    real_read = check_record.read_search_runs

    def moving(before: bool, release: str, reach: str):
        def read_search_runs(*a, **kw):
            if not before:
                runs = real_read(*a, **kw)
            holds.release(release)
            holds.reached(reach, proc)
            return real_read(*a, **kw) if before else runs
        return read_search_runs

    try:
        holds.reached("before_ledger:2", proc)  # trial 2 finished, not yet in the ledger
        code, out, _ = run_check(*args)
        assert [line for line in out if line.startswith("violation")] == [] and code == 0
        assert ", running: " in out[-1], out
        # Trial 2 goes into the ledger, to Optuna and to MLflow before check reads MLflow ...
        monkeypatch.setattr(check_record, "read_search_runs", moving(True, "before_ledger:2", "before_logged:2"))
        code, out, _ = run_check(*args)
        assert [line for line in out if line.startswith("violation")] == [] and code == 0
        assert ", running: " in out[-1], out
        # ... and trial 3 into the ledger and Optuna after check read MLflow, before it reads Optuna.
        holds.reached("before_ledger:3", proc)
        monkeypatch.setattr(check_record, "read_search_runs", moving(False, "before_ledger:3", "before_ledger:4"))
        code, out, _ = run_check(*args)
        assert [line for line in out if line.startswith("violation")] == [] and code == 0
        assert ", running: 1 trial in flight not judged" in out[-1], out  # trial 3: not in MLflow yet
        monkeypatch.undo()
        holds.release_all()
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    finally:
        holds.release_all()
        kill_sessions([proc.pid], grace_s=3.0)
    code, out, _ = run_check(*args)
    assert code == 0 and out[-1].endswith(": no violations") and ", running: " not in out[-1], out
    assert "4 ledger trials, 4 MLflow child runs" in out[-1]
