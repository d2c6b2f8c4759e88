"""Reproduce the study on a laptop CPU: rare-task thresholds against model size and frequency.

Huang et al. 2026 (arXiv:2605.29548): a rare task injected into the training stream is
learned only by the larger models, and bursts hurt small models. Gu et al. 2025
(arXiv:2505.18091): accuracy jumps at a critical mixing ratio, and the threshold frequency
falls with model size as a power law, ``f_thres ~ M^-s`` with s measured 1.15 (predicted 1.28).

Every trial runs through ``optimix search`` (grid sampler, in-process Ray, MLflow in SQLite)
in a work folder outside the repository, and is read back from MLflow with
``optimix.records.records.load_search``. Three searches:

- ``primary`` (``search_spaces/study_reproduction.yaml``): rare fact recall against a
  Zipf background; sizes x frequencies x seeds -> ``docs/reproduction/results.csv``.
- ``bursts``: the same space, smallest and largest size, one matched long-run frequency,
  ``mixture.delivery`` even vs bursts -> ``bursts.csv``.
- ``modadd`` (``search_spaces/study_modadd.yaml``): the study's own injected task, modular
  addition on held-out pairs -> ``modadd.csv``.

Analysis (also alone with ``--analyze-only``, from the committed CSVs): the threshold
frequency per size (the lowest grid frequency whose mean rare accuracy over seeds is >= 0.5,
and a log-interpolated value), the power-law fit ``log f_thres = a - s log N`` by least
squares with a bootstrap CI over seeds, the accuracy-vs-FLOPs frontier, the iso-accuracy
comparison, the bursts-vs-even comparison; PNG figures and ``summary.json``.

    python benchmarks/reproduce_study.py                   # full: primary + bursts
    python benchmarks/reproduce_study.py --quick           # fewer points (<= 10 minutes)
    python benchmarks/reproduce_study.py --experiments modadd
    python benchmarks/reproduce_study.py --analyze-only    # re-analyse docs/reproduction/*.csv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study_* modules beside this script
from study_analysis import (  # noqa: E402
    GU_SLOPE,
    LOSS_LEVEL,
    MODADD_SPACE,
    ROOT,
    _mean,
    _round,
    bursts_comparison,
    curve_table,
    fit_with_bootstrap,
    frontier,
    iso_accuracy,
    mirror_share,
    read_csv,
    threshold_table,
    thresholds,
    write_csv,
)
from study_arms import ARMS, arm_searches, primary_facts, report_arms, tuned_rates  # noqa: E402
from study_plots import plot_bursts, plot_curves, plot_frontier, plot_thresholds  # noqa: E402

OUT = ROOT / "docs" / "reproduction"
PRIMARY_SPACE = ROOT / "search_spaces" / "study_reproduction.yaml"


# --quick: fewer sizes, frequencies and seeds (about 20 trials)
QUICK = {"sizes": [17000, 45000, 110000], "freqs": [0.004, 0.008, 0.016, 0.032, 0.064],
         "seeds": [0]}


# ---------------------------------------------------------------------------------------------
# Running the searches


def space_overrides(args: argparse.Namespace, experiment: str) -> list[str]:
    """``--set`` entries for one search: the grid (when narrowed), then the user's own."""
    sizes, freqs, seeds = args.grid_sizes, args.grid_freqs, args.seeds
    if args.quick and experiment != "modadd":
        sizes, freqs, seeds = sizes or QUICK["sizes"], freqs or QUICK["freqs"], seeds or QUICK["seeds"]
    out = []
    if experiment == "bursts":
        sizes = sizes or primary_grid("model.params")
        sizes = [min(sizes), max(sizes)]
        freqs = None
        out += [f"mixture.rare_freq={args.burst_freq}",
                "mixture.delivery={dist: choice, values: [even, bursts]}",
                f"mixture.burst_period={args.burst_period}", f"mixture.burst_duty={args.burst_duty}"]
    if sizes:
        out.append(f"model.params={{dist: choice, values: {list(map(int, sizes))}}}")
    if freqs:
        out.append(f"mixture.rare_freq={{dist: loguniform, low: {min(freqs) / 2}, "
                   f"high: {min(1.0, max(freqs) * 2)}, grid: {list(map(float, freqs))}}}")
    if seeds:
        out.append(f"seed={{dist: choice, values: {list(map(int, seeds))}}}")
    out += args.overrides
    return out


