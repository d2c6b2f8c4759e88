"""benchmarks/reproduce_study.py: its analysis (study_analysis.py) on hand-made tables, and the
script end to end.

The analysis tests are fast and need no Ray; the end-to-end test runs the real script (real
``optimix search``, Ray, MLflow in SQLite) on a 2x2 grid with a few training steps.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce_study.py"


def load_benchmark(name: str):
    """A module of benchmarks/ (a folder of scripts, not a package), by its file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study():
    return load_benchmark("study_analysis")


def row(params: int, freq: float, seed: int, acc: float, **extra) -> dict:
    """One ok trial as ``read_csv`` gives it; FLOPs proportional to params (equal tokens)."""
    base = {"status": "ok", "params": params, "non_embedding_params": params // 2, "rare_freq": freq,
            "seed": seed, "rare_acc": acc, "rare_loss": 1 - acc, "background_acc": params / 1e6,
            "train_flops": 1e6 * params, "delivery": "even", "rare_per_item": freq * 1280.0,
            "d_model": 8, "n_layer": 2, "n_head": 2, "d_ff": 32}
    return {**base, **extra}


# ---------------------------------------------------------------------------------------------
# Thresholds


@pytest.mark.parametrize(
    ("means", "expected", "how"),
    [
        ([0.0, 0.25, 0.75, 1.0], math.sqrt(0.02 * 0.04), "interpolated"),  # halfway in log f
        ([0.0, 0.5, 0.9, 1.0], 0.02, "interpolated"),  # exactly at a grid point
        ([0.6, 0.8, 0.9, 1.0], 0.01, "below-grid"),  # an upper bound only
        ([0.0, 0.1, 0.2, 0.49], None, "above-grid"),
        ([0.0, 0.6, 0.3, 1.0], 0.01 * (0.02 / 0.01) ** (0.5 / 0.6), "interpolated"),  # first crossing
    ],
)
def test_threshold_interp(study, means, expected, how):
    freqs = [0.01, 0.02, 0.04, 0.08]
    value, got_how = study.threshold_interp(freqs, np.array(means))
    assert got_how == how
    assert value == (None if expected is None else pytest.approx(expected))


def test_threshold_grid_is_the_lowest_frequency_reaching_the_level(study):
    freqs = [0.01, 0.02, 0.04]
    assert study.threshold_grid(freqs, np.array([0.1, 0.5, 0.9])) == 0.02
    assert study.threshold_grid(freqs, np.array([0.1, 0.2, 0.3])) is None


@pytest.mark.parametrize("slope", [0.6, 1.2, 2.0])
def test_fit_recovers_a_known_power_law(study, slope):
    """Sigmoid curves in log f centred on f_thres = 0.05 (N / 1e4)^-slope, three noisy seeds."""
    rng = np.random.default_rng(0)
    freqs = list(np.geomspace(1e-5, 0.5, 24))
    rows = []
    for params in (10_000, 20_000, 40_000, 80_000):
        centre = 0.05 * (params / 1e4) ** -slope
        for seed in range(3):
            for f in freqs:
                acc = 1 / (1 + math.exp(-4 * (math.log(f) - math.log(centre)))) + rng.normal(0, 0.03)
                rows.append(row(params, f, seed, float(np.clip(acc, 0, 1))))
    fit = study.fit_with_bootstrap(rows, n_boot=200)
    assert fit["sizes"] == [10_000, 20_000, 40_000, 80_000]
    assert fit["slope"] == pytest.approx(slope, abs=0.1)
    low, high = fit["ci95"]
    assert low <= fit["slope"] <= high
    assert high - low < 0.5


def test_fit_leaves_out_sizes_whose_threshold_is_off_the_grid(study):
    freqs = [0.01, 0.02, 0.04]
    curves = {1000: [0.0, 0.0, 0.1], 2000: [0.0, 0.2, 0.8], 4000: [0.1, 0.7, 1.0], 8000: [0.9, 1.0, 1.0]}
    rows = [row(p, f, s, a) for p, accs in curves.items() for f, a in zip(freqs, accs, strict=True) for s in (0, 1)]
    fit = study.fit_with_bootstrap(rows, n_boot=50)
    assert fit["sizes"] == [2000, 4000]
    assert {e["params"]: e["how"] for e in fit["excluded"]} == {1000: "above-grid", 8000: "below-grid"}
    per_size = {t["params"]: t for t in study.thresholds(rows)}
    assert per_size[2000]["threshold_grid"] == 0.04
    assert per_size[4000]["threshold_grid"] == 0.02
    assert per_size[1000]["threshold_grid"] is None


def test_loss_threshold_is_where_the_loss_first_falls_to_the_level(study):
    freqs = [0.01, 0.02, 0.04]
    losses = {1000: [4.0, 3.0, 0.5], 2000: [3.0, 1.0, 0.1], 4000: [0.8, 0.2, 0.1]}
    rows = [row(p, f, 0, 0.0, rare_loss=v) for p, ls in losses.items()
            for f, v in zip(freqs, ls, strict=True)]
    got = {t["params"]: (t["threshold_interp"], t["how"]) for t in study.thresholds(rows, 1.0, "rare_loss")}
    assert got[1000][1] == "interpolated"
    assert got[1000][0] == pytest.approx(0.02 * 2 ** 0.8)  # 3.0 -> 0.5 crosses 1.0 at 4/5
    assert got[2000] == (pytest.approx(0.02), "interpolated")
    assert got[4000] == (0.01, "below-grid")


