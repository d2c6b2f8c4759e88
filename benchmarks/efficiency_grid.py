"""The ground truth of a search-efficiency space: every point of its dense grid, trained once.

Runs ``optimix search SPACE --set search.sampler=grid`` as a user would (in-process Ray,
SQLite MLflow, a fresh temporary folder) with every grid point as a trial, and writes the
ledger as a tidy CSV next to the space (``NAME.grid.csv``): one row per learning-curve point
of each trial (the last row of an ``ok`` trial is its final result), with the point's
dimensions, the trial's status, and the point's counts, accuracies and losses.
``benchmarks/search_efficiency.py`` replays searches against these tables.

    python benchmarks/efficiency_grid.py benchmarks/spaces/facts_sizes.yaml [...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAL_COLUMNS = ("trial", "status", "error", "planned_steps", "wall_s", "train_s")
POINT_COLUMNS = ("step", "tokens", "train_flops", "params", "non_embedding_params", "train_loss")


def grid_csv(space: Path) -> Path:
    return space.with_name(space.stem + ".grid.csv")


def run_grid(space: Path, workdir: Path) -> tuple[list[dict], float]:
    """Every grid point of ``space`` once; the ledger's trial entries and the wall time."""
    from optimix.core.space import load_space
    from optimix.search.proposals import grid_size

    n = grid_size(load_space(space, ["search.sampler=grid"]))
    cmd = [sys.executable, "-m", "optimix.cli", "search", str(space.resolve()),
           "--set", "search.sampler=grid", "--set", f"search.trials={n}", "--set", "search.budget_flops=null"]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"grid search failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    ledger = next(workdir.glob("optimix_runs/*/*/results.jsonl"))
    entries = [json.loads(x) for x in ledger.read_text().splitlines()]
    entries = [e for e in entries if "trial_id" in e]
    if len(entries) != n:
        sys.exit(f"{space}: {len(entries)} trials in the ledger, the grid has {n}")
    return entries, wall


def rows(entries: list[dict], dims: list[str], tasks: list[str]) -> list[dict]:
    out = []
    for e in entries:
        result = e["result"]
        trial = {"trial": e["index"], "status": e["status"], "error": e.get("error") or "",
                 "planned_steps": result.get("planned_steps", 0), "wall_s": result.get("wall_s", 0.0),
                 "train_s": result.get("train_s", 0.0)}
        base = {d: e["point"][d] for d in dims} | trial
        curve = result.get("curve") or []
        if not curve:
            out.append(base)
        for point in curve:
            row = base | {k: point[k] for k in POINT_COLUMNS if k != "params" and k != "non_embedding_params"}
            row |= {"params": result["params"], "non_embedding_params": result["non_embedding_params"]}
            for t in tasks:
                if t in point["accuracy"]:
                    row[f"acc/{t}"] = point["accuracy"][t]
                    row[f"loss/{t}"] = point["loss"][t]
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spaces", nargs="+", type=Path)
    args = parser.parse_args()
    from optimix.core.space import load_space

    for space in args.spaces:
        loaded = load_space(space)
        dims, tasks = list(loaded.dimensions), list(loaded.base.tasks)
        with tempfile.TemporaryDirectory(prefix="optimix-grid-") as tmp:
            entries, wall = run_grid(space, Path(tmp))
        table = rows(entries, dims, tasks)
        columns = [*dims, *TRIAL_COLUMNS, *POINT_COLUMNS, *(f"{m}/{t}" for t in tasks for m in ("acc", "loss"))]
        path = grid_csv(space)
        with path.open("w", newline="") as f:
            f.write(f"# {len(entries)} trials, {wall:.0f} s wall, {platform.machine()} "
                    f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}: "
                    f"python benchmarks/efficiency_grid.py {space.relative_to(ROOT) if space.is_absolute() else space}\n")
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(table)
        ok = sum(e["status"] == "ok" for e in entries)
        print(f"{space}: {len(entries)} trials ({ok} ok), {wall:.0f} s -> {path}", flush=True)


if __name__ == "__main__":
    main()
