"""Reproduce the study on a laptop CPU: rare-task thresholds against model size and frequency.

Huang et al. 2026 (arXiv:2605.29548): a rare task injected into the training stream is
learned only by the larger models, and bursts hurt small models. Gu et al. 2025
(arXiv:2505.18091): accuracy jumps at a critical mixing ratio, and the threshold frequency
falls with model size as a power law, ``f_thres ~ M^-s`` with s measured 1.15 (predicted 1.28).

Every trial runs through ``optimix search`` (grid sampler, in-process Ray, MLflow in SQLite)
in a work folder outside the repository, and is read back from MLflow with
``optimix.records.load_search``. Three searches:

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
import csv
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_arms, beside this script
from study_arms import ARMS, arm_searches, primary_facts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reproduction"
PRIMARY_SPACE = ROOT / "search_spaces" / "study_reproduction.yaml"
MODADD_SPACE = ROOT / "search_spaces" / "study_modadd.yaml"

LEVEL = 0.5  # the threshold: mean rare-task accuracy over seeds
LOSS_LEVEL = 1.0  # a smooth check: the frequency where the rare-task loss falls to 1 nat per token
ISO_LEVEL = 0.8  # the largest model's reference point in the iso-accuracy comparison
GU_SLOPE = (1.15, 1.28)  # Gu et al. 2025: measured, predicted slope of log f_thres vs log M
BOOTSTRAP = 2000

# --quick: fewer sizes, frequencies and seeds (about 20 trials)
QUICK = {"sizes": [17000, 45000, 110000], "freqs": [0.004, 0.008, 0.016, 0.032, 0.064],
         "seeds": [0]}

COLUMNS = [
    "experiment", "trial_id", "run_id", "status", "rare_task", "target_params", "params",
    "non_embedding_params", "d_model", "n_layer", "n_head", "d_ff", "rare_freq", "delivery",
    "burst_period", "burst_duty", "seed", "weight_decay", "tokens", "steps", "train_flops",
    "rare_seen", "rare_per_item", "rare_acc", "rare_loss", "background_acc", "background_loss",
    "wall_s", "train_s", "lr", "background_facts",
]


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
    from optimix.search import grid_values
    from optimix.space import load_space

    space = load_space(PRIMARY_SPACE, list(overrides))
    return grid_values(key, space.dimensions[key])


def run_search(space_path: Path, experiment: str, overrides: list[str], workdir: Path,
               resume: bool) -> dict:
    """``optimix search`` as a user runs it; returns what the run took (wall time, load)."""
    from optimix.search import grid_size
    from optimix.space import load_space

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
    from optimix.records import load_search
    from optimix.space import load_space
    from optimix.train import plan_trial

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
        items = spec.n_facts if spec.kind == "facts" else round((1 - spec.eval_fraction) * spec.p ** 2)
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
            "rare_seen": round(seen), "rare_per_item": round(seen / items, 2),
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


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})


def read_csv(path: Path) -> list[dict]:
    """Rows with numbers parsed; only ``ok`` trials carry accuracies."""
    ints = {"target_params", "params", "non_embedding_params", "d_model", "n_layer", "n_head",
            "d_ff", "burst_period", "seed", "tokens", "steps", "rare_seen", "background_facts"}
    text = {"experiment", "trial_id", "run_id", "status", "rare_task", "delivery"}
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key in text:
                    row[key] = value
                elif value in ("", None):
                    row[key] = None
                elif key in ints:
                    row[key] = int(float(value))
                else:
                    row[key] = float(value)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Analysis: pure functions over rows


def grid_table(rows: list[dict], value: str = "rare_acc") -> tuple[list[int], list[float], dict]:
    """(sizes, freqs, {(size, freq): {seed: value}}) over ``ok`` even-delivery trials."""
    table: dict[tuple[int, float], dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r["status"] == "ok" and r.get("delivery", "even") == "even" and r.get(value) is not None:
            table[(r["params"], r["rare_freq"])][r["seed"]] = r[value]
    sizes = sorted({k[0] for k in table})
    freqs = sorted({k[1] for k in table})
    return sizes, freqs, table


def mean_curve(table: dict, size: int, freqs: list[float], seeds: list[int] | None = None) -> np.ndarray:
    """Mean over seeds per frequency (``seeds`` may repeat: a bootstrap draw); NaN if missing."""
    out = []
    for f in freqs:
        cell = table.get((size, f), {})
        values = [cell[s] for s in (seeds if seeds is not None else cell) if s in cell]
        out.append(float(np.mean(values)) if values else math.nan)
    return np.array(out)


def threshold_grid(freqs: list[float], means: np.ndarray, level: float = LEVEL) -> float | None:
    """The lowest grid frequency whose mean accuracy is >= ``level`` (None: never reached)."""
    for f, m in zip(freqs, means, strict=True):
        if m >= level:
            return f
    return None


def threshold_interp(freqs: list[float], means: np.ndarray, level: float = LEVEL) -> tuple[float | None, str]:
    """Where the mean accuracy first crosses ``level``, linear in log frequency.

    Returns (value, how): ``interpolated``; ``below-grid`` (already >= level at the lowest
    frequency: the value is that frequency, an upper bound); ``above-grid`` (never reached).
    """
    for i, (f, m) in enumerate(zip(freqs, means, strict=True)):
        if m >= level:
            if i == 0:
                return f, "below-grid"
            f0, m0 = freqs[i - 1], means[i - 1]
            t = (level - m0) / (m - m0)
            return float(math.exp(math.log(f0) + t * (math.log(f) - math.log(f0)))), "interpolated"
    return None, "above-grid"


def fit_power_law(sizes: list[float], thresholds: list[float]) -> tuple[float, float]:
    """Least squares ``log f = a - s log N``; returns (a, s)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(thresholds, float))
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(-slope)