def test_fit_needs_two_sizes(study):
    rows = [row(1000, f, 0, a) for f, a in ((0.01, 0.0), (0.02, 1.0))]
    assert study.fit_with_bootstrap(rows, n_boot=10)["slope"] is None


# ---------------------------------------------------------------------------------------------
# Iso-accuracy, frontier, bursts


def test_iso_accuracy_picks_the_cheapest_smaller_model_that_matches(study):
    freqs = [0.01, 0.02, 0.04, 0.08]
    curves = {  # params -> mean rare accuracy per frequency
        1_000: [0.0, 0.1, 0.5, 0.85],  # never reaches the reference's 0.9
        3_000: [0.0, 0.3, 0.95, 1.0],  # matches at 0.04 with 3/10 of the FLOPs
        5_000: [0.2, 0.9, 1.0, 1.0],  # matches at 0.02, dearer
        10_000: [0.5, 0.9, 1.0, 1.0],  # the largest reaches 0.8 first at 0.02 (0.9)
    }
    rows = [row(p, f, 0, a) for p, accs in curves.items() for f, a in zip(freqs, accs, strict=True)]
    iso = study.iso_accuracy(rows)
    assert iso["reference"]["params"] == 10_000 and iso["reference"]["rare_freq"] == 0.02
    assert iso["reference"]["rare_acc"] == pytest.approx(0.9)
    assert iso["cheapest"]["params"] == 3_000 and iso["cheapest"]["rare_freq"] == 0.04
    assert iso["cheapest"]["flops_ratio"] == pytest.approx(0.3)
    assert iso["cheapest"]["background_acc"] == pytest.approx(0.003)
    assert iso["passes_half_flops"]
    assert [m["params"] for m in iso["matches"]] == [3_000, 5_000]


def test_iso_accuracy_says_when_the_largest_never_reaches_the_level(study):
    rows = [row(1000, 0.01, 0, 0.1), row(2000, 0.01, 0, 0.7)]
    assert not study.iso_accuracy(rows)["found"]


def test_frontier_marks_non_dominated_cells(study):
    rows = [row(1000, 0.01, 0, 0.2), row(1000, 0.04, 0, 0.6), row(4000, 0.01, 0, 0.5),
            row(4000, 0.04, 0, 0.9)]
    on = {(c["params"], c["rare_freq"]) for c in study.frontier(rows) if c["pareto"]}
    assert on == {(1000, 0.04), (4000, 0.04)}


def test_bursts_comparison_pairs_seeds(study):
    rows = []
    for seed, (even, bursts) in enumerate([(0.9, 0.4), (0.8, 0.5), (1.0, 0.2)]):
        rows.append(row(1000, 0.05, seed, even))
        rows.append(row(1000, 0.05, seed, bursts, delivery="bursts", burst_period=100, burst_duty=0.1))
    rows.append(row(1000, 0.05, 3, 0.7))  # no bursts partner: left out
    (entry,) = study.bursts_comparison(rows)
    assert entry["seeds"] == [0, 1, 2]
    assert entry["diff_bursts_minus_even"] == pytest.approx([-0.5, -0.3, -0.8])
    assert entry["even"]["rare_acc"] == pytest.approx(0.9)
    assert entry["bursts"]["rare_acc"] == pytest.approx(1.1 / 3)


def test_csv_round_trip(study, tmp_path):
    rows = [{**row(1000, 0.01, 0, 0.5), "experiment": "x", "trial_id": "t", "run_id": "r",
             "rare_task": "facts", "target_params": 1000, "tokens": 10, "steps": 1}]
    path = tmp_path / "r.csv"
    study.write_csv(rows, path)
    (back,) = study.read_csv(path)
    assert back["params"] == 1000 and back["rare_acc"] == 0.5 and back["delivery"] == "even"
    assert back["wall_s"] is None


# ---------------------------------------------------------------------------------------------
# The script, end to end


# One trial at a time: each search then starts one trial worker (its import of torch and
# transformers is most of a tiny search's CPU), not two, on a 2-core machine running two tests.
ONE_WORKER = ("--set", "search.max_concurrent=1")


