"""Does a reported frontier hold on a new seed? Single-seed search against replicate search.

Issue 27's evidence. For each space, two searches at the same FLOPs budget (the space's
``search.budget_flops``), in a fresh MLflow store of their own:

- ``single``: one seed per config (``--set search.replicates=off``, ``--single-arg``);
- ``replicate``: the search's default replicates (``--replicates-arg`` adds to it).

Each search's frontier is read as a user reads it (``optimix frontier --json``) and every final
row on it is trained again at ``--seeds-fresh`` seeds no trial of the search used (100001 and
up), with ``optimix train SPACE --set ... --seed S --json``: the row's ``overrides`` where it has
them, else its searched ``point``. A learning-curve row (``final: false``, a trial part-way
through its schedule, which no shorter trial reproduces) is read off the same fresh trainings'
learning curves at its step. A row that rests on one trial is also trained
again at that trial's own seed (``--no-reproduce`` skips it): it must give the reported value,
or the gap would be the harness's (overrides that do not rebuild the config), not the seed's.

Per space and arm, over the retrained rows, with the first quality objective (``acc/TASK``):

- ``gap``: median of (reported value - fresh-seed mean); the reported value is the row's
  ``mean`` where it has one, else its objective's value;
- ``inside``: share of rows whose fresh-seed mean lies in the row's 90% ``interval``. A
  replicate row without one counts as a miss; the single arm shows n/a where no row has one;
- ``hv``: hypervolume of the rows in (accuracy up, log10 FLOPs down), bounded by accuracy 0
  and the budget, as reported (``hv_reported``) and re-scored at fresh-seed means (``hv_fresh``).

The issue's goals, checked in the summary: median gap <= 0.05; inside >= 80% of the frontier
points; on the median space, the replicate arm's ``hv_fresh`` no lower than the single arm's.

    python benchmarks/winners_curse.py [--spaces benchmarks/spaces/seeds/*.yaml] [--seeds-fresh 3]
        [--arms single,replicate] [--jobs 1] [--out docs/benchmarks/winners_curse]
        [--replicates-arg '--set search.replicates.seeds=3'] [--workdir DIR]

Rows of the replicate arm are read tolerantly, as issue 27 describes them: ``n``, ``mean``,
``sd`` and ``interval`` either per objective (``{"acc/x": ...}``) or as the value of the one
quality objective; an interval as ``[low, high]`` or ``{"low": .., "high": ..}``. Searches
and trainings run under ``nice -n --nice`` (19 by default: no effect on an idle machine). A
``--workdir`` keeps each search's store and every fresh training (``fresh.jsonl``): run again
with the same one and finished searches and trainings are reused, not repeated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from optimix.core import pareto  # noqa: E402
from optimix.core.space import load_space  # noqa: E402

SPACES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks" / "spaces" / "seeds").glob("*.yaml"))
FRESH_SEED0 = 100001
UNKNOWN_REPLICATES = re.compile(r"replicates[^\n]*unknown key")


class HarnessError(RuntimeError):
    """A step the benchmark cannot go on from, said in one line."""


@dataclass
class Row:
    """One frontier row as reported, and what fresh seeds made of it."""

    name: str
    final: bool
    overrides: list[str]
    train_flops: float
    n: int | None
    reported: float | None
    interval: list[float] | None
    trial_id: str = ""
    seed: int | None = None
    """The seed the search trained this row at, where it rests on one trial."""
    step: int | None = None
    """A learning-curve row's step: its fresh value is the fresh trainings' curve there."""
    fresh: list[float] = field(default_factory=list)
    fresh_failed: int = 0
    reproduced: float | None = None
    """This row trained again at its own seed (``seed``): equal to ``reported`` when the
    overrides rebuild the searched config, so that a gap is the seed's and not the harness's."""

    @property
    def fresh_mean(self) -> float | None:
        return statistics.fmean(self.fresh) if self.fresh else None

    @property
    def gap(self) -> float | None:
        if self.reported is None or self.fresh_mean is None:
            return None
        return self.reported - self.fresh_mean

    @property
    def inside(self) -> bool | None:
        if self.fresh_mean is None:
            return None
        if self.interval is None:
            return False
        return self.interval[0] <= self.fresh_mean <= self.interval[1]


@dataclass
class Arm:
    """One search of one space and its frontier, retrained."""

    space: str
    arm: str
    experiment: str
    metric: str
    budget_flops: float
    search_args: list[str]
    search_wall_s: float = 0.0
    retrain_wall_s: float = 0.0
    spent_flops: float | None = None
    trials: int = 0
    configs: int = 0
    rows: list[Row] = field(default_factory=list)
    search_tail: str = ""

    def retrained(self) -> list[Row]:
        return [r for r in self.rows if r.fresh_mean is not None]

    def summary(self) -> dict[str, Any]:
        rows = self.retrained()
        gaps = [r.gap for r in rows if r.gap is not None]
        with_interval = [r for r in rows if r.interval is not None]
        if self.arm == "single" and not with_interval:
            inside = None  # a single-seed row has no interval to be inside of
        else:
            judged = with_interval if self.arm == "single" else rows
            inside = sum(bool(r.inside) for r in judged) / len(judged) if judged else None
        ref = math.log10(self.budget_flops)
        return {
            "rows": len(self.rows), "retrained": len(rows),
            "curve_rows_skipped": sum(not r.final for r in self.rows),
            "median_gap": statistics.median(gaps) if gaps else None,
            "inside": inside,
            "hv_reported": hypervolume([(r.reported, r.train_flops) for r in rows], ref),
            "hv_fresh": hypervolume([(r.fresh_mean, r.train_flops) for r in rows], ref),
        }


def hypervolume(points: list[tuple[float | None, float]], ref_log_flops: float) -> float:
    """Area dominated in (accuracy up, log10 FLOPs down), bounded by accuracy 0 and the budget."""
    values = np.array([[math.nan if acc is None else acc, math.log10(flops)] for acc, flops in points],
                      dtype=float).reshape(-1, 2)
    return pareto.hypervolume_2d(values, ["max", "min"], [0.0, ref_log_flops])


# ---------------------------------------------------------------------------------------------
# Running optimix


def optimix(args: list[str], nice: int) -> subprocess.CompletedProcess:
    """``python -m optimix.cli ARGS`` of this checkout, at niceness ``nice``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "optimix.cli", *args]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_search(arm: Arm, uri: str, storage: Path, nice: int, workdir: Path) -> None:
    """The arm's search, or the one a previous run with this ``--workdir`` finished."""
    done = workdir / f"{arm.experiment}.search.json"
    if done.exists():
        kept = json.loads(done.read_text())
        arm.search_wall_s, arm.search_tail = kept["wall_s"], kept["tail"]
        return
    started = time.monotonic()
    proc = optimix(["search", arm.space, *arm.search_args, "--experiment", arm.experiment,
                    "--tracking-uri", uri, "--storage-path", str(storage)], nice)
    arm.search_wall_s = time.monotonic() - started
    if proc.returncode != 0:
        if UNKNOWN_REPLICATES.search(proc.stderr):
            flag = "--single-arg" if arm.arm == "single" else "--replicates-arg"
            raise HarnessError(
                f"{arm.space}: this optimix refuses the replicate key ({tail(proc.stderr, 1)}): issue 27's "
                f"replicates have not landed here. Run with {flag} '' for a plain search in the {arm.arm} arm "
                "(before replicates exist, a plain search is the single-seed arm).")
        raise HarnessError(f"{arm.space}: optimix search ({arm.arm}) ended with status {proc.returncode}:\n"
                           f"{tail(proc.stderr or proc.stdout)}")
    arm.search_tail = tail(proc.stdout)
    done.write_text(json.dumps({"wall_s": arm.search_wall_s, "tail": arm.search_tail}) + "\n")


