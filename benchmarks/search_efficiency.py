"""How well optimix's search finds the accuracy-vs-FLOPs frontier, on spaces it was not tuned on.

Each space in ``benchmarks/spaces/`` has a dense grid trained once by the real pipeline
(``benchmarks/efficiency_grid.py`` -> ``NAME.grid.csv``): that table is the ground truth. A
search is then *replayed* against it: optimix's own searcher (``OptimixSearcher``: first
points, the sampler, refusal of repeated effective configs, the FLOPs budget) asks for points
one at a time, and each point is answered with the table's trial at the nearest grid point
(per dimension: the same choice; the nearest grid value, in log scale for a log dimension;
for ``model.params``, the grid value that builds the same shape). Every sampler gets the
same budget, the same learning-curve points as frontier candidates, and the same pruning
(``search.prune: dominated`` with the space's margin, applied to the table's curve: a
deterministic trial stopped early has exactly the first part of its full curve), one trial
at a time. Samplers: optimix's default (``auto``), random search, Optuna's ``GPSampler``
and ``TPESampler``, each over ``--seeds``.

Score: the hypervolume of the frontier in (accuracy up, log10 FLOPs down), bounded by
accuracy 0 (0.5 for ``compare``'s chance level is not subtracted) and the dearest grid
trial's FLOPs (``optimix.core.frontier.hypervolume``), as a share of the full grid's hypervolume.
Budgets: ``--budgets`` fractions of the grid's total FLOPs.

    python benchmarks/search_efficiency.py [--spaces benchmarks/spaces/*.yaml] [--seeds 0 1 2 3 4]
        [--budgets 0.05 0.15 0.5] [--samplers auto random gp tpe]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from efficiency_grid import grid_csv  # noqa: E402

from optimix.core import frontier, metrics  # noqa: E402
from optimix.core.config import SpaceError  # noqa: E402
from optimix.core.space import Space, load_space  # noqa: E402

HELD_OUT = ["facts_sizes", "caesar_params", "modadd_width", "isoflop", "compare_four"]
DEV = ["dev/quickstart", "dev/efficiency_second"]


@dataclass
class Table:
    """A space's grid: each grid point's trial as a ledger result document."""

    space: Space
    dims: list[str]
    grid: dict[str, list[Any]]
    results: dict[tuple, dict]
    path: Path

    @classmethod
    def load(cls, path: Path) -> Table:
        space = load_space(path)
        dims = list(space.dimensions)
        tasks = list(space.base.tasks)
        with grid_csv(path).open() as f:
            rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
        by_trial: dict[str, list[dict]] = {}
        for row in rows:
            by_trial.setdefault(row["trial"], []).append(row)
        results, grid = {}, {d: [] for d in dims}
        for trial_rows in by_trial.values():
            point = {d: _typed(space, d, trial_rows[0][d]) for d in dims}
            for d in dims:
                if point[d] not in grid[d]:
                    grid[d].append(point[d])
            results[tuple(point[d] for d in dims)] = _document(trial_rows, tasks)
        return cls(space, dims, grid, results, path)

    def snap(self, point: dict[str, Any]) -> tuple:
        """The grid point that stands for ``point``."""
        out = []
        for d in self.dims:
            dim, value, options = self.space.dimensions[d], point[d], self.grid[d]
            if dim.dist == "choice" or value in options:
                out.append(value)
                continue
            if d == "model.params":
                shape = self._shape(point)
                same = [v for v in options if self._shape({**point, d: v}) == shape]
                options = same or options
            scale = math.log if dim.is_log else float
            out.append(min(options, key=lambda v: abs(scale(v) - scale(value))))
        return tuple(out)

    def _shape(self, point: dict[str, Any]):
        from optimix.trial.train import plan_trial

        return plan_trial(self.space.resolve(point)).shape

    def result(self, point: dict[str, Any]) -> dict:
        return json.loads(json.dumps(self.results[self.snap(point)]))

    def reference_flops(self) -> float:
        return max(r["train_flops"] for r in self.results.values())

    def total_flops(self) -> float:
        return sum(r["train_flops"] for r in self.results.values())


def _typed(space: Space, key: str, text: str) -> Any:
    dim = space.dimensions[key]
    if dim.dist == "choice":
        return next(v for v in dim.values if str(v) == text)
    return int(text) if dim.dist == "int" else float(text)


def _document(rows: list[dict], tasks: list[str]) -> dict:
    """A trial result (``TrialResult.to_dict()``) from its table rows."""
    first, last = rows[0], rows[-1]
    status = {"ok": "ok", "pruned": "pruned"}.get(first["status"], "failed")
    curve = []
    for r in rows:
        if not r["step"]:
            continue
        acc = {t: float(r[f"acc/{t}"]) for t in tasks if r.get(f"acc/{t}")}
        loss = {t: float(r[f"loss/{t}"]) for t in tasks if r.get(f"loss/{t}")}
        curve.append({"step": int(r["step"]), "tokens": int(r["tokens"]), "train_flops": float(r["train_flops"]),
                      "train_loss": float(r["train_loss"] or "nan"), "accuracy": acc, "loss": loss})
    end = curve[-1] if curve else {"tokens": 0, "train_flops": 0.0, "accuracy": {}, "loss": {}, "step": 0}
    return {"status": status, "error": first["error"] or None,
            "params": int(float(last["params"] or 0)), "non_embedding_params": int(float(last["non_embedding_params"] or 0)),
            "tokens": end["tokens"], "train_flops": end["train_flops"], "accuracy": end["accuracy"],
            "loss": end["loss"], "wall_s": float(first["wall_s"] or 0), "train_s": float(first["train_s"] or 0),
            "tokens_per_s": 0.0, "steps": end["step"], "planned_steps": int(first["planned_steps"] or 0),
            "curve": curve}


def prune(doc: dict, front: list, objectives, search) -> dict:
    """The trial as ``search.prune: dominated`` would end it: stopped at the first curve point,
    ``prune_from`` through its training or later, that ``front`` dominates at equal FLOPs (the
    same test as the search's pruning board)."""
    if search.prune != "dominated" or doc["status"] != "ok":
        return doc
    for i, point in enumerate(doc["curve"]):
        progress = point["step"] / max(1, doc["planned_steps"])
        values = metrics.point_metrics(doc, point)
        if progress >= search.prune_from and progress < 1 and frontier.dominated_at_equal_flops(
                values, front, objectives, search.prune_margin):
            return {**doc, "status": "pruned", "curve": doc["curve"][: i + 1], "steps": point["step"],
                    "tokens": point["tokens"], "train_flops": point["train_flops"],
                    "accuracy": point["accuracy"], "loss": point["loss"]}
    return doc


class Replayed:
    """The search driver's part in a replay (``searcher.TrialRecords``): entries in memory,
    the budget charged as the driver charges it."""

    def __init__(self, budget):
        self.budget = budget
        self.entries: list = []

    def record(self, trial_id: str, proposal, doc: dict):
        return self._append(trial_id, proposal.point, doc)

    def record_infeasible(self, trial_id: str, point, reason: str):
        return self._append(trial_id, point, {"status": metrics.INFEASIBLE, "error": reason, "train_flops": 0.0})

    def record_lost(self, trial_id: str, train_flops: float) -> None:
        self.budget.charge_lost(train_flops)

    def out_of_patience(self) -> bool:
        return False

    def _append(self, trial_id: str, point, doc: dict):
        from optimix.core.entry import LedgerEntry

        entry = LedgerEntry(trial_id=trial_id, index=len(self.entries), status=metrics.record_status(doc["status"]),
                            point=dict(point), result=doc)
        self.budget.charge(entry)
        self.entries.append(entry)
        return entry


def replay(table: Table, sampler: str, seed: int, budget: float) -> dict:
    """One search against the table; its frontier's hypervolume and what it spent."""
    import optuna
    from ray.tune.search import Searcher

    from optimix.core.budget import Budget
    from optimix.core.metrics import RESULT_KEY
    from optimix.search.proposals import (
        Proposals,
        cheapest_flops,
        make_sampler,
        sampler_name,
        startup_points,
    )
    from optimix.search.searcher import OptimixSearcher, SearcherSetup

    space = load_space(table.path, [f"search.sampler={sampler}", f"search.budget_flops={budget}",
                                          "search.trials=100000", "search.prune=dominated"])
    objectives = space.spec.objectives
    quality = space.spec.quality.metric
    budget_state = Budget(budget, cheapest_flops(space))
    proposals = Proposals(space)
    study = optuna.create_study(directions=space.spec.directions,
                                sampler=make_sampler(space, seed, budget_state.left, proposals))
    for point in startup_points(space, seed):
        study.enqueue_trial(point)
    replayed = Replayed(budget_state)
    entries = replayed.entries
    searcher = OptimixSearcher(SearcherSetup(study=study, space=space, budget=budget_state, records=replayed,
                                             proposals=proposals, points_left=100000, known={}, seed=seed))
    front: list = []
    started = time.perf_counter()
    while True:
        trial_id = f"t{len(entries):04d}"
        config = searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            break
        doc = prune(table.result(config), front, objectives, space.base.search)
        searcher.conclude(trial_id, {RESULT_KEY: json.dumps([doc])}, None)
        front = frontier.front(frontier.candidates(entries, objectives), objectives)
    ref = table.reference_flops()
    snapped = [table.snap(e.point) for e in entries]
    return {"sampler": sampler, "picked": sampler_name(space), "seed": seed, "budget": budget,
            "hv": frontier.hypervolume(frontier.candidates(entries, objectives), quality, ref),
            "spent": budget_state.spent, "trials": len(entries),
            "pruned": sum(e.status == metrics.PRUNED for e in entries),
            "grid_points": len(set(snapped)), "best": max((e.result["accuracy"].get(quality.split("/", 1)[1], 0.0)
                                                            for e in entries if e.status == metrics.OK), default=0.0),
            "seconds": round(time.perf_counter() - started, 1)}


def grid_hv(table: Table) -> float:
    from optimix.core.entry import LedgerEntry

    objectives = table.space.spec.objectives
    quality = table.space.spec.quality.metric
    entries = [LedgerEntry(trial_id=str(i), status=metrics.record_status(doc["status"]), result=doc)
               for i, doc in enumerate(table.results.values())]
    return frontier.hypervolume(frontier.candidates(entries, objectives), quality, table.reference_flops())


def summarise(runs: list[dict], spaces: list[str], budgets: list[float], samplers: list[str]) -> dict:
    """Per space and budget: the median share of the grid's HV per sampler, and optimix's ratios."""
    out = {}
    for name in spaces:
        for frac in budgets:
            cell = {s: statistics.median(r["share"] for r in runs if r["space"] == name and r["frac"] == frac
                                         and r["sampler"] == s) for s in samplers}
            best_optuna = max(cell.get("gp", 0.0), cell.get("tpe", 0.0))
            out[f"{name}@{frac}"] = {**cell, "vs_random": _ratio(cell.get("auto"), cell.get("random")),
                                     "vs_best_optuna": _ratio(cell.get("auto"), best_optuna)}
    return out


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return math.nan
    return a / b if b > 0 else (math.inf if a > 0 else 1.0)


def markdown(doc: dict) -> str:
    """Every space, budget, sampler and seed as tables (``docs/benchmarks/search_efficiency.md``)."""
    runs, lines = doc["runs"], []
    samplers = list(dict.fromkeys(r["sampler"] for r in runs))
    lines += [f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']}; {doc['date']}; "
              f"{doc['wall_s']:.0f} s.", "",
              "Share of the full grid's hypervolume, per seed, then the median; `auto` is optimix's "
              "default (the sampler it picked in brackets).", ""]
    for key, cell in doc["summary"].items():
        name, frac = key.rsplit("@", 1)
        lines += [f"### {name}, budget {frac} of the grid's FLOPs", "",
                  "| sampler | per seed | median | trials (median) | pruned (median) |", "| --- | --- | --- | --- | --- |"]
        for sampler in samplers:
            these = [r for r in runs if r["space"] == name and str(r["frac"]) == frac and r["sampler"] == sampler]
            picked = f" ({these[0]['picked']})" if sampler == "auto" else ""
            lines.append(f"| {sampler}{picked} | {', '.join(format(r['share'], '.3f') for r in these)} | "
                         f"{cell[sampler]:.3f} | {statistics.median(r['trials'] for r in these):g} | "
                         f"{statistics.median(r['pruned'] for r in these):g} |")
        lines += ["", f"optimix / random: {cell['vs_random']:.2f}; optimix / best Optuna sampler: "
                      f"{cell['vs_best_optuna']:.2f}", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", nargs="+", default=HELD_OUT, help="names under benchmarks/spaces/")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.05, 0.15, 0.5])
    parser.add_argument("--samplers", nargs="+", default=["auto", "random", "gp", "tpe"])
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "search_efficiency.json"))
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks" / "search_efficiency.md"),
                        help="every space and seed as tables ('' for none)")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    runs = []
    print(f"{'space':<24} {'budget':>6} {'sampler':<7} {'seed':>4} {'HV/grid':>7} {'trials':>6} "
          f"{'pruned':>6} {'spent/B':>7} {'best acc':>8}", flush=True)
    for name in args.spaces:
        table = Table.load(ROOT / "benchmarks" / "spaces" / f"{name}.yaml")
        full = grid_hv(table)
        for frac in args.budgets:
            budget = frac * table.total_flops()
            for sampler in args.samplers:
                for seed in args.seeds:
                    try:
                        run = replay(table, sampler, seed, budget)
                    except SpaceError as err:
                        sys.exit(f"{name}: {err}")
                    run |= {"space": name, "frac": frac, "share": run["hv"] / full}
                    runs.append(run)
                    print(f"{name:<24} {frac:>6} {sampler:<7} {seed:>4} {run['share']:>7.3f} {run['trials']:>6} "
                          f"{run['pruned']:>6} {run['spent'] / budget:>7.2f} {run['best']:>8.3f}", flush=True)
    summary = summarise(runs, args.spaces, args.budgets, args.samplers)
    print(f"\n{'space@budget':<30} " + " ".join(f"{s:>7}" for s in args.samplers) + "  vs random  vs best Optuna")
    for key, cell in summary.items():
        print(f"{key:<30} " + " ".join(f"{cell[s]:>7.3f}" for s in args.samplers)
              + f"  {cell['vs_random']:>9.2f}  {cell['vs_best_optuna']:>14.2f}")
    doc = {"command": "python benchmarks/search_efficiency.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "wall_s": round(time.perf_counter() - started, 1), "summary": summary, "runs": runs}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(doc))


if __name__ == "__main__":
    main()
