"""How much compute optimix's search needs to find the accuracy-vs-FLOPs frontier.

For each space, three searches run as a user would run them (``optimix search`` in a
subprocess, in-process Ray, SQLite MLflow, a fresh temporary folder each):

- **grid**: every grid point once (the space's ``grid`` values, or ``--grid KEY=V1,V2,..``),
  final results only: the plain baseline. Its total FLOPs are ``G``.
- **random**: the random sampler under a FLOPs budget ``B = --budget-frac x G``, final
  results only (no pruning, no curve points): a plain random search.
- **optimix**: its default sampler (``auto``: GP at these sizes) with learning-curve points
  as frontier candidates and pruning of trials dominated at equal FLOPs
  (``search.prune: dominated``), under the same budget ``B``.

Each is scored by the hypervolume of its frontier in (accuracy up, log10 FLOPs down),
bounded by accuracy 0 and the dearest grid trial's FLOPs (``optimix.frontier.hypervolume``):

    hv_ratio_vs_random  = HV(optimix at B) / HV(random at B)
    flops_ratio_vs_grid = FLOPs optimix had spent when its frontier first reached HV(grid), / G

(the FLOPs counted at a finished trial are everything finished by then; if optimix never
reaches the grid's hypervolume within ``B``, the ratio is reported as ``inf``). The median
over seeds is the headline; random's frontier with curve points is reported too, to show
what each part contributes.

    python benchmarks/search_efficiency.py [--seeds 0 1 2] [--budget-frac 0.5]
        [--space search_spaces/quickstart.yaml --space search_spaces/efficiency_second.yaml]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from optimix import frontier

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_GRID = ("mixture.rare_freq={dist: loguniform, low: 0.003, high: 0.1, "
                   "grid: [0.003, 0.01, 0.03, 0.1]}")


def run(space: str, overrides: list[str], workdir: Path) -> tuple[list[dict], float]:
    """Run one search; its ledger entries in finishing order, and its wall time."""
    workdir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "optimix.cli", "search", space]
    for override in overrides:
        cmd += ["--set", override]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"search failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    ledger = next(workdir.glob("optimix_runs/*/*/results.jsonl"))
    entries = [json.loads(x) for x in ledger.read_text().splitlines()]
    return [e for e in entries if "trial_id" in e], wall


def objectives_of(space: str, overrides: list[str]) -> list[tuple[str, str]]:
    from optimix.metrics import parse_objectives
    from optimix.space import load_space

    return [(o.metric, o.mode) for o in parse_objectives(load_space(space, overrides).base)]


def hv(entries: list[dict], objectives, accuracy: str, ref: float, curve: bool) -> float:
    return frontier.hypervolume(frontier.candidates(entries, objectives, curve), accuracy, ref)


def flops_to_reach(entries: list[dict], objectives, accuracy: str, ref: float, target: float) -> float:
    """FLOPs spent (over finished trials, in finishing order) when HV first reaches ``target``."""
    spent = 0.0
    for i, e in enumerate(entries):
        spent += float(e["result"]["train_flops"])
        if hv(entries[: i + 1], objectives, accuracy, ref, curve=True) >= target * (1 - 1e-9):
            return spent
    return math.inf


def bench_space(space: str, grid_overrides: list[str], seeds: list[int], frac: float,
                scratch: Path) -> dict:
    name = Path(space).stem
    objectives = objectives_of(space, grid_overrides)
    accuracy = next(m for m, d in objectives if d == "max")
    grid, grid_wall = run(space, [*grid_overrides, "search.sampler=grid", "search.trials=100000",
                                  "search.curve_candidates=false"], scratch / f"{name}-grid")
    grid_flops = sum(float(e["result"]["train_flops"]) for e in grid)
    ref = max(float(e["result"]["train_flops"]) for e in grid)
    grid_hv = hv(grid, objectives, accuracy, ref, curve=False)
    budget = frac * grid_flops
    print(f"{name}: grid {len(grid)} trials, {grid_flops:.3g} FLOPs, HV {grid_hv:.4f}, "
          f"{grid_wall:.0f} s; budget for the others {budget:.3g}", flush=True)
    per_seed = []
    for seed in seeds:
        common = [f"seed={seed}", "search.trials=1000", f"search.budget_flops={budget:.6g}"]
        rnd, rnd_wall = run(space, [*grid_overrides, *common, "search.sampler=random",
                                    "search.curve_candidates=false", "search.prune=none"],
                            scratch / f"{name}-random-{seed}")
        opt, opt_wall = run(space, [*grid_overrides, *common, "search.sampler=auto",
                                    "search.curve_candidates=true", "search.prune=dominated"],
                            scratch / f"{name}-optimix-{seed}")
        row = {
            "seed": seed,
            "hv_optimix": hv(opt, objectives, accuracy, ref, curve=True),
            "hv_random": hv(rnd, objectives, accuracy, ref, curve=False),
            "hv_random_with_curves": hv(rnd, objectives, accuracy, ref, curve=True),
            "hv_optimix_without_curves": hv(opt, objectives, accuracy, ref, curve=False),
            "flops_optimix": sum(float(e["result"]["train_flops"]) for e in opt),
            "flops_random": sum(float(e["result"]["train_flops"]) for e in rnd),
            "trials_optimix": len(opt), "pruned_optimix": sum(e["status"] == "pruned" for e in opt),
            "trials_random": len(rnd),
            "wall_s_optimix": round(opt_wall, 1), "wall_s_random": round(rnd_wall, 1),
        }
        row["hv_ratio_vs_random"] = row["hv_optimix"] / row["hv_random"] if row["hv_random"] else math.inf
        row["flops_ratio_vs_grid"] = flops_to_reach(opt, objectives, accuracy, ref, grid_hv) / grid_flops
        per_seed.append(row)
        print(f"  seed {seed}: HV optimix {row['hv_optimix']:.4f} ({row['trials_optimix']} trials, "
              f"{row['pruned_optimix']} pruned), random {row['hv_random']:.4f} "
              f"({row['trials_random']} trials; with curves {row['hv_random_with_curves']:.4f}); "
              f"ratio {row['hv_ratio_vs_random']:.2f}, FLOPs to grid's HV {row['flops_ratio_vs_grid']:.2f} x G",
              flush=True)
    return {
        "space": Path(space).name, "overrides": grid_overrides, "objectives": objectives,
        "grid": {"trials": len(grid), "flops": grid_flops, "hv": grid_hv, "wall_s": round(grid_wall, 1)},
        "budget_frac": frac, "budget_flops": budget, "reference_flops": ref,
        "hv_ratio_vs_random": statistics.median(r["hv_ratio_vs_random"] for r in per_seed),
        "flops_ratio_vs_grid": statistics.median(r["flops_ratio_vs_grid"] for r in per_seed),
        "seeds": per_seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", action="append", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-frac", type=float, default=0.5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "search_efficiency.json"))
    args = parser.parse_args()
    spaces = args.space or [str(ROOT / "search_spaces" / "quickstart.yaml"),
                            str(ROOT / "search_spaces" / "efficiency_second.yaml")]
    results = []
    with tempfile.TemporaryDirectory(prefix="optimix-eff-") as scratch:
        for space in spaces:
            grid_overrides = [QUICKSTART_GRID] if Path(space).name == "quickstart.yaml" else []
            results.append(bench_space(str(Path(space).resolve()), grid_overrides, args.seeds,
                                       args.budget_frac, Path(scratch)))

    print(f"\n{'space':<26}{'hv_ratio_vs_random':>20}{'flops_ratio_vs_grid':>21}")
    for r in results:
        print(f"{r['space']:<26}{r['hv_ratio_vs_random']:>20.3f}{r['flops_ratio_vs_grid']:>21.3f}")
    doc = {
        "hv_ratio_vs_random": statistics.median(r["hv_ratio_vs_random"] for r in results),
        "flops_ratio_vs_grid": max(r["flops_ratio_vs_grid"] for r in results),
        "note": "hv_ratio_vs_random: median over spaces of per-space medians over seeds; "
                "flops_ratio_vs_grid: the worst space's median",
        "spaces": results,
        "command": "python benchmarks/search_efficiency.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