def read_frontier(arm: Arm, uri: str, storage: Path, nice: int) -> list[dict[str, Any]]:
    proc = optimix(["frontier", "--json", "--experiment", arm.experiment, "--tracking-uri", uri,
                    "--storage-path", str(storage)], nice)
    if proc.returncode != 0:
        raise HarnessError(f"{arm.space}: optimix frontier ({arm.arm}) ended with status "
                           f"{proc.returncode}: {tail(proc.stderr, 3)}")
    return json.loads(proc.stdout)


def search_facts(arm: Arm, uri: str) -> dict[str, int]:
    """Fill in the arm's trials, distinct configs and spent FLOPs; return each trial's seed."""
    from mlflow.tracking import MlflowClient

    from optimix.records.records import load_search

    record = load_search(uri, arm.experiment)
    arm.trials = len(record.trials)
    seeds = {t.trial_id: int(t.params["seed"]) for t in record.trials if str(t.params.get("seed", "")).isdigit()}
    arm.configs = len({json.dumps({k: v for k, v in t.params.items() if k != "seed"}, sort_keys=True)
                       for t in record.trials})
    arm.spent_flops = MlflowClient(uri).get_run(record.run_id).data.metrics.get("spent_flops")
    return seeds


# ---------------------------------------------------------------------------------------------
# Frontier rows


