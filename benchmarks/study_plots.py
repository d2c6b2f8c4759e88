"""The reproduction's figures (PNG, matplotlib's Agg backend), from rows and analysis results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from study_analysis import GU_SLOPE, LEVEL, frontier, grid_table, mean_curve, thresholds


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


def plot_bursts(comparison: list[dict], path: Path, title: str | None = None) -> None:
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
    matched = len({e["rare_freq"] for e in comparison}) > 1
    ax.set_xticklabels([f"{_size_label(e['params'])} params" + (f"\nf = {e['rare_freq']:g}" if matched else "")
                        for e in comparison], fontsize=8 if matched else 10)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rare-task accuracy (dots: seeds)")
    if title:
        ax.set_title(title, fontsize=9)
    elif comparison:
        e = comparison[0]
        ax.set_title(f"Same long-run frequency {e['rare_freq']:g}: even vs bursts "
                     f"(every {e['burst_period']} steps, duty {e['burst_duty']:g})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)



def plot_panels(panels: dict[str, dict[str, list[dict]]], x_key: str, path: Path, title: str,
                x_label: str) -> None:
    """One panel per entry of ``panels``; in each, rare accuracy (mean over seeds, seeds as
    dots) against ``x_key`` for every labelled set of rows."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.9), dpi=120, squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items(), strict=True):
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(lines), 1)))
        for (label, rows), color in zip(lines.items(), colors, strict=True):
            xs = sorted({r[x_key] for r in rows})
            means = [np.mean([r["rare_acc"] for r in rows if r[x_key] == x]) for x in xs]
            ax.plot(xs, means, "-o", color=color, lw=1.6, ms=4, label=label)
            ax.scatter([r[x_key] for r in rows], [r["rare_acc"] for r in rows], color=color, s=9, alpha=0.35)
        ax.axhline(LEVEL, color="gray", ls="--", lw=0.8)
        if x_key == "rare_freq":  # labelled at the grid's frequencies only
            _freq_axis(ax, sorted({r[x_key] for rows in lines.values() for r in rows}))
        else:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_label, fontsize=8)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("rare-task accuracy")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_lr(entries: list[dict], path: Path) -> None:
    """Rare accuracy against the learning rate, one line per size (at its own frequency)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4), dpi=120)
    for entry, color in zip(entries, ("tab:blue", "tab:red", "tab:green"), strict=False):
        lrs = sorted(entry["by_lr"])
        ax.plot(lrs, [entry["by_lr"][lr]["rare_acc"] for lr in lrs], "-o", color=color,
                label=f"{_size_label(entry['params'])} params at f = {entry['rare_freq']:g}")
        for lr in lrs:
            seeds = entry["by_lr"][lr]["rare_acc_by_seed"]
            ax.scatter([lr] * len(seeds), seeds, color=color, s=10, alpha=0.4)
    ax.set_xscale("log")
    ax.set_xticks(sorted({lr for e in entries for lr in e["by_lr"]}))
    ax.set_xticklabels([f"{lr:g}" for lr in sorted({lr for e in entries for lr in e["by_lr"]})])
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("peak learning rate (AdamW, cosine)")
    ax.set_ylabel("rare-task accuracy (dots: seeds)")
    ax.set_title("Learning rate at a frequency near each size's threshold", fontsize=9)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_iso_tuned(budgets: list[dict], path: Path) -> None:
    """Equal FLOPs, tuned learning rates: per budget, rare and background accuracy of the
    baseline, the boosts and the grown models (bars: seed means; dots: seeds; a capped option
    trained on fewer FLOPs than its budget)."""
    from optimix.core.regime import ratio

    plt = _plt()
    fig, axes = plt.subplots(1, len(budgets), figsize=(max(6.4, 4.6 * len(budgets)), 4.2), dpi=120, squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        options = budget["options"]
        xs = np.arange(len(options))
        for offset, key, color, label in ((-0.2, "rare_acc", "tab:blue", "rare facts"),
                                          (0.2, "background_acc", "tab:orange", "background facts")):
            ax.bar(xs + offset, [o[key] for o in options], width=0.38, color=color, alpha=0.75, label=label)
            for x, o in zip(xs, options, strict=True):
                seeds = list(o[f"{key}_by_seed"].values())
                ax.scatter([x + offset] * len(seeds), seeds, color="black", s=6, zorder=3)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{o['kind']}\n{_size_label(o['params'])}, f={o['rare_freq']:g}\n"
                            f"lr {o['lr']:g}, {ratio(o['tokens_per_param'])} tok/p"
                            + ("\n(capped)" if o.get("capped") else "")
                            for o in options], fontsize=6)
        ax.set_ylim(0, 1.05)
        capped = sorted({o["train_flops"] for o in options if o.get("capped")})
        ax.set_title(f"{budget['budget_flops']:.3g} training FLOPs"
                     + (f"\n(capped: trained to {capped[0]:.3g})" if capped else ""), fontsize=9)
        ax.grid(True, axis="y", alpha=0.25)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Equal FLOPs, each size at its tuned learning rate:\nboost the frequency or grow the model?",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