def _scored(rows: list[dict], metric: str, level: float) -> tuple[list[int], list[float], dict, float]:
    """``grid_table`` with values turned so that higher is better (a loss is negated)."""
    sizes, freqs, table = grid_table(rows, metric)
    if metric.endswith("loss"):
        table = {k: {s: -v for s, v in cell.items()} for k, cell in table.items()}
        level = -level
    return sizes, freqs, table, level


def thresholds(rows: list[dict], level: float = LEVEL, metric: str = "rare_acc") -> list[dict]:
    """Per size: the grid and interpolated thresholds of the mean over seeds.

    ``metric`` ``rare_loss``: the frequency where the mean loss first falls to ``level``.
    """
    sizes, freqs, table, level = _scored(rows, metric, level)
    out = []
    for size in sizes:
        means = mean_curve(table, size, freqs)
        value, how = threshold_interp(freqs, means, level)
        grid = threshold_grid(freqs, means, level)
        row = next(r for r in rows if r["params"] == size)
        seeds = sorted({s for f in freqs for s in table.get((size, f), {})})
        items = row["rare_per_item"] / row["rare_freq"] if row.get("rare_per_item") else None
        out.append({"params": size, "non_embedding_params": row["non_embedding_params"],
                    "train_flops": row["train_flops"], "seeds": len(seeds),
                    "threshold_grid": grid, "threshold_interp": value, "how": how,
                    "exposures_per_item_at_threshold": None if value is None or items is None
                    else round(value * items, 1)})
    return out


