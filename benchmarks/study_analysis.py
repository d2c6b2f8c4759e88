"""The reproduction's analysis: pure functions over rows (one dict per trial, as ``read_csv``
gives them), the CSV format, and the text tables. No Ray, no MLflow; ``benchmarks/
reproduce_study.py`` runs the searches and ``study_plots.py`` draws the figures."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODADD_SPACE = ROOT / "search_spaces" / "study_modadd.yaml"

LEVEL = 0.5  # the threshold: mean rare-task accuracy over seeds
LOSS_LEVEL = 1.0  # a smooth check: the frequency where the rare-task loss falls to 1 nat per token
ISO_LEVEL = 0.8  # the largest model's reference point in the iso-accuracy comparison
GU_SLOPE = (1.15, 1.28)  # Gu et al. 2025: measured, predicted slope of log f_thres vs log M
BOOTSTRAP = 2000

COLUMNS = [
    "experiment", "trial_id", "run_id", "status", "rare_task", "target_params", "params",
    "non_embedding_params", "d_model", "n_layer", "n_head", "d_ff", "rare_freq", "delivery",
    "burst_period", "burst_duty", "seed", "weight_decay", "tokens", "steps", "train_flops",
    "rare_seen", "rare_per_item", "rare_acc", "rare_loss", "background_acc", "background_loss",
    "wall_s", "train_s", "lr", "background_facts",
]


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
                  single_seed=all(len(seeds_of[t["params"]]) < 2 for t in fitted),
                  **across_sizes(pts))
    return result


def across_sizes(points: list[tuple[float, float]]) -> dict:
    """What the sizes themselves say about the slope: the straight-line fit's own 95% interval
    (Student t on n - 2 degrees of freedom: how far the sizes scatter about the line, which
    the seed bootstrap does not see), and the slope of every three adjacent sizes."""
    from scipy import stats

    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    out: dict[str, Any] = {"ci95_across_sizes": None, "local3_slopes": []}
    if len(points) >= 3:
        out["local3_slopes"] = [{"from": points[i][0], "to": points[i + 2][0],
                                 "slope": float(-np.polyfit(x[i:i + 3], y[i:i + 3], 1)[0])}
                                for i in range(len(points) - 2)]
        fit = stats.linregress(x, y)
        half = float(stats.t.ppf(0.975, len(points) - 2) * fit.stderr)
        out["ci95_across_sizes"] = [float(-fit.slope - half), float(-fit.slope + half)]
    return out


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
    from optimix.core.pareto import non_dominated

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
    from optimix.core.space import load_space
    from optimix.trial.tasks import build_tasks

    task_overrides = [o for o in overrides if o.startswith("tasks.")]  # the split's settings only
    config = load_space(MODADD_SPACE, task_overrides).resolve({"seed": seed})
    taskset = build_tasks(config)
    name = config.mixture.rare_task
    held = taskset.tasks[name].eval_ids[:, 1:3] - taskset.vocab.symbol0
    held_set = {(int(a), int(b)) for a, b in held}
    return float(np.mean([(int(b), int(a)) not in held_set for a, b in held]))



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