@pytest.mark.slow
def test_script_runs_a_2x2_grid_and_analyses_it(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--experiments", "primary", "--workdir", str(tmp_path / "work"),
           "--out", str(out), "--grid-sizes", "17000", "45000", "--grid-freqs", "0.03", "0.3",
           "--seeds", "0", "--set", "train.tokens=4480", "--set", "tasks.background.n_facts=500",
           "--set", "eval.size=100", *ONE_WORKER]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for column in ("params", "rare_freq", "seed", "train_flops", "rare_acc", "rare_loss",
                   "background_acc", "delivery", "d_model", "n_layer", "n_head", "d_ff", "run_id"):
        assert column in rows[0], column
    assert len(rows) == 4
    assert {r["status"] for r in rows} == {"ok"}
    assert {(int(r["params"]), float(r["rare_freq"])) for r in rows} == {
        (17256, 0.03), (17256, 0.3), (45400, 0.03), (45400, 0.3)}
    assert {int(r["tokens"]) for r in rows} == {4480}
    flops = {int(r["params"]): float(r["train_flops"]) for r in rows}
    assert flops[45400] > flops[17256]  # equal tokens: FLOPs grow with size
    summary = json.loads((out / "summary.json").read_text())
    assert summary["primary"]["trials"] == 4
    assert len(summary["primary"]["thresholds"]) == 2
    assert summary["runs"]["primary"]["trials"] == 4
    for name in ("acc_vs_freq.png", "threshold_vs_size.png", "frontier.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "work" / "mlflow.db").exists()
    # --analyze-only re-reads the CSV without running anything
    again = subprocess.run([sys.executable, str(SCRIPT), "--analyze-only", "--out", str(out)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Thresholds" in again.stdout


@pytest.mark.slow
def test_script_runs_arms_by_name(tmp_path):
    """Two arms (--quick, a few steps): their searches, CSVs with the varied setting, the analysis."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--experiments", "lr", "no_background", "--quick",
           "--workdir", str(tmp_path / "work"), "--out", str(out),
           "--set", "train.tokens=4480", "--set", "eval.size=100", *ONE_WORKER]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with open(out / "lr.csv", newline="") as f:
        lr_rows = list(csv.DictReader(f))
    assert sorted(float(r["lr"]) for r in lr_rows) == [0.001, 0.003, 0.01]
    with open(out / "no_background.csv", newline="") as f:
        bg_rows = list(csv.DictReader(f))
    assert {int(r["background_facts"]) for r in bg_rows} == {500, 1}
    assert {r["status"] for r in lr_rows + bg_rows} == {"ok"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"lr", "no_background"}
    assert [e["params"] for e in summary["arms"]["lr"]] == [17256]
    assert summary["runs"]["no_background"]["searches"][0]["experiment"] == "study_no_background_17000"
    for name in ("lr.png", "no_background.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # another seed of an arm joins its rows; the analysis pairs it with the same seed of the grid
    again = subprocess.run([*cmd[:3], "no_background", *cmd[5:], "--arm-seeds", "1"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    with open(out / "no_background.csv", newline="") as f:
        both = list(csv.DictReader(f))
    assert sorted(int(r["seed"]) for r in both) == sorted([0] * len(bg_rows) + [1] * len(bg_rows))
    (entry,) = json.loads((out / "summary.json").read_text())["arms"]["no_background"]
    assert entry["seeds"] == [0, 1]


@pytest.mark.slow
def test_iso_flop_tuned_trains_each_size_at_the_rate_its_sweep_found(tmp_path):
    """lr_sweep, then iso_flop_tuned (--quick, tiny): the second reads the first's CSV and
    trains every option at equal FLOPs at its size's best rate; the analysis pairs the options
    with the baseline by seed."""
    out, work = tmp_path / "out", tmp_path / "work"
    base = [sys.executable, str(SCRIPT), "--quick", "--workdir", str(work), "--out", str(out),
            "--set", "eval.size=100", "--set", "tasks.background.n_facts=200", *ONE_WORKER]
    done = subprocess.run([*base, "--experiments", "lr_sweep", "--set", "train.tokens=4480"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with open(out / "lr_sweep.csv", newline="") as f:
        sweep = list(csv.DictReader(f))
    assert sorted(float(r["lr"]) for r in sweep if r["target_params"] == "45000") == [0.003, 0.01]
    summary = json.loads((out / "summary.json").read_text())
    entry, _ = summary["arms"]["lr_sweep"]  # 45K, then 110K
    best = entry["best_lr"]
    assert entry["by_lr"][str(best)]["rare_acc"] == max(v["rare_acc"] for v in entry["by_lr"].values())

    done = subprocess.run([*base, "--experiments", "iso_flop_tuned", "--set", "train.flops=4e9"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with open(out / "iso_flop_tuned.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["status"] for r in rows} == {"ok"}
    by_size = {int(r["target_params"]): float(r["lr"]) for r in rows}
    assert by_size[45000] == best  # the small model at the rate its sweep found
    flops = [float(r["train_flops"]) for r in rows]
    assert max(flops) <= 4e9 * 1.15 and min(flops) >= 4e9 * 0.85  # equal FLOPs to a step: larger models, fewer tokens
    (budget,) = json.loads((out / "summary.json").read_text())["arms"]["iso_flop_tuned"]
    kinds = [o["kind"] for o in budget["options"]]
    assert kinds.count("baseline") == 1 and "boost" in kinds and "grow" in kinds
    assert budget["boost_vs_grow"]["verdict"]
    assert (out / "iso_flop_tuned.png").read_bytes()[:4] == b"\x89PNG"