def fit_with_bootstrap(rows: list[dict], x_key: str = "params", level: float = LEVEL,
                       n_boot: int = BOOTSTRAP, seed: int = 0, metric: str = "rare_acc") -> dict:
    """The power-law fit over sizes whose threshold lies inside the grid, and a bootstrap CI.

    Bootstrap: for each size independently, draw its seeds with replacement, recompute the
    mean curve and its interpolated threshold, refit. A draw in which some fitted size's
    threshold leaves the grid is dropped (and counted).
    """
    per_size = thresholds(rows, level, metric)
    result: dict[str, Any] = {"x": x_key, "metric": metric, "level": level}
    sizes, freqs, table, level = _scored(rows, metric, level)
    fitted = [t for t in per_size if t["how"] == "interpolated"]
    x_of = {t["params"]: t[x_key] for t in per_size}
    result.update({ "sizes": [t["params"] for t in fitted],
                   "excluded": [{"params": t["params"], "how": t["how"]}
                                for t in per_size if t["how"] != "interpolated"]})
    if len(fitted) < 2:
        result.update(slope=None, intercept=None, ci95=None, note="fewer than 2 sizes with a threshold inside the grid")
        return result
    a, s = fit_power_law([x_of[t["params"]] for t in fitted], [t["threshold_interp"] for t in fitted])
    grid_pts = [t for t in per_size if t["threshold_grid"] is not None]
    grid_slope = (fit_power_law([x_of[t["params"]] for t in grid_pts], [t["threshold_grid"] for t in grid_pts])[1]
                  if len({t["threshold_grid"] for t in grid_pts}) >= 2 else None)
    rng = np.random.default_rng(seed)
    seeds_of = {size: sorted({s for f in freqs for s in table.get((size, f), {})}) for size in sizes}
    slopes, dropped = [], 0
    for _ in range(n_boot):
        xs, ys = [], []
        for t in fitted:
            pool = seeds_of[t["params"]]
            draw = list(rng.choice(pool, size=len(pool), replace=True))
            value, how = threshold_interp(freqs, mean_curve(table, t["params"], freqs, draw), level)
            if how != "interpolated":
                break
            xs.append(x_of[t["params"]])
            ys.append(value)
        if len(xs) < len(fitted):
            dropped += 1
            continue
        slopes.append(fit_power_law(xs, ys)[1])
    ci = [float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))] if slopes else None
    pts = [(x_of[t["params"]], t["threshold_interp"]) for t in fitted]
    local = [{"from": p0[0], "to": p1[0], "slope": -math.log(p1[1] / p0[1]) / math.log(p1[0] / p0[0])}
             for p0, p1 in zip(pts, pts[1:], strict=False)]
    result.update(slope=s, intercept=a, ci95=ci, local_slopes=local, bootstrap_draws=len(slopes), bootstrap_dropped=dropped,
                  slope_from_grid_thresholds=grid_slope,
                  single_seed=all(len(seeds_of[t["params"]]) < 2 for t in fitted))
    return result


def iso_accuracy(rows: list[dict], level: float = ISO_LEVEL) -> dict:
    """The largest model at the lowest frequency where it reaches ``level``, against the
    cheapest smaller model that matches that accuracy at some (boosted) frequency."""
    sizes, freqs, table = grid_table(rows)
    _, _, background = grid_table(rows, "background_acc")
    flops = {r["params"]: r["train_flops"] for r in rows if r["status"] == "ok"}
    if not sizes:
        return {"found": False, "note": "no trials"}
    big = sizes[-1]
    means = mean_curve(table, big, freqs)
    f_big = threshold_grid(freqs, means, level)
    if f_big is None:
        return {"found": False, "note": f"the largest model never reaches {level}"}
    target = float(means[freqs.index(f_big)])
    ref = {"params": big, "rare_freq": f_big, "rare_acc": target, "train_flops": flops[big],
           "background_acc": float(mean_curve(background, big, [f_big])[0])}
    matches = []
    for size in sizes[:-1]:
        curve = mean_curve(table, size, freqs)
        for f, m in zip(freqs, curve, strict=True):
            if m >= target:
                matches.append({"params": size, "rare_freq": f, "rare_acc": float(m),
                                "train_flops": flops[size], "flops_ratio": flops[size] / flops[big],
                                "background_acc": float(mean_curve(background, size, [f])[0])})
                break
    best = min(matches, key=lambda m: m["train_flops"]) if matches else None
    return {"found": best is not None, "level": level, "reference": ref, "matches": matches,
            "cheapest": best, "passes_half_flops": bool(best and best["flops_ratio"] <= 0.5)}


