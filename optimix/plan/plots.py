"""Frontier plots: a PNG (matplotlib) and an interactive HTML page (plotly).

Input rows are frontier rows (``optimix.core.frontier.row``: the metrics by name, ``name``,
``params``, ``run_id``) with ``pareto`` (bool), ``curve`` (a learning-curve point rather than
a trial's final result) and ``rare_freq`` added (``plot_row``). Colour is the rare-task
frequency, marker size the model size, so the trade-off between the two is visible at a glance.
Trials tied in config and values (``frontier.tied``) are one point, labelled with their count.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from optimix.core import frontier, metrics, regime
from optimix.core.config import Objective
from optimix.core.entry import LedgerEntry


def axes_for(objectives: Sequence[Objective]) -> tuple[str, str]:
    """(x, y): the cost objective on x (FLOPs if named), the first other objective on y."""
    names = [o.metric for o in objectives]
    cost = next((m for m in names if m in ("train_flops", "params", "tokens")), names[-1])
    other = next((m for m in names if m != cost), cost)
    return cost, other


def plot_row(row: Mapping[str, Any], *, pareto: bool, config: Mapping[str, Any]) -> dict[str, Any]:
    """A frontier row (``optimix.core.frontier.row``) as the plots read it: ``pareto``, ``curve``,
    the trial's ``rare_freq`` and ``lr`` (from its logged params ``config``) added, a curve
    point named after its step."""
    name = row["name"] if row["final"] else f"{row['name']} @ step {row['step']}"
    return {**row, "name": name, "pareto": pareto, "curve": not row["final"],
            "rare_freq": float(config.get("mixture.rare_freq", math.nan)),
            "lr": float(config.get("train.lr", math.nan))}


def map_caption(rows: Sequence[Mapping[str, Any]]) -> str:
    """The map's caption: the regime of its trials (``optimix.core.regime``), each tied row
    counted for the trials it stands for, and what it means for the comparison; empty where
    no trial recorded its tokens."""
    reg = regime.regime((r["params"], r.get("tokens") or math.nan, r.get("lr")) for r in rows
                        if not r.get("curve") for _ in range(r.get("count", 1)))
    if not reg.sizes:
        return ""
    text = "Regime: " + "; ".join(regime.size_line(s) for s in reg.sizes) + "."
    verdict = regime.verdict_line(reg)
    return text + (f" Caution: {verdict}." if verdict else "")


def rows_from_records(trials: Sequence[Any], objectives: Sequence[Objective]) -> list[dict]:
    """Plot rows of a recorded search (``records.TrialRecord``): each ok trial's final result
    (tied ones once, by their params), plus the learning-curve points on the frontier."""
    rows = ([plot_row(frontier.recorded_row(t), pareto=t.pareto, config=t.params)
             for t in trials if t.status == frontier.OK]
            + [plot_row(frontier.recorded_row(t, step=step), pareto=True, config=t.params)
               for t in trials for step in t.pareto_steps])
    identity = {t.trial_id: frontier.params_identity(t.params) for t in trials}
    return frontier.tied(rows, objectives, identity, frontier.recorded_order(trials))


def rows_from_entries(entries: Sequence[LedgerEntry],
                      membership: Mapping[str, tuple[bool, list[int]]],
                      curve_points: Sequence[frontier.Candidate] = (),
                      objectives: Sequence[Objective] = (),
                      identity: Mapping[str, Any] | None = None) -> list[dict]:
    """Plot rows of a search's ledger entries: each ok trial's final result, plus the
    learning-curve points on the frontier (``curve_points``). Final results tied in
    ``identity`` (by trial id; else the entries' params) and every objective are one row;
    without ``objectives``, none are."""
    by_trial = {e.trial_id: e for e in entries}

    def entry_row(e: LedgerEntry, metrics: Mapping[str, Any], step: int | None = None) -> dict:
        return frontier.row(trial_id=e.trial_id, run_id=e.run_id, name=e.name,
                            metrics=metrics, params=e.result["params"], point=e.point,
                            final=step is None, step=step)

    rows = [plot_row(entry_row(e, e.final_metrics()),
                     pareto=membership.get(e.trial_id, (False, []))[0], config=e.params)
            for e in entries if e.status == frontier.OK]
    for point in curve_points:
        e = by_trial[point.trial_id]
        rows.append(plot_row(entry_row(e, point.metrics, point.step), pareto=True, config=e.params))
    if not objectives:
        return rows
    if identity is None:
        identity = {e.trial_id: frontier.params_identity(e.params) for e in entries}
    return frontier.tied(rows, objectives, identity)


def words(metric: str) -> str:
    """A metric named for an axis: ``acc/facts`` -> "accuracy on facts (exact match)"."""
    fixed = {"train_flops": "training FLOPs", "params": "parameters", "tokens": "training tokens",
             "non_embedding_params": "non-embedding parameters", "wall_s": "wall time (s)",
             "train_s": "training time (s)", "tokens_per_s": "tokens per second"}
    if metric in fixed:
        return fixed[metric]
    parts = metrics.aggregate_of(metric)
    if parts:
        kind, how, tasks = parts
        return f"{how} {'accuracy' if kind == 'acc' else 'loss'} over {', '.join(tasks)}"
    if metric.startswith(metrics.ACC):
        return f"accuracy on {metrics.task_of(metric)}"
    if metric.startswith(metrics.LOSS):
        return f"loss on {metrics.task_of(metric)} (nats per token)"
    return metric


def rare_map(rows: Sequence[Mapping[str, Any]], quality: str) -> bytes | None:
    """"Grow or boost?": each finished trial at (rare-task frequency, parameters), coloured and
    labelled by ``quality``; None without two sizes or two frequencies to map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if not r.get("curve") and r.get(quality) is not None
           and r.get("rare_freq", math.nan) > 0 and r.get("params", 0) > 0]
    if len({r["rare_freq"] for r in pts}) < 2 or len({r["params"] for r in pts}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 5.6), dpi=120)
    sc = ax.scatter([r["rare_freq"] for r in pts], [r["params"] for r in pts], c=[r[quality] for r in pts],
                    cmap="viridis", s=260, marker="s", edgecolors=["crimson" if r.get("pareto") else "black"
                                                                  for r in pts], linewidths=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.figure.canvas.draw()  # scales and limits final: label positions in pixels
    labelled: list[Any] = []
    for r in sorted(pts, key=lambda r: -r[quality]):  # a cell hidden under another goes unlabelled
        at = ax.transData.transform((r["rare_freq"], r["params"]))
        if all(math.dist(at, other) > 24 for other in labelled):
            labelled.append(at)
            ax.annotate(f"{r[quality]:.2f}", (r["rare_freq"], r["params"]), ha="center", va="center",
                        fontsize=7, color="white" if r[quality] < 0.5 * max(p[quality] for p in pts) else "black")
    ax.set_xlabel("rare-task frequency (share of training sequences)")
    ax.set_ylabel("model size (parameters)")
    ax.set_title(f"Grow or boost? {words(quality)} by frequency and size (red edge: on the frontier)", fontsize=9)
    fig.colorbar(sc, ax=ax, label=words(quality))
    ax.grid(True, which="both", alpha=0.25)
    caption = textwrap.fill(map_caption(pts), 125)
    fig.tight_layout(rect=(0, min(0.4, 0.03 + 0.022 * (caption.count("\n") + 1)), 1, 1))
    fig.text(0.02, 0.01, caption, fontsize=6.5, va="bottom")  # the regime the map stands in
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def frontier_plots(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> dict[str, bytes]:
    """``frontier.png`` and ``frontier.html`` (the first quality objective against the cost);
    with more than two objectives, one more PNG per other objective (``frontier_<n>.png``),
    each marking the n-dimensional frontier's points (a staircase would misdraw it)."""
    x, y = axes_for(objectives)
    others = [o.metric for o in objectives if o.metric not in (x, y)]
    grid = rare_map(rows, y) if y.startswith(metrics.ACC) else None
    extra = {"rare_map.png": grid} if grid else {}
    if not others:
        return {"frontier.png": png(rows, x, y), "frontier.html": html(rows, x, y), **extra}
    n = len(objectives)
    out = {"frontier.png": png(rows, x, y, step=False, dims=n), "frontier.html": html(rows, x, y)}
    for i, other in enumerate(others, start=2):
        out[f"frontier_{i}.png"] = png(rows, x, other, step=False, dims=n)
    return {**out, **extra}


def png(rows: Sequence[Mapping[str, Any]], x: str, y: str, title: str = "", step: bool = True,
        dims: int = 2) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    xs = [r[x] for r in rows]
    ys = [r[y] for r in rows]
    freqs = [r.get("rare_freq", math.nan) for r in rows]
    sizes = [20 + 60 * math.log10(max(r["params"], 10) / min(q["params"] for q in rows) + 1) for r in rows]
    finite = [f for f in freqs if f == f and f > 0]
    norm = LogNorm(min(finite), max(finite)) if len(finite) > 1 and min(finite) < max(finite) else None
    marker = ["D" if r.get("curve") else "o" for r in rows]
    sc = None
    for shape in ("o", "D"):
        idx = [i for i, m in enumerate(marker) if m == shape]
        if not idx:
            continue
        colour = {"c": [freqs[i] for i in idx], "cmap": "viridis", "norm": norm} if norm else {"c": "tab:blue"}
        sc = ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], marker=shape, **colour,
                        s=[sizes[i] for i in idx], edgecolors="black", linewidths=0.4, alpha=0.85,
                        zorder=3, label="learning-curve point" if shape == "D" else None)
    for r in rows:
        if r.get("count", 1) > 1:  # trials tied in config and values: one point
            ax.annotate(f"x{r['count']}", (r[x], r[y]), textcoords="offset points", xytext=(5, 5),
                        fontsize=7, zorder=4)
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r[x])
    if front:
        n_curve = sum(bool(r.get("curve")) for r in front)
        n_final = len(front) - n_curve
        label = f"Pareto frontier ({n_final} final result{'s' * (n_final != 1)}"
        label += f", {n_curve} learning-curve point{'s' * (n_curve != 1)})" if n_curve else ")"
        if step:
            ax.step([r[x] for r in front], [r[y] for r in front], where="post", color="crimson",
                    lw=1.5, zorder=2, label=label)
        else:  # an n-dimensional frontier seen in two of its dimensions: its points, ringed
            ax.scatter([r[x] for r in front], [r[y] for r in front], s=160, facecolors="none",
                       edgecolors="crimson", linewidths=1.5, zorder=4,
                       label=label.replace("Pareto frontier", f"Pareto frontier in {dims} objectives"))
        ax.legend(loc="best", fontsize=8)  # the least covered corner
    if norm:
        fig.colorbar(sc, ax=ax, label="rare-task frequency")
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(words(x))
    ax.set_ylabel(words(y))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{words(y)} against {words(x)}: every finished trial, "
                 "marker size = parameters", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def html(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> bytes:
    import plotly.graph_objects as go

    fig = go.Figure()
    groups = {"other trials": lambda r: not r.get("pareto"),
              "Pareto frontier": lambda r: r.get("pareto") and not r.get("curve"),
              "Pareto frontier (learning-curve points)": lambda r: r.get("pareto") and r.get("curve")}
    for label, keep in groups.items():
        part = [r for r in rows if keep(r)]
        on_front = label != "other trials"
        if not part:
            continue
        fig.add_trace(go.Scatter(
            x=[r[x] for r in part], y=[r[y] for r in part], mode="markers", name=label,
            marker=dict(size=[8 + 3 * math.log10(max(r["params"], 10)) for r in part],
                        symbol="diamond" if "curve" in label else "circle",
                        color=[r.get("rare_freq") for r in part], colorscale="Viridis",
                        showscale=label == "Pareto frontier", line=dict(width=2 if on_front else 0.5, color="crimson" if on_front else "black"),
                        colorbar=dict(title="rare freq")),
            text=[f"{r['name']}<br>params={r['params']:,.0f}<br>run {r.get('run_id', '')}{_ties(r)}"
                  for r in part],
            hovertemplate="%{text}<br>" + x + "=%{x:.3g}<br>" + y + "=%{y:.3f}<extra></extra>",
        ))
    tied = [r for r in rows if r.get("count", 1) > 1]
    if tied:  # trials tied in config and values: one point, labelled with their count
        fig.add_trace(go.Scatter(x=[r[x] for r in tied], y=[r[y] for r in tied], mode="text",
                                 text=[f"x{r['count']}" for r in tied], textposition="top right",
                                 showlegend=False, hoverinfo="skip"))
    fig.update_layout(xaxis_title=words(x), yaxis_title=words(y), template="plotly_white",
                      title=f"{words(y)} against {words(x)}")
    if all(r[x] > 0 for r in rows):
        fig.update_xaxes(type="log")
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()


def _ties(row: Mapping[str, Any]) -> str:
    """Hover text for a point that stands for several tied trials."""
    if row.get("count", 1) <= 1:
        return ""
    return f"<br>x{row['count']} tied trials: " + ", ".join(row["trial_ids"])