def primary_grid(key: str, overrides: list[str] = ()) -> list[Any]:
    from optimix.core.space import load_space
    from optimix.search import grid_values

    space = load_space(PRIMARY_SPACE, list(overrides))
    return grid_values(key, space.dimensions[key])


def run_search(space_path: Path, experiment: str, overrides: list[str], workdir: Path,
               resume: bool) -> dict:
    """``optimix search`` as a user runs it; returns what the run took (wall time, load)."""
    from optimix.core.space import load_space
    from optimix.search import grid_size

    space = load_space(space_path, overrides)
    trials = grid_size(space)
    if not any(o.startswith("search.trials=") for o in overrides):  # the user's own wins
        overrides = [*overrides, f"search.trials={trials}"]
    cmd = [sys.executable, "-m", "optimix.cli", "search", str(space_path), "--experiment", experiment,
           "--tracking-uri", tracking_uri(workdir), "--storage-path", str(workdir / "optimix_runs")]
    for override in overrides:
        cmd += ["--set", override]
    if resume:
        cmd.append("--resume")
    log_path = workdir / f"{experiment}.log"
    print(f"[{experiment}] {trials} trials; log {log_path}", flush=True)
    loads: list[float] = []
    stop = threading.Event()

    def sample_load() -> None:  # the machine is shared: record how busy it was
        while not stop.wait(30):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with open(log_path, "a") as log:
        done = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, check=False,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    stop.set()
    if done.returncode:
        tail = log_path.read_text()[-3000:]
        sys.exit(f"[{experiment}] optimix search failed ({done.returncode}):\n{tail}")
    print(f"[{experiment}] done in {wall / 60:.1f} min", flush=True)
    return {"experiment": experiment, "space": space_path.name, "overrides": overrides,
            "trials": trials, "wall_s": round(wall, 1),
            "load_avg_1min_mean": round(float(np.mean(loads)), 2) if loads else None,
            "load_avg_1min_max": round(float(np.max(loads)), 2) if loads else None,
            "cpus": os.cpu_count(), "max_concurrent": space.base.search.max_concurrent,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def collect(space_path: Path, experiment: str, overrides: list[str], workdir: Path) -> list[dict]:
    """Every trial of the experiment's latest search, read back from MLflow, one row each."""
    from optimix.core.space import load_space
    from optimix.records.records import load_search
    from optimix.trial.train import plan_trial

    space = load_space(space_path, overrides)
    record = load_search(tracking_uri(workdir), experiment)
    rows = []
    for trial in record.trials:
        p, m = trial.params, trial.metrics
        config = space.resolve(trial.point)
        plan = plan_trial(config)  # the shape the rule gave (MLflow holds only the target)
        rare = config.mixture.rare_task
        others = [t for t in config.tasks if t != rare]
        spec = config.tasks[rare]
        # the items a rare task repeats: facts, or trainable (a, b) pairs; a rule over random
        # inputs (copy, reverse, sort) repeats none, so it has no exposures per item
        items = (spec.n_facts if spec.kind == "facts" else round((1 - spec.eval_fraction) * spec.p ** 2)
                 if spec.kind in ("modadd", "compare") else None)
        tokens = m.get("tokens", plan.tokens)
        seen = tokens / plan.shape.n_ctx * config.mixture.rare_freq
        if m.get("params") is not None and int(m["params"]) != plan.shape.params:
            raise SystemExit(f"{trial.run_id}: params {m['params']} != planned {plan.shape.params}")
        rows.append({
            "experiment": experiment, "trial_id": trial.trial_id, "run_id": trial.run_id,
            "status": trial.status, "rare_task": rare, "target_params": p.get("model.params"),
            "params": plan.shape.params, "non_embedding_params": plan.shape.non_embedding_params,
            "d_model": plan.shape.d_model, "n_layer": plan.shape.n_layer,
            "n_head": plan.shape.n_head, "d_ff": plan.shape.d_ff,
            "rare_freq": config.mixture.rare_freq, "delivery": config.mixture.delivery,
            "burst_period": config.mixture.burst_period, "burst_duty": config.mixture.burst_duty,
            "seed": config.seed, "weight_decay": config.train.weight_decay,
            "tokens": int(tokens), "steps": plan.steps, "train_flops": m.get("train_flops"),
            "rare_seen": round(seen), "rare_per_item": round(seen / items, 2) if items else None,
            "rare_acc": m.get(f"acc/{rare}"), "rare_loss": m.get(f"loss/{rare}"),
            "background_acc": _mean([m.get(f"acc/{t}") for t in others]),
            "background_loss": _mean([m.get(f"loss/{t}") for t in others]),
            "wall_s": _round(m.get("wall_s"), 2), "train_s": _round(m.get("train_s"), 2),
            "lr": config.train.lr,
            "background_facts": sum(config.tasks[t].n_facts for t in others
                                    if config.tasks[t].kind == "facts") or None,
        })
    rows.sort(key=lambda r: (r["delivery"], r["params"], r["rare_freq"], r["seed"]))
    return rows


# ---------------------------------------------------------------------------------------------
# Driver


def analyze(out: Path, runs: dict) -> dict:
    summary: dict[str, Any] = {"runs": runs}
    primary = out / "results.csv"
    if primary.exists():
        rows = read_csv(primary)
        fit = fit_with_bootstrap(rows)
        fit_ne = fit_with_bootstrap(rows, "non_embedding_params")
        # Exact match makes transitions look sharp; the loss is a smooth check of the same trend.
        fit_loss = fit_with_bootstrap(rows, level=LOSS_LEVEL, metric="rare_loss")
        iso = iso_accuracy(rows)
        per_size = thresholds(rows)
        grid_falls = [t["threshold_grid"] for t in per_size]
        summary["primary"] = {
            "trials": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
            "thresholds": per_size, "fit_params": fit, "fit_non_embedding_params": fit_ne,
            "loss_thresholds": thresholds(rows, LOSS_LEVEL, "rare_loss"), "fit_loss": fit_loss,
            "threshold_falls_with_size": all(a is not None and b is not None and b <= a
                                             for a, b in zip(grid_falls, grid_falls[1:], strict=False))
            and len({g for g in grid_falls if g is not None}) > 1,
            "iso_accuracy": iso, "frontier": frontier(rows)}
        plot_curves(rows, out / "acc_vs_freq.png",
                    "Rare fact recall against its frequency, per model size (equal tokens; dots = seeds)")
        plot_thresholds(rows, fit, out / "threshold_vs_size.png")
        plot_frontier(rows, iso, out / "frontier.png")
        print("\nRare-task accuracy (mean ± sd over seeds):\n" + curve_table(rows))
        print("\nRare-task loss:\n" + curve_table(rows, "rare_loss"))
        print("\nBackground accuracy:\n" + curve_table(rows, "background_acc"))
        print("\nThresholds (mean rare accuracy >= 0.5):\n" + threshold_table(rows))
        for name, f in (("total params", fit), ("non-embedding params", fit_ne),
                        (f"total params, rare loss <= {LOSS_LEVEL} nats", fit_loss)):
            if f.get("slope") is not None:
                ci = (f"95% CI [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]"
                      if f.get("ci95") and not f.get("single_seed") else "no CI (one seed)")
                across = f["ci95_across_sizes"]
                across = "-" if across is None else f"[{across[0]:.2f}, {across[1]:.2f}]"
                print(f"fit vs {name}: slope {f['slope']:.2f}, seeds' {ci}, across sizes 95% {across}, "
                      f"three adjacent sizes {', '.join(format(e['slope'], '.2f') for e in f['local3_slopes'])} "
                      f"over sizes {f['sizes']} (Gu et al.: {GU_SLOPE[0]} measured, {GU_SLOPE[1]} predicted)")
        if iso.get("found"):
            ref, best = iso["reference"], iso["cheapest"]
            print(f"iso-accuracy: {ref['params']:,} params at f={ref['rare_freq']:g} -> {ref['rare_acc']:.2f} "
                  f"(background {ref['background_acc']:.3f}); {best['params']:,} params at "
                  f"f={best['rare_freq']:g} -> {best['rare_acc']:.2f} with {best['flops_ratio']:.2f}x the FLOPs "
                  f"(background {best['background_acc']:.3f})")
        else:
            print(f"iso-accuracy: {iso.get('note', 'no smaller model matched')}")
    bursts = out / "bursts.csv"
    if bursts.exists():
        comparison = bursts_comparison(read_csv(bursts))
        summary["bursts"] = comparison
        if comparison:
            plot_bursts(comparison, out / "bursts.png")
        for e in comparison:
            print(f"bursts vs even, {e['params']:,} params at f={e['rare_freq']:g}: even "
                  f"{e['even']['rare_acc']:.2f}, bursts {e['bursts']['rare_acc']:.2f} "
                  f"(per seed {', '.join(f'{d:+.2f}' for d in e['diff_bursts_minus_even'])})")
    for modadd in sorted(out.glob("modadd*.csv")):
        rows = read_csv(modadd)
        ok = [r for r in rows if r["status"] == "ok"]
        p, mirror = None, {}
        if MODADD_SPACE.exists():
            from optimix.core.space import load_space

            p = next(t.p for t in load_space(MODADD_SPACE).base.tasks.values() if t.kind == "modadd")
            overrides = runs.get(modadd.stem, {}).get("overrides", [])
            mirror = {seed: mirror_share(seed, overrides) for seed in sorted({r["seed"] for r in rows})}
        ceiling = float(np.mean(list(mirror.values()))) if mirror else None
        summary[modadd.stem] = {"trials": len(rows), "ok": len(ok), "thresholds": thresholds(rows),
                                "fit_params": fit_with_bootstrap(rows), "chance": 1 / p if p else None,
                                "mirror_share_by_seed": mirror, "mirror_share": ceiling}
        if ok:
            plot_curves(rows, out / f"{modadd.stem}_acc_vs_freq.png",
                        "Modular addition on held-out pairs against its frequency (dots = seeds)",
                        chance=1 / p if p else None, ceiling=ceiling or None)
        print(f"\n{modadd.name}: held-out accuracy (chance {1 / p if p else float('nan'):.3f}; "
              f"held-out pairs whose mirror (b, a) is trained: {mirror}):\n" + curve_table(rows))
        print(f"\n{modadd.name}: held-out loss:\n" + curve_table(rows, "rare_loss"))
        print(f"\n{modadd.name}: background accuracy:\n" + curve_table(rows, "background_acc"))
        print(f"\n{modadd.name}: thresholds:\n" + threshold_table(rows))
    if any((out / f"{arm}.csv").exists() for arm in ARMS):
        # The arms were centred on, and are paired with, the committed primary grid.
        summary["arms"] = report_arms(out, read_csv(OUT / "results.csv"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(f"\nwrote {out / 'summary.json'} and figures in {out}")
    return summary


def run_arm(arm: str, args: argparse.Namespace, workdir: Path, out: Path, runs: dict) -> None:
    """Every search of one arm (``study_arms.arm_searches``) -> ``OUT/<arm>.csv``."""
    primary_rows = read_csv(OUT / "results.csv")  # the committed grid the arms are centred on
    primary = primary_facts(primary_rows, thresholds(primary_rows))
    tuned = None
    if arm == "iso_flop_tuned":  # each size at the rate the lr_sweep arm found best (this run's, else committed)
        sweep = next((d / "lr_sweep.csv" for d in (out, OUT) if (d / "lr_sweep.csv").exists()), None)
        if sweep is None:
            sys.exit("iso_flop_tuned needs the lr_sweep arm's rows: run --experiments lr_sweep first")
        tuned = tuned_rates(read_csv(sweep))
        print(f"[{arm}] learning rates from {sweep}: {tuned}", flush=True)
    rows, searches = [], []
    seeds = args.arm_seeds
    chosen = [search for search in arm_searches(arm, primary, quick=args.quick, tuned_lr=tuned,
                                                budgets=tuple(args.budgets), seeds=seeds)
              if not args.searches or search.experiment in args.searches]
    for search in chosen:
        overrides = [*search.overrides, *args.overrides]
        run = run_search(search.space, search.experiment, overrides, workdir, args.resume)
        searches.append(run)
        rows += collect(search.space, search.experiment, overrides, workdir)
    if (seeds or args.searches) and (out / f"{arm}.csv").exists():
        # more seeds, or some of an arm's searches run again: keep the arm's other rows
        ran = {search.experiment for search in chosen}
        rows = [r for r in read_csv(out / f"{arm}.csv")
                if not (r["experiment"] in ran and (not seeds or r["seed"] in seeds))] + rows
    write_csv(rows, out / f"{arm}.csv")
    print(f"[{arm}] {len(rows)} rows -> {out / f'{arm}.csv'}", flush=True)
    if seeds or args.searches:  # the searches of the rows kept stay on record beside the new ones
        before = runs.get(arm, {}).get("searches", [])
        searches = [r for r in before if seeds or r["experiment"] not in args.searches] + searches
    runs[arm] = {"experiment": arm, "searches": searches, "trials": sum(r["trials"] for r in searches),
                 "wall_s": round(sum(r["wall_s"] for r in searches), 1), "workdir": str(workdir),
                 "quick": args.quick}


def _runs(path: Path, updates: dict | None = None) -> dict:
    """``runs.json`` as it is on disk, with ``updates`` (entries by name) written into it: an
    invocation writes only its own entries, so two running side by side keep each other's."""
    runs = json.loads(path.read_text()) if path.exists() else {}
    if updates:
        runs.update(updates)
        path.write_text(json.dumps(runs, indent=2) + "\n")
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer sizes, frequencies, seeds.")
    parser.add_argument("--analyze-only", action="store_true", help="Re-analyse the CSVs in --out.")
    parser.add_argument("--experiments", nargs="+", choices=["primary", "bursts", "modadd", *ARMS],
                        default=["primary", "bursts"],
                        help=f"Searches to run; the arms ({', '.join(ARMS)}) are in study_arms.py.")
    parser.add_argument("--workdir", default=None,
                        help="Folder for mlflow.db, search state and logs (default: a new one in /tmp).")
    parser.add_argument("--out", default=None,
                        help="Where the CSVs, figures and summary go (default: docs/reproduction; "
                             "with --quick, WORKDIR/out, so a pilot never replaces the committed data).")
    parser.add_argument("--resume", action="store_true", help="Resume the searches in --workdir.")
    parser.add_argument("--grid-sizes", nargs="+", type=int, default=None, help="model.params grid")
    parser.add_argument("--grid-freqs", nargs="+", type=float, default=None, help="mixture.rare_freq grid")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--burst-freq", type=float, default=0.064,
                        help="The matched long-run frequency of the bursts test.")
    parser.add_argument("--burst-period", type=int, default=100)
    parser.add_argument("--burst-duty", type=float, default=0.1)
    parser.add_argument("--budgets", nargs="+", choices=["b1", "b2", "b3"], default=["b1", "b2"],
                        help="iso_flop_tuned's budgets: b1/b2 the 110K/621K primary FLOPs, b3 the "
                             "FLOPs that give 621K 20 tokens per parameter (hours on a CPU).")
    parser.add_argument("--arm-seeds", nargs="+", type=int, default=None,
                        help="exposures, no_background and interference: run these seeds (default 0), merged into "
                             "the arm's CSV in place of any rows of the same seeds.")
    parser.add_argument("--searches", nargs="+", default=None, metavar="EXPERIMENT",
                        help="Run only these searches of an arm (by experiment name); their rows replace "
                             "theirs in the arm's CSV, the others are kept.")
    parser.add_argument("--suffix", default="",
                        help="Appended to the experiment and CSV names (a variant, e.g. _long).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Passed to every search (e.g. train.tokens=20000).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = None
    if not args.analyze_only:
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="optimix-study-"))
        if ROOT in workdir.parents or workdir == ROOT:
            sys.exit("--workdir must be outside the repository (mlflow.db never goes into it)")
        print(f"work folder (MLflow store, search state, logs): {workdir}", flush=True)
    out = Path(args.out) if args.out else (workdir / "out" if args.quick and workdir else OUT)
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.json"
    runs = _runs(runs_path)
    if workdir is not None:
        spaces = {"primary": (PRIMARY_SPACE, "study_reproduction", "results.csv"),
                  "bursts": (PRIMARY_SPACE, "study_bursts", "bursts.csv"),
                  "modadd": (MODADD_SPACE, "study_modadd", "modadd.csv")}
        for kind in [k for k in args.experiments if k in ARMS]:
            runs = _runs(runs_path)  # as it is now: another invocation may have written since
            run_arm(kind, args, workdir, out, runs)
            runs = _runs(runs_path, {kind: runs[kind]})
        for kind in [k for k in args.experiments if k not in ARMS]:
            space, experiment, csv_name = spaces[kind]
            overrides = space_overrides(args, kind)
            # A variant (--suffix) gets its own experiment, CSV and entry in runs.json.
            name, experiment = kind + args.suffix, experiment + args.suffix
            csv_name = csv_name.replace(".csv", f"{args.suffix}.csv")
            run = run_search(space, experiment, overrides, workdir, args.resume)
            run["workdir"] = str(workdir)
            run["quick"] = args.quick
            rows = collect(space, experiment, overrides, workdir)
            write_csv(rows, out / csv_name)
            print(f"[{name}] {len(rows)} rows -> {out / csv_name}", flush=True)
            runs = _runs(runs_path, {name: run})
    analyze(out, runs)


if __name__ == "__main__":
    main()