def bursts_comparison(rows: list[dict]) -> list[dict]:
    """Per size: rare accuracy (and loss) under even and burst delivery, seed by seed."""
    out = []
    for size in sorted({r["params"] for r in rows if r["status"] == "ok"}):
        by: dict[str, dict[int, dict]] = defaultdict(dict)
        for r in rows:
            if r["params"] == size and r["status"] == "ok":
                by[r["delivery"]][r["seed"]] = r
        seeds = sorted(set(by["even"]) & set(by["bursts"]))
        if not seeds:
            continue
        diffs = [by["bursts"][s]["rare_acc"] - by["even"][s]["rare_acc"] for s in seeds]
        entry = {"params": size, "rare_freq": by["even"][seeds[0]]["rare_freq"], "seeds": seeds,
                 "burst_period": by["bursts"][seeds[0]]["burst_period"],
                 "burst_duty": by["bursts"][seeds[0]]["burst_duty"], "diff_bursts_minus_even": diffs,
                 "mean_diff": float(np.mean(diffs))}
        for d in ("even", "bursts"):
            entry[d] = {k: float(np.mean([by[d][s][k] for s in seeds]))
                        for k in ("rare_acc", "rare_loss", "background_acc")}
            entry[d]["rare_acc_by_seed"] = [by[d][s]["rare_acc"] for s in seeds]
        out.append(entry)
    return out


def frontier(rows: list[dict]) -> list[dict]:
    """Pareto frontier (rare accuracy up, FLOPs down) over (size, frequency) means."""
    from optimix.pareto import non_dominated

    sizes, freqs, table = grid_table(rows)
    _, _, background = grid_table(rows, "background_acc")
    flops = {r["params"]: r["train_flops"] for r in rows if r["status"] == "ok"}
    cells = [(s, f) for s in sizes for f in freqs if table.get((s, f))]
    if not cells:
        return []
    values = np.array([[float(np.mean(list(table[c].values()))), flops[c[0]]] for c in cells])
    mask = non_dominated(values, ["max", "min"])
    return [{"params": c[0], "rare_freq": c[1], "rare_acc": float(v[0]), "train_flops": float(v[1]),
             "background_acc": float(np.mean(list(background[c].values()))), "pareto": bool(on)}
            for c, v, on in zip(cells, values, mask, strict=True)]


def mirror_share(seed: int, overrides: list[str] = ()) -> float:
    """Share of modadd's held-out pairs (a, b) whose mirror (b, a) is a training pair.

    With ``heldout: ordered`` (the default) the split holds out pairs, not unordered pairs:
    a model that memorises the training pairs and learns that addition commutes answers
    these without the modular rule. With ``heldout: unordered`` the share is 0.
    """
    from optimix.space import load_space
    from optimix.tasks import build_tasks

    task_overrides = [o for o in overrides if o.startswith("tasks.")]  # the split's settings only
    config = load_space(MODADD_SPACE, task_overrides).resolve({"seed": seed})
    taskset = build_tasks(config)
    name = config.mixture.rare_task
    held = taskset.tasks[name].eval_ids[:, 1:3] - taskset.vocab.symbol0
    held_set = {(int(a), int(b)) for a, b in held}
    return float(np.mean([(int(b), int(a)) not in held_set for a, b in held]))


# ---------------------------------------------------------------------------------------------
# Figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _size_label(params: int) -> str:
    return f"{params / 1e6:.2f}M" if params >= 1e6 else f"{params / 1e3:.0f}K"


