"""Are ``optimix plan``'s intervals honest on trials they were not fitted on?

Reads a results table (default: the study reproduction's ``docs/reproduction/results.csv``, 5
sizes x 6 frequencies x 3 seeds, written by ``benchmarks/reproduce_study.py`` from a real
``optimix search``) and checks, with the planning model exactly as ``optimix plan`` fits it:

- **leave one size out** (``optimix plan --validate``): each size's observed threshold (mean
  accuracy crossing 0.5, interpolated in log f) inside the 90% interval predicted without that
  size; the transition configs' mean accuracy over their seeds inside the 90% interval for the
  mean of that many trials; MAE on the transition trials; the same for leave one config out,
  and the seed baseline;
- **in sample**: the same coverages with every size in the fit;
- **extrapolation**: fitted on the smallest sizes only, the next sizes' thresholds, and how the
  interval widens with distance;
- **the answers the issue quoted**: the best config for 3.4e12 FLOPs, the cheapest way to 0.5.

    python benchmarks/plan_calibration.py [--csv docs/reproduction/results.csv]
        [--out docs/benchmarks/plan_calibration.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np

from optimix.core import fit
from optimix.core import hardware as hw
from optimix.plan import plan, validate

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path | list[Path], metric: str = "rare_acc") -> fit.TrialTable:
    """The trials of one reproduction CSV (or several, concatenated) as a planning table."""
    rows = [r for p in ([path] if isinstance(path, Path) else path) for r in csv.DictReader(p.open())]
    return fit.TrialTable.from_columns(
        run_id=[r["run_id"] for r in rows], rare_freq=[float(r["rare_freq"]) for r in rows],
        params=[float(r["params"]) for r in rows], tokens=[float(r["tokens"]) for r in rows],
        train_flops=[float(r["train_flops"]) for r in rows], acc=[float(r[metric]) for r in rows],
        status=[r["status"] for r in rows], train_s=[float(r["train_s"] or "nan") for r in rows])


def in_sample(table: fit.TrialTable) -> dict:
    """Coverage with every trial in the fit: thresholds per size, transition configs' means."""
    model = fit.fit(table)
    sizes = np.unique(table.params)
    out = {"thresholds": [], "cells": []}
    for n in sizes:
        rows = table.params == n
        observed = validate.observed_threshold(table.rare_freq[rows], table.acc[rows])
        band = fit.interval(model.threshold_draws(n, float(np.median(table.tokens[rows]))))
        out["thresholds"].append({"params": int(n), "observed": observed, "interval": band,
                                  "inside": observed is not None and band[0] <= observed <= band[1]})
        for f in np.unique(table.rare_freq[rows]):
            cell = rows & (table.rare_freq == f)
            mean = float(table.acc[cell].mean())
            if validate.TRANSITION[0] <= mean <= validate.TRANSITION[1]:
                point = (f, n, float(np.median(table.tokens[cell])))
                band = fit.interval(model.predict_draws(*point, seeds=int(cell.sum()))[:, 0])
                out["cells"].append({"params": int(n), "rare_freq": float(f), "mean": mean,
                                     "predicted": float(model.predict(*point)), "interval": band,
                                     "inside": band[0] <= mean <= band[1]})
    return out


