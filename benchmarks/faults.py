"""Faults and load: a search killed at random points, many trials finishing at once, and
bookkeeping for a thousand trials. Every scenario runs the real CLI (in-process Ray,
MLflow in SQLite) in a fresh folder and checks the same invariants afterwards:

- one parent run; every finished trial is one child run (no trial lost or logged twice);
- the ledger, MLflow and the parent's ``spent_flops`` agree on the FLOPs spent;
- ``optimix.pareto`` and ``optimix.pareto_steps`` tags equal the frontier computed by hand
  (final results and learning-curve points, as the test suite computes it);
- no Optuna trial is left RUNNING; no "database is locked" anywhere in the output.

    python benchmarks/faults.py [--kills 5] [--max-delay 25] [--load-trials 8] [--bookkeeping-trials 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from cluster_fixtures import frontier_by_hand  # noqa: E402  (the test suite's independent frontier)

TINY = {
    "name": "faults",
    "tasks": {
        "copy": {"kind": "copy", "length": 3, "alphabet": 8},
        "background": {"kind": "facts", "n_facts": 300, "zipf": 1.0, "alphabet": 16},
        "facts": {"kind": "facts", "n_facts": 20, "alphabet": 16},
    },
    "mixture": {"rare_task": "facts", "rare_freq": {"dist": "loguniform", "low": 0.01, "high": 0.3}},
    "model": {"d_model": {"dist": "choice", "values": [16, 32]}, "n_layer": 1, "n_head": 2},
    "train": {"tokens": 30_000, "batch_size": 32, "threads": 1},
    "eval": {"points": 3, "size": 64},
    "search": {"trials": 8, "max_concurrent": 2, "cpus_per_trial": 1, "sampler": "random"},
}


def search_cmd(space: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "optimix.cli", "search", str(space), "--tracking-uri",
            f"sqlite:///{workdir}/mlflow.db", "--storage-path", str(workdir / "runs"), *extra]


def check(workdir: Path, expected_trials: int, curve_points: int | None = None) -> dict:
    """The invariants above; returns what was found."""
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("faults")
    parents = client.search_runs([exp.experiment_id], "tags.`optimix.role` = 'search'")
    assert len(parents) == 1, f"{len(parents)} parent runs"
    parent = parents[0]
    runs = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    ids = [r.data.tags["optimix.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)), "a trial was logged twice"
    assert len(runs) == expected_trials, f"{len(runs)} child runs, expected {expected_trials}"
    state = next((workdir / "runs").glob("faults/*/results.jsonl"))
    ledger = [json.loads(x) for x in state.read_text().splitlines() if '"trial_id"' in x]
    assert sorted(e["trial_id"] for e in ledger) == sorted(ids), "ledger and MLflow disagree"
    spent = sum(e["result"]["train_flops"] for e in ledger)
    assert abs(parent.data.metrics["spent_flops"] - spent) <= 1e-6 * spent, "spent FLOPs disagree"
    # The frontier by hand over final results and learning-curve points, read from MLflow.
    finals, steps = frontier_by_hand(client, runs)
    tagged = {r.info.run_id for r in runs if r.data.tags["optimix.pareto"] == "true"}
    assert tagged == finals, "pareto tags differ from the frontier"
    tagged_steps = {r.info.run_id: json.loads(r.data.tags["optimix.pareto_steps"]) for r in runs
                    if r.data.tags.get("optimix.pareto_steps", "[]") != "[]"}
    assert tagged_steps == steps, "pareto_steps tags differ from the frontier"
    if curve_points:
        for r in runs:
            history = client.get_metric_history(r.info.run_id, "curve/acc/facts")
            assert len(history) == curve_points, f"{len(history)} curve points for {r.info.run_id}"
    study = optuna.load_study(study_name="faults", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(state.parent / "optuna.journal"))))
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, "an Optuna trial is left RUNNING"
    return {"children": len(runs), "frontier": len(tagged), "frontier_curve_points": sum(map(len, steps.values())),
            "spent_flops": spent}


def kill_and_resume(kills: int, seed: int, max_delay: float) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(kills):
        with tempfile.TemporaryDirectory(prefix="optimix-faults-") as tmp:
            workdir = Path(tmp)
            space = workdir / "space.yaml"
            space.write_text(json.dumps(TINY))
            delay = rng.uniform(3, max_delay)
            proc = subprocess.Popen(search_cmd(space, workdir), cwd=workdir, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
                finished_first = True
            except subprocess.TimeoutExpired:
                finished_first = False
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            ledgers = list((workdir / "runs").glob("faults/*/results.jsonl"))
            before = sum('"trial_id"' in x for x in ledgers[0].read_text().splitlines()) if ledgers else 0
            started = (workdir / "runs" / "faults" / "latest").exists()
            # A kill before the search made its folder leaves nothing to resume: start again.
            cmd = search_cmd(space, workdir, "--resume") if started else search_cmd(space, workdir)
            done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr[-2000:]
            assert "database is locked" not in done.stdout + done.stderr
            found = check(workdir, TINY["search"]["trials"])
            rows.append({"kill_after_s": round(delay, 1), "finished_before_kill": before,
                         "ended_on_its_own": finished_first, **found, "ok": True})
            print(f"kill {i}: after {delay:5.1f} s, {before} trials finished before it; "
                  f"after --resume {found['children']} trials, frontier {found['frontier']} final + "
                  f"{found['frontier_curve_points']} curve points: ok", flush=True)
    return rows


def burst(trials: int, concurrent: int, points: int) -> dict:
    """Many trials finishing at once, each logging a learning curve."""
    with tempfile.TemporaryDirectory(prefix="optimix-load-") as tmp:
        workdir = Path(tmp)
        tree = json.loads(json.dumps(TINY))
        tree["train"]["tokens"] = 2_000
        tree["eval"]["points"] = points
        tree["search"].update(trials=trials, max_concurrent=concurrent, cpus_per_trial=2 / concurrent)
        space = workdir / "space.yaml"
        space.write_text(json.dumps(tree))
        started = time.perf_counter()
        done = subprocess.run(search_cmd(space, workdir), cwd=workdir, capture_output=True, text=True,
                              check=False)
        wall = time.perf_counter() - started
        assert done.returncode == 0, done.stderr[-2000:]
        assert "database is locked" not in done.stdout + done.stderr
        found = check(workdir, trials, curve_points=points if trials <= 50 else None)
        return {"trials": trials, "concurrent": concurrent, "curve_points": points,
                "wall_s": round(wall, 1), **found, "ok": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--load-trials", type=int, default=8)
    parser.add_argument("--bookkeeping-trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=25.0,
                        help="kills land uniformly in [3 s, this]; the uninterrupted search takes about 25 s here")
    parser.add_argument("--out", default=str(ROOT / "docs" / "reliability_results.json"))
    args = parser.parse_args()

    results = {"kill_and_resume": kill_and_resume(args.kills, args.seed, args.max_delay)}
    results["simultaneous"] = burst(args.load_trials, args.load_trials, 5)
    print(f"{args.load_trials} trials finishing together: ok ({results['simultaneous']['wall_s']} s)", flush=True)
    if args.bookkeeping_trials:
        results["bookkeeping"] = burst(args.bookkeeping_trials, 8, 1)
        print(f"{args.bookkeeping_trials} instant trials: ok ({results['bookkeeping']['wall_s']} s)", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'scenario':<28}{'result':>10}")
    for row in results["kill_and_resume"]:
        label = f"kill -9 at {row['kill_after_s']:.1f} s"
        print(f"{label:<28}{'ok':>10}")
    for key in ("simultaneous", "bookkeeping"):
        if key in results:
            label = f"{key} ({results[key]['trials']} trials)"
            print(f"{label:<28}{'ok':>10}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