def _freq_axis(ax, freqs: list[float]) -> None:
    """Log x axis labelled at the grid frequencies only (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(freqs)
    ax.set_xticklabels([f"{f:g}" for f in freqs], fontsize=8)


def plot_curves(rows: list[dict], path: Path, title: str, chance: float | None = None,
                ceiling: float | None = None) -> None:
    """Rare accuracy and rare loss against frequency, one line per size (seeds as dots)."""
    plt = _plt()
    sizes, freqs, table = grid_table(rows)
    _, _, losses = grid_table(rows, "rare_loss")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), dpi=120)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    for size, color in zip(sizes, colors, strict=True):
        for ax, tab in ((axes[0], table), (axes[1], losses)):
            means = mean_curve(tab, size, freqs)
            ax.plot(freqs, means, "-o", color=color, lw=1.8, ms=4, label=f"{_size_label(size)} params")
            for f in freqs:
                vals = list(tab.get((size, f), {}).values())
                ax.scatter([f] * len(vals), vals, color=color, s=10, alpha=0.35, zorder=1)
    axes[0].axhline(LEVEL, color="gray", ls="--", lw=0.8)
    if chance is not None:
        axes[0].axhline(chance, color="gray", ls=":", lw=0.8, label="chance")
    if ceiling is not None:
        axes[0].axhline(ceiling, color="crimson", ls=":", lw=1,
                        label="held-out pairs whose mirror (b, a) is trained")
    axes[0].set_ylabel("rare-task exact-match accuracy")
    axes[1].set_ylabel("rare-task loss (nats per answer token)")
    axes[1].set_yscale("log")
    for ax in axes:
        _freq_axis(ax, freqs)
        ax.set_xlabel("rare-task frequency (share of training sequences)")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylim(-0.03, 1.05)
    axes[0].legend(fontsize=8, loc="upper left", ncol=1 if ceiling is None else 2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_thresholds(rows: list[dict], fit: dict, path: Path) -> None:
    """Threshold frequency against parameters, the fit with its bootstrap band, Gu's slopes."""
    plt = _plt()
    per_size = thresholds(rows)
    fig, ax = plt.subplots(figsize=(6.8, 4.6), dpi=120)
    inside = [t for t in per_size if t["how"] == "interpolated"]
    ax.plot([t["params"] for t in inside], [t["threshold_interp"] for t in inside], "o",
            color="black", ms=7, label="interpolated 50% threshold (mean over seeds)", zorder=4)
    grid = [t for t in per_size if t["threshold_grid"] is not None]
    ax.plot([t["params"] for t in grid], [t["threshold_grid"] for t in grid], "_", color="tab:red",
            ms=14, mew=2, label="lowest grid frequency with mean >= 0.5", zorder=3)
    for t in per_size:
        if t["how"] == "below-grid":
            ax.annotate("", (t["params"], t["threshold_interp"] * 0.6), (t["params"], t["threshold_interp"]),
                        arrowprops={"arrowstyle": "->", "color": "gray"})
    if fit.get("slope") is not None:
        xs = np.geomspace(min(fit_x := [t["params"] for t in inside]), max(fit_x), 50)
        a, s = fit["intercept"], fit["slope"]
        ci = (f" (95% CI {fit['ci95'][0]:.2f}-{fit['ci95'][1]:.2f} over seeds)"
              if fit.get("ci95") and not fit.get("single_seed") else " (one seed: no CI)")
        ax.plot(xs, np.exp(a - s * np.log(xs)), color="tab:blue", label=f"fit: slope {s:.2f}{ci}")
        x_mid = math.exp(np.mean(np.log(fit_x)))
        y_mid = math.exp(a - s * math.log(x_mid))
        for g, ls in zip(GU_SLOPE, (":", "--"), strict=True):
            ax.plot(xs, y_mid * (xs / x_mid) ** -g, color="tab:orange", ls=ls, lw=1,
                    label=f"slope {g} (Gu et al. {'measured' if g == GU_SLOPE[0] else 'predicted'})")
    if not grid:
        ax.text(0.5, 0.5, "no size reaches mean accuracy 0.5 inside the grid", ha="center",
                transform=ax.transAxes)
    else:
        from matplotlib.ticker import NullFormatter, NullLocator

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks([t["params"] for t in per_size])
        ax.set_xticklabels([_size_label(t["params"]) for t in per_size])
    ax.set_xlabel("parameters (total)")
    ax.set_ylabel("threshold rare-task frequency")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="lower left")
    ax.set_title("Threshold frequency falls with model size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_frontier(rows: list[dict], iso: dict, path: Path) -> None:
    """Rare accuracy and background accuracy against training FLOPs; the iso comparison."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    cells = frontier(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=120, layout="constrained")
    freqs = [c["rare_freq"] for c in cells]
    norm = LogNorm(min(freqs), max(freqs))
    for ax, key in ((axes[0], "rare_acc"), (axes[1], "background_acc")):
        sc = ax.scatter([c["train_flops"] for c in cells], [c[key] for c in cells], c=freqs, cmap="viridis",
                        norm=norm, s=36, edgecolors="black", linewidths=0.4, zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs (equal tokens: FLOPs grow with size)")
        ax.grid(True, which="both", alpha=0.25)
    front = sorted((c for c in cells if c["pareto"]), key=lambda c: c["train_flops"])
    axes[0].step([c["train_flops"] for c in front], [c["rare_acc"] for c in front], where="post",
                 color="crimson", lw=1.4, zorder=2, label="Pareto frontier (mean over seeds)")
    if iso.get("found"):
        ref, best = iso["reference"], iso["cheapest"]
        for c, marker, label in ((ref, "*", f"largest at f={ref['rare_freq']:g}"),
                                 (best, "D", f"{_size_label(best['params'])} at f={best['rare_freq']:g}: "
                                             f"{best['flops_ratio']:.2f}x the FLOPs")):
            for ax, key in ((axes[0], "rare_acc"), (axes[1], "background_acc")):
                ax.scatter([c["train_flops"]], [c[key]], marker=marker, s=180, facecolors="none",
                           edgecolors="crimson", linewidths=1.8, zorder=4, label=label if ax is axes[0] else None)
    axes[0].set_ylabel("rare-task accuracy (mean over seeds)")
    axes[1].set_ylabel("background accuracy (share of facts recalled)")
    axes[0].legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    for size, f in sorted({(r["params"], r["train_flops"]) for r in rows if r["status"] == "ok"}):
        axes[1].annotate(_size_label(size), (f, 1), xycoords=("data", "axes fraction"), ha="center",
                         va="bottom", fontsize=7.5, color="dimgray")
    fig.colorbar(sc, ax=axes, label="rare-task frequency", shrink=0.9, pad=0.01)
    fig.suptitle("Accuracy against training FLOPs: what a smaller model at a boosted frequency gives up",
                 fontsize=10)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_bursts(comparison: list[dict], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 4.2), dpi=120)
    width = 0.35
    for i, entry in enumerate(comparison):
        for j, (d, color) in enumerate((("even", "tab:blue"), ("bursts", "tab:orange"))):
            x = i + (j - 0.5) * width
            ax.bar(x, entry[d]["rare_acc"], width, color=color, alpha=0.8,
                   label=d if i == 0 else None)
            ax.scatter([x] * len(entry[d]["rare_acc_by_seed"]), entry[d]["rare_acc_by_seed"],
                       color="black", s=12, zorder=3)
    ax.set_xticks(range(len(comparison)))
    ax.set_xticklabels([f"{_size_label(e['params'])} params" for e in comparison])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rare-task accuracy (dots: seeds)")
    if comparison:
        e = comparison[0]
        ax.set_title(f"Same long-run frequency {e['rare_freq']:g}: even vs bursts "
                     f"(every {e['burst_period']} steps, duty {e['burst_duty']:g})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Tables


def curve_table(rows: list[dict], value: str = "rare_acc") -> str:
    sizes, freqs, table = grid_table(rows, value)
    head = "| params | shape (d/L/H/ffn) | " + " | ".join(f"f={f:g}" for f in freqs) + " |"
    lines = [head, "| ---: | --- |" + " ---: |" * len(freqs)]
    for size in sizes:
        r = next(x for x in rows if x["params"] == size)
        cells = []
        for f in freqs:
            vals = list(table.get((size, f), {}).values())
            cells.append(f"{np.mean(vals):.2f}" + (f" ±{np.std(vals):.2f}" if len(vals) > 1 else "")
                         if vals else "-")
        lines.append(f"| {size:,} | {r['d_model']}/{r['n_layer']}/{r['n_head']}/{r['d_ff']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def threshold_table(rows: list[dict]) -> str:
    lines = ["| params | train FLOPs | threshold (grid) | threshold (interpolated) | exposures per item |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for t in thresholds(rows):
        grid = "-" if t["threshold_grid"] is None else f"{t['threshold_grid']:g}"
        interp = {"interpolated": lambda v: f"{v:.4f}", "below-grid": lambda v: f"<= {v:g}",
                  "above-grid": lambda v: "> grid"}[t["how"]](t["threshold_interp"])
        exp = "-" if t["exposures_per_item_at_threshold"] is None else f"{t['exposures_per_item_at_threshold']:g}"
        lines.append(f"| {t['params']:,} | {t['train_flops']:.3g} | {grid} | {interp} | {exp} |")
    return "\n".join(lines)


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
                print(f"fit vs {name}: slope {f['slope']:.2f}, {ci} over sizes {f['sizes']} "
                      f"(Gu et al.: {GU_SLOPE[0]} measured, {GU_SLOPE[1]} predicted)")
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
            from optimix.space import load_space

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
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(f"\nwrote {out / 'summary.json'} and figures in {out}")
    return summary


def run_arm(arm: str, args: argparse.Namespace, workdir: Path, out: Path, runs: dict) -> None:
    """Every search of one arm (``study_arms.arm_searches``) -> ``OUT/<arm>.csv``."""
    primary_rows = read_csv(OUT / "results.csv")  # the committed grid the arms are centred on
    primary = primary_facts(primary_rows, thresholds(primary_rows))
    rows, searches = [], []
    for search in arm_searches(arm, primary, quick=args.quick):
        overrides = [*search.overrides, *args.overrides]
        run = run_search(search.space, search.experiment, overrides, workdir, args.resume)
        searches.append(run)
        rows += collect(search.space, search.experiment, overrides, workdir)
    write_csv(rows, out / f"{arm}.csv")
    print(f"[{arm}] {len(rows)} rows -> {out / f'{arm}.csv'}", flush=True)
    runs[arm] = {"experiment": arm, "searches": searches, "trials": sum(r["trials"] for r in searches),
                 "wall_s": round(sum(r["wall_s"] for r in searches), 1), "workdir": str(workdir),
                 "quick": args.quick}


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
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    if workdir is not None:
        spaces = {"primary": (PRIMARY_SPACE, "study_reproduction", "results.csv"),
                  "bursts": (PRIMARY_SPACE, "study_bursts", "bursts.csv"),
                  "modadd": (MODADD_SPACE, "study_modadd", "modadd.csv")}
        for kind in [k for k in args.experiments if k in ARMS]:
            run_arm(kind, args, workdir, out, runs)
            runs_path.write_text(json.dumps(runs, indent=2) + "\n")
        for kind in [k for k in args.experiments if k not in ARMS]:
            space, experiment, csv_name = spaces[kind]
            overrides = space_overrides(args, kind)
            # A variant (--suffix) gets its own experiment, CSV and entry in runs.json.
            name, experiment = kind + args.suffix, experiment + args.suffix
            csv_name = csv_name.replace(".csv", f"{args.suffix}.csv")
            run = run_search(space, experiment, overrides, workdir, args.resume)
            run["workdir"] = str(workdir)
            run["quick"] = args.quick
            runs[name] = run
            rows = collect(space, experiment, overrides, workdir)
            write_csv(rows, out / csv_name)
            print(f"[{name}] {len(rows)} rows -> {out / csv_name}", flush=True)
            runs_path.write_text(json.dumps(runs, indent=2) + "\n")
    analyze(out, runs)


if __name__ == "__main__":
    main()