def extrapolation(table: fit.TrialTable, keep: int) -> list[dict]:
    """Fitted on the ``keep`` smallest sizes: each larger size's threshold against its interval."""
    sizes = np.unique(table.params)
    model = fit.fit(table.take(np.flatnonzero(table.params <= sizes[keep - 1])))
    out = []
    for n in sizes[keep:]:
        rows = table.params == n
        observed = validate.observed_threshold(table.rare_freq[rows], table.acc[rows])
        band = fit.interval(model.threshold_draws(n, float(np.median(table.tokens[rows]))))
        out.append({"fitted_sizes": [int(s) for s in sizes[:keep]], "params": int(n),
                    "distance": model.size_distance(n), "observed": observed,
                    "predicted": model.threshold(n, float(np.median(table.tokens[rows]))),
                    "interval": band, "width": band[1] / band[0],
                    "inside": observed is not None and band[0] <= observed <= band[1]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=ROOT / "docs" / "reproduction" / "results.csv")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = load(args.csv)
    started = time.perf_counter()
    val = validate.cross_validate(table)
    inside = in_sample(table)
    extra = [row for keep in (3, 4) for row in extrapolation(table, keep)]
    answers = {}
    for name, query in (("budget 3.4e12", {"budget_flops": 3.4e12}), ("target 0.5", {"target_acc": 0.5})):
        doc = plan.answer(table, metric="acc", hardware=hw.PROFILES["cpu"], **query)
        pred = doc["predicted"]
        answers[name] = {"config": pred["config"], "acc": pred["acc"], "interval": pred["interval"],
                         "trial_interval": pred["trial_interval"], "p_reach": pred.get("p_reach"),
                         "recorded_run": pred.get("recorded_run"),
                         "verdict": doc["frequency_vs_size"]["winner"],
                         "undetermined": doc["frequency_vs_size"]["undetermined"]}
    seconds = time.perf_counter() - started

    print(f"{args.csv}: {val['trials']} trials, {val['transition_trials']} in the transition\n")
    print(f"{'split':<22} {'Spearman':>9} {'MAE':>7} {'trans. MAE':>11} {'trials in 90%':>14} "
          f"{'trans. cells in 90%':>20} {'thresholds in 90%':>18}")
    for name, split in val["splits"].items():
        cells = f"{split['transition_cell_coverage']:.0%} of {split['transition_cells']}"
        print(f"{'leave one ' + name + ' out':<22} {split['spearman']:>9.3f} {split['mae']:>7.3f} "
              f"{split['transition_mae']:>11.3f} {split['trial_coverage']:>14.0%} {cells:>20} "
              f"{split.get('threshold_coverage', '-'):>18}")
    cells = inside["cells"]
    thresholds = [t for t in inside["thresholds"] if t["observed"] is not None]
    cell_text = f"{np.mean([c['inside'] for c in cells]):.0%} of {len(cells)}"
    threshold_text = f"{sum(t['inside'] for t in thresholds)} of {len(thresholds)}"
    print(f"{'in sample':<22} {'':>9} {'':>7} {'':>11} {'':>14} {cell_text:>20} {threshold_text:>18}")
    base = val["baseline"]
    print(f"{'other seeds mean':<22} {'':>9} {base['mae']:>7.3f} {base['transition_mae']:>11.3f}\n")
    print("held-out sizes' thresholds (leave one size out):")
    for c in val["splits"]["size"]["thresholds"]:
        print(f"  {c['params']:>9,} observed {c['observed']:.4f}  predicted {c['predicted']:.4f} "
              f"[{c['interval'][0]:.4f}, {c['interval'][1]:.4f}]  {'inside' if c['inside'] else 'OUTSIDE'}")
    print("\nextrapolation (fitted on the smallest sizes only):")
    for e in extra:
        print(f"  from {len(e['fitted_sizes'])} sizes to {e['params']:>9,} ({e['distance']:.2g}x past): observed "
              f"{e['observed']:.4f}, predicted {e['predicted']:.4f} [{e['interval'][0]:.4f}, "
              f"{e['interval'][1]:.4f}] (x{e['width']:.2g} wide)  {'inside' if e['inside'] else 'OUTSIDE'}")
    print("\nanswers:")
    for name, a in answers.items():
        c = a["config"]
        print(f"  {name}: params {c['params']:,} f {c['rare_freq']:.3g} ({c['train_flops']:.3g} FLOPs): "
              f"{a['acc']:.3f} [{a['interval'][0]:.3f}, {a['interval'][1]:.3f}], one trial "
              f"[{a['trial_interval'][0]:.3f}, {a['trial_interval'][1]:.3f}]"
              + (f", p_reach {a['p_reach']:.2f}" if a["p_reach"] is not None else "")
              + (f", recorded run {a['recorded_run'][:8]}" if a["recorded_run"] else "")
              + f"; freq/size: {a['verdict']}" + (f" ({a['undetermined']})" if a["undetermined"] else ""))
    print(f"\n{seconds:.2f} s")
    if args.out:
        drop = ("predicted_acc", "run_id", "acc", "interval", "trial_interval")
        doc = {"command": "python benchmarks/plan_calibration.py --out " + str(args.out),
               "csv": str(args.csv.relative_to(ROOT) if args.csv.is_relative_to(ROOT) else args.csv),
               "machine": f"{platform.machine()}, {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "validate": {**val, "splits": {k: {a: b for a, b in v.items() if a not in drop}
                                              for k, v in val["splits"].items()}},
               "in_sample": inside, "extrapolation": extra, "answers": answers}
        args.out.write_text(json.dumps(plan.jsonable(doc), indent=1) + "\n")


if __name__ == "__main__":
    main()