def per_objective(row: dict[str, Any], key: str, metric: str) -> Any:
    """A row's ``key`` for ``metric``: ``row[key][metric]`` when per objective, else ``row[key]``."""
    value = row.get(key)
    return value.get(metric) if isinstance(value, dict) and metric in value else value


def as_interval(value: Any) -> list[float] | None:
    if isinstance(value, dict):
        value = [value.get("low", value.get("lo")), value.get("high", value.get("hi"))]
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return [float(value[0]), float(value[1])]
    return None


def as_row(raw: dict[str, Any], metric: str) -> Row:
    mean = per_objective(raw, "mean", metric)
    reported = mean if isinstance(mean, int | float) else raw.get(metric)
    n = per_objective(raw, "n", metric)
    overrides = raw.get("overrides") or [f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}"
                                         for k, v in raw.get("point", {}).items()]
    return Row(name=raw.get("name", raw.get("trial_id", "")), final=bool(raw.get("final", True)), step=raw.get("step"),
               trial_id=raw.get("trial_id", ""),
               overrides=[o for o in overrides if not o.startswith("seed=")],
               train_flops=float(raw["train_flops"]), n=n if isinstance(n, int) else None,
               reported=None if reported is None else float(reported),
               interval=as_interval((raw.get("stats") or {}).get(metric, {}).get("interval")
                                    or per_objective(raw, "interval", metric)))


def fresh_seeds(count: int, used: set[int]) -> list[int]:
    seeds, s = [], FRESH_SEED0
    while len(seeds) < count:
        if s not in used:
            seeds.append(s)
        s += 1
    return seeds


class FreshRuns:
    """Fresh-seed trainings, each once per (space, overrides, seed), kept in ``fresh.jsonl``."""

    def __init__(self, path: Path, nice: int):
        self.path, self.nice, self.lock = path, nice, threading.Lock()
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                doc = json.loads(line)
                self.done[doc["key"]] = doc

    @staticmethod
    def key(space: str, overrides: list[str], seed: int) -> str:
        return json.dumps([space, sorted(overrides), seed])

    def train(self, space: str, overrides: list[str], seed: int) -> dict[str, Any]:
        key = self.key(space, overrides, seed)
        if key in self.done:
            return self.done[key]
        sets = list(overrides)
        if not any(o.startswith("train.threads=") for o in sets):
            sets.append("train.threads=1")  # as a search trial with cpus_per_trial 1
        args = ["train", space, *[a for o in sets for a in ("--set", o)], "--seed", str(seed), "--json"]
        started = time.monotonic()
        proc = optimix(args, self.nice)
        try:
            result = json.loads(proc.stdout)
        except json.JSONDecodeError:
            result = {"status": "failed", "error": tail(proc.stderr, 2)}
        doc = {"key": key, "space": space, "overrides": overrides, "seed": seed,
               "command": "optimix " + " ".join(shlex.quote(a) for a in args),
               "status": result.get("status"), "error": result.get("error"),
               "accuracy": result.get("accuracy", {}), "loss": result.get("loss", {}),
               "train_flops": result.get("train_flops"), "wall_s": round(time.monotonic() - started, 1),
               "curve": [{"step": p.get("step"), "accuracy": p.get("accuracy", {})} for p in result.get("curve", [])]}
        with self.lock:
            self.done[key] = doc
            with self.path.open("a") as f:
                f.write(json.dumps(doc) + "\n")
        return doc


