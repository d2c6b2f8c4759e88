"""Frontier plots: a PNG (matplotlib) and an interactive HTML page (plotly).

Input rows are plain dicts: the objective metrics by name, ``name``, ``pareto`` (bool),
``params`` and ``rare_freq``. Colour is the rare-task frequency, marker size the model
size, so the trade-off between the two is visible at a glance.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any


def axes_for(objectives: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """(x, y): the cost objective on x (FLOPs if named), the first other objective on y."""
    names = [m for m, _ in objectives]
    cost = next((m for m in names if m in ("train_flops", "params", "tokens")), names[-1])
    other = next((m for m in names if m != cost), cost)
    return cost, other


def rows_from_entries(entries: Sequence[Mapping[str, Any]], pareto: Mapping[str, bool]) -> list[dict]:
    from optimix.tracking import trial_metrics

    rows = []
    for e in entries:
        row = dict(trial_metrics(e["result"]))
        row.update(name=e["name"], pareto=bool(pareto.get(e["run_id"])), run_id=e["run_id"],
                   rare_freq=float(e["params"].get("mixture.rare_freq", math.nan)))
        rows.append(row)
    return rows


def frontier_plots(entries, objectives, pareto) -> dict[str, bytes]:
    rows = rows_from_entries(entries, pareto)
    x, y = axes_for(objectives)
    return {"frontier.png": png(rows, x, y), "frontier.html": html(rows, x, y)}


def png(rows: Sequence[Mapping[str, Any]], x: str, y: str, title: str = "") -> bytes:
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
    sc = ax.scatter(xs, ys, c=freqs if norm else "tab:blue", s=sizes, cmap="viridis", norm=norm,
                    edgecolors="black", linewidths=0.4, alpha=0.85, zorder=3)
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r[x])
    if front:
        ax.step([r[x] for r in front], [r[y] for r in front], where="post", color="crimson",
                lw=1.5, zorder=2, label=f"Pareto frontier ({len(front)} trials)")
        ax.legend(loc="lower right", fontsize=8)
    if norm:
        fig.colorbar(sc, ax=ax, label="rare-task frequency")
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(x + (" (training FLOPs)" if x == "train_flops" else ""))
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{y} against {x}: marker size = parameters", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def html(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> bytes:
    import plotly.graph_objects as go

    fig = go.Figure()
    for on_front in (False, True):
        part = [r for r in rows if bool(r.get("pareto")) == on_front]
        if not part:
            continue
        fig.add_trace(go.Scatter(
            x=[r[x] for r in part], y=[r[y] for r in part], mode="markers",
            name="Pareto frontier" if on_front else "other trials",
            marker=dict(size=[8 + 3 * math.log10(max(r["params"], 10)) for r in part],
                        color=[r.get("rare_freq") for r in part], colorscale="Viridis",
                        showscale=on_front, line=dict(width=2 if on_front else 0.5, color="crimson" if on_front else "black"),
                        colorbar=dict(title="rare freq")),
            text=[f"{r['name']}<br>params={r['params']:,.0f}<br>run {r.get('run_id', '')}" for r in part],
            hovertemplate="%{text}<br>" + x + "=%{x:.3g}<br>" + y + "=%{y:.3f}<extra></extra>",
        ))
    fig.update_layout(xaxis_title=x, yaxis_title=y, template="plotly_white",
                      title=f"{y} against {x}")
    if all(r[x] > 0 for r in rows):
        fig.update_xaxes(type="log")
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()