def metric_value(doc: dict[str, Any], metric: str, step: int | None = None) -> float | None:
    """``metric`` of a fresh training: its final value, or at curve ``step``."""
    kind, _, task = metric.partition("/")
    if step is not None:
        found = [p["accuracy"].get(task) for p in doc.get("curve", []) if p.get("step") == step]
        return float(found[0]) if found and found[0] is not None and kind == "acc" else None
    value = doc.get({"acc": "accuracy", "loss": "loss"}.get(kind, ""), {}).get(task) if task else doc.get(metric)
    return None if value is None else float(value)


def retrain(arms: list[Arm], seeds: dict[str, list[int]], fresh: FreshRuns, jobs: int, reproduce: bool) -> None:
    """Train every final row of every arm at its fresh seeds (``jobs`` at a time); with
    ``reproduce``, a row that rests on one trial also at that trial's own seed."""
    work = [(arm, row, s) for arm in arms for row in arm.rows for s in seeds[arm.experiment]]
    again = [(arm, row, row.seed) for arm in arms for row in arm.rows
             if reproduce and row.final and row.seed is not None and row.n in (None, 1)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        docs = list(pool.map(lambda w: fresh.train(w[0].space, w[1].overrides, w[2]), work + again))
    for (arm, row, _), doc in zip(work, docs[:len(work)], strict=True):
        value = metric_value(doc, arm.metric, None if row.final else row.step) if doc["status"] == "ok" else None
        if value is None:
            row.fresh_failed += 1
        else:
            row.fresh.append(value)
    for (arm, row, _), doc in zip(again, docs[len(work):], strict=True):
        row.reproduced = metric_value(doc, arm.metric) if doc["status"] == "ok" else None
    per_arm = time.monotonic() - started
    for arm in arms:
        arm.retrain_wall_s = per_arm / len(arms)  # shared pool: an even share of its wall time


# ---------------------------------------------------------------------------------------------
# Tables


def fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def space_table(arms: list[Arm]) -> str:
    lines = [f"### {arms[0].space} ({arms[0].metric}; budget {arms[0].budget_flops:.3g} FLOPs)", "",
             "| arm | row | FLOPs | n | reported | again at its seed | 90% interval | fresh seeds | fresh mean | gap "
             "| inside |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | --- |"]
    for arm in arms:
        for r in arm.rows:
            name = r.name if r.final else f"{r.name} (curve point, step {r.step})"
            interval = "n/a" if r.interval is None else f"{r.interval[0]:.3f}-{r.interval[1]:.3f}"
            fresh = ", ".join(f"{v:.3f}" for v in r.fresh) + (f" ({r.fresh_failed} failed)" if r.fresh_failed else "")
            inside = "n/a" if arm.arm == "single" and r.interval is None else fmt(r.inside, "")
            lines.append(f"| {arm.arm} | {name} | {r.train_flops:.3g} | {fmt(r.n, 'd')} | {fmt(r.reported)} | "
                         f"{fmt(r.reproduced)} | {interval} | {fresh} | {fmt(r.fresh_mean)} | {fmt(r.gap, '+.3f')} | {inside} |")
    lines += ["", "| arm | trials | configs | spent FLOPs | search s | retrain s | rows (retrained) | "
                  "median gap | inside | hv reported | hv fresh |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for arm in arms:
        s = arm.summary()
        lines.append(f"| {arm.arm} | {arm.trials} | {arm.configs} | {fmt(arm.spent_flops, '.3g')} | "
                     f"{arm.search_wall_s:.0f} | {arm.retrain_wall_s:.0f} | {s['rows']} ({s['retrained']}) | "
                     f"{fmt(s['median_gap'], '+.3f')} | {fmt(s['inside'], '.0%')} | {s['hv_reported']:.3f} | "
                     f"{s['hv_fresh']:.3f} |")
    return "\n".join(lines)


def summary(by_space: dict[str, list[Arm]]) -> dict[str, Any]:
    """The issue's three goals, per arm over every space."""
    out: dict[str, Any] = {}
    names = sorted({a.arm for arms in by_space.values() for a in arms})
    for name in names:
        arms = [a for arms in by_space.values() for a in arms if a.arm == name]
        rows = [r for a in arms for r in a.retrained()]
        gaps = [r.gap for r in rows if r.gap is not None]
        judged = [r for r in rows if r.interval is not None] if name == "single" else rows
        out[name] = {"spaces": len(arms), "rows_retrained": len(rows),
                     "median_gap": statistics.median(gaps) if gaps else None,
                     "inside": (sum(bool(r.inside) for r in judged) / len(judged)) if judged else None}
    if {"single", "replicate"} <= set(names):
        ratios = []
        for arms in by_space.values():
            hv = {a.arm: a.summary()["hv_fresh"] for a in arms}
            if "single" in hv and "replicate" in hv and hv["single"] > 0:
                ratios.append(hv["replicate"] / hv["single"])
        out["hv_fresh_ratio_median_space"] = statistics.median(ratios) if ratios else None
        rep = out["replicate"]
        out["goals"] = {
            "median_gap<=0.05": None if rep["median_gap"] is None else rep["median_gap"] <= 0.05,
            "inside>=0.8": None if rep["inside"] is None else rep["inside"] >= 0.8,
            "hv_fresh_replicate>=single_on_median_space": (None if not ratios
                                                           else out["hv_fresh_ratio_median_space"] >= 1),
        }
    return out


def summary_table(doc: dict[str, Any]) -> str:
    lines = ["| arm | spaces | rows retrained | median gap | inside 90% interval |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in doc.items():
        if isinstance(s, dict) and "spaces" in s:
            lines.append(f"| {name} | {s['spaces']} | {s['rows_retrained']} | {fmt(s['median_gap'], '+.3f')} | "
                         f"{fmt(s['inside'], '.0%')} |")
    if "hv_fresh_ratio_median_space" in doc:
        lines += ["", f"hv fresh, replicate / single, on the median space: "
                      f"{fmt(doc['hv_fresh_ratio_median_space'])}", "",
                  "goals: " + "; ".join(f"{k}: {fmt(v, '')}" for k, v in doc["goals"].items())]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                            check=False).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "commit": commit}


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=SPACES, help="search spaces (default: benchmarks/spaces/seeds/)")
    parser.add_argument("--seeds-fresh", type=int, default=3, help="fresh seeds per frontier row")
    parser.add_argument("--arms", default="single,replicate", help="comma-separated: single, replicate")
    parser.add_argument("--jobs", type=int, default=1, help="fresh trainings at a time")
    parser.add_argument("--out", default="docs/benchmarks/winners_curse", help="writes OUT.json and OUT.md")
    parser.add_argument("--single-arg", default="--set search.replicates=off",
                        help="what the single arm adds to optimix search")
    parser.add_argument("--replicates-arg", default="",
                        help="what the replicate arm adds to optimix search (default: nothing, the default replicates)")
    parser.add_argument("--workdir", default=None, help="MLflow stores, search states, fresh.jsonl (default: a new temp dir)")
    parser.add_argument("--no-reproduce", dest="reproduce", action="store_false",
                        help="skip training each one-trial row again at its own seed (the check that the "
                             "overrides rebuild the searched config)")
    parser.add_argument("--nice", type=int, default=19, help="niceness of searches and trainings (0: as this process)")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or set(arms) - {"single", "replicate"}:
        parser.error("--arms: single, replicate or both")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="winners_curse_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    fresh = FreshRuns(workdir / "fresh.jsonl", args.nice)
    started = time.monotonic()
    print(f"workdir: {workdir}", flush=True)
    arm_args = {"single": shlex.split(args.single_arg), "replicate": shlex.split(args.replicates_arg)}

    by_space: dict[str, list[Arm]] = {}
    try:
        for space in args.spaces:
            base = load_space(space).base
            if base.search.budget_flops is None:
                raise HarnessError(f"{space}: no search.budget_flops (the arms must spend equal FLOPs)")
            quality = [o.split(":")[0] for o in base.search.objectives if not o.startswith("train_flops")]
            metric = quality[0] if quality else f"acc/{base.mixture.rare_task}"
            uri = f"sqlite:///{workdir / base.name}.db"
            storage = workdir / f"{base.name}_runs"
            these, seeds = [], {}
            for name in arms:
                arm = Arm(space=space, arm=name, experiment=f"{base.name}_{name}", metric=metric,
                          budget_flops=base.search.budget_flops, search_args=arm_args[name])
                print(f"{space} [{name}]: searching ...", flush=True)
                run_search(arm, uri, storage, args.nice, workdir)
                used = search_facts(arm, uri)
                arm.rows = [as_row(r, metric) for r in read_frontier(arm, uri, storage, args.nice)]
                for row in arm.rows:
                    row.seed = used.get(row.trial_id)
                seeds[arm.experiment] = fresh_seeds(args.seeds_fresh, set(used.values()))
                finals = sum(r.final for r in arm.rows)
                print(f"  {arm.trials} trials, {arm.search_wall_s:.0f} s; frontier: {finals} final rows, "
                      f"{len(arm.rows) - finals} curve points; retraining at seeds {seeds[arm.experiment]}", flush=True)
                these.append(arm)
            retrain(these, seeds, fresh, args.jobs, args.reproduce)
            by_space[space] = these
            print("\n" + space_table(these) + "\n", flush=True)
    except HarnessError as err:
        raise SystemExit(f"error: {err}") from None

    total = summary(by_space)
    print(summary_table(total))
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]])
    doc = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "workdir": str(workdir), "wall_s": round(time.monotonic() - started, 1),
           "fresh_seeds": args.seeds_fresh, "summary": total,
           "spaces": {space: [{**{k: v for k, v in asdict(a).items() if k != "rows"}, "summary": a.summary(),
                               "rows": [{**asdict(r), "fresh_mean": r.fresh_mean, "gap": r.gap, "inside": r.inside}
                                        for r in a.rows]} for a in arms_]
                      for space, arms_ in by_space.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    m = doc["machine"]
    md = ["# Winner's curse: does the reported frontier hold on a new seed?", "",
          f"`{command}`", "",
          f"{doc['date']}; {m['nproc']} CPUs ({m['cpu']}); commit {m['commit'][:10]}; {doc['wall_s']:.0f} s in all; "
          f"{args.seeds_fresh} fresh seeds per frontier row (a curve point read off the fresh trainings at its step). "
          "gap: reported - fresh-seed mean; inside: the fresh-seed mean in the row's 90% interval; hv: hypervolume "
          "in (accuracy, log10 FLOPs) bounded by 0 and the budget, as reported and re-scored at fresh-seed means.", "",
          *[space_table(a) + "\n" for a in by_space.values()], "## Summary", "", summary_table(total), ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
