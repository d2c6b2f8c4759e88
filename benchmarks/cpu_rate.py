"""Achieved training FLOP/s of one CPU core by model size: the figures of the ``cpu`` profile.

Each run is one trial of ``search_spaces/study_reproduction.yaml`` (batches of 128 x 7 tokens,
AdamW, one torch thread, ``train.threads: 1`` as the search's trials get) with ``model.params``
set per size and a short ``train.tokens``. Its rate is the trial's own ``train_flops / train_s``
(``optimix.trial.monitor``: batch generation included, evaluation excluded). Two ways, interleaved in
every repeat, the order of sizes reversed every other repeat so drift on the shared host hits
all sizes alike:

- ``alone``: one trial at a time (the other core idle, apart from what else the host runs);
- ``paired``: two trials of the same size at once, one process per core, as ``optimix search``
  runs the study (``search.max_concurrent: 2``, ``search.cpus_per_trial: 1``).

Also a one-thread fp32 matmul rate (1024 x 1024 x 1024), the core's practical peak, as the GPU
anchors (``docs/anchors``) measure a card's; the ``cpu`` profile's MFU table is against it.

The ``cpu`` profile (``optimix/core/hardware.py``) takes the ``alone`` medians: a device-hour is an
hour of one core given to the trial. ``paired`` says what each of two trials at once gets on
this VM, whose two vCPUs need not give two cores' throughput.

Then the check (nothing here is fitted on it): for each size of the reproduction
(``docs/reproduction/results.csv``, 18 trials per size, run two at a time on this 2-core VM),
the profile's hours for that size's ``train_flops`` against the median measured ``train_s``.

    python benchmarks/cpu_rate.py [--repeats 3] [--tokens 179200] [--sizes 15000,30000,...]
    python benchmarks/cpu_rate.py --check-only    (the check again, from the JSON and optimix)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "study_reproduction.yaml"
OUT = ROOT / "docs" / "benchmarks" / "cpu_rate.json"
RESULTS = ROOT / "docs" / "reproduction" / "results.csv"
SIZES = (15_000, 30_000, 70_000, 160_000, 350_000, 1_000_000)  # shapes d_model 24 ... 160
MODES = ("alone", "paired")


def one_trial(target_params: int, tokens: int) -> dict:
    """One trial in this worker process (one torch thread, set by the trial from train.threads)."""
    from optimix.core.space import load_space
    from optimix.trial.train import run_trial

    config = load_space(SPACE, [f"model.params={target_params}", f"train.tokens={tokens}",
                                "train.threads=1", "eval.size=100"]).base
    result = run_trial(config)
    assert result.status == "ok", result.error
    return {"params": result.params, "train_flops": result.train_flops, "train_s": result.train_s,
            "tokens_per_s": result.tokens_per_s, "rate": result.train_flops / result.train_s}


def matmul_rate(n: int = 1024, reps: int = 10) -> float:
    """fp32 FLOP/s of one thread multiplying n x n matrices: the median of ``reps`` products."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def measure(sizes: list[int], tokens: int, repeats: int) -> tuple[dict, list[float]]:
    """Runs by size and mode, and the matmul rates (one per repeat), interleaved."""
    runs: dict = {size: {mode: [] for mode in MODES} for size in sizes}
    peaks = []
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no torch state shared
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        list(pool.map(one_trial, [sizes[0]] * 2, [tokens // 4] * 2))  # import torch, warm both
        for repeat in range(repeats):
            peaks.append(pool.submit(matmul_rate).result())
            order = sizes if repeat % 2 == 0 else sizes[::-1]
            for size in order:
                runs[size]["alone"].append(pool.submit(one_trial, size, tokens).result())
                pair = [pool.submit(one_trial, size, tokens) for _ in range(2)]
                runs[size]["paired"].extend(f.result() for f in pair)
                print(f"repeat {repeat}  {size:>9,}  alone {runs[size]['alone'][-1]['rate'] / 1e9:6.2f}  "
                      f"paired {runs[size]['paired'][-2]['rate'] / 1e9:6.2f} "
                      f"{runs[size]['paired'][-1]['rate'] / 1e9:6.2f} GFLOP/s   "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
            print(f"repeat {repeat}  matmul (1 thread) {peaks[-1] / 1e9:.1f} GFLOP/s", flush=True)
    return runs, peaks


def table(runs: dict) -> list[dict]:
    """Median rate by size and mode."""
    rows = []
    for size, by_mode in runs.items():
        first = by_mode["alone"][0]
        row = {"target_params": size, "params": first["params"],
               "flops_per_token": first["train_flops"] / (first["tokens_per_s"] * first["train_s"])}
        for mode in MODES:
            rates = [r["rate"] for r in by_mode[mode]]
            row[f"{mode}_flops_per_s"] = statistics.median(rates)
            row[f"{mode}_runs"] = len(rates)
            row[f"{mode}_rates"] = [round(r) for r in rates]
            row[f"{mode}_train_s"] = [round(r["train_s"], 3) for r in by_mode[mode]]
        rows.append(row)
    return rows


def profile_from(doc: dict, mode: str):
    """A cpu profile built the way ``optimix.core.hardware``'s is, from this run's medians."""
    from optimix.core.hardware import Hardware

    peak = doc["matmul_flops_per_s"]
    points = tuple((row["params"], min(1.0, row[f"{mode}_flops_per_s"] / peak)) for row in doc["rates"])
    return Hardware(name=f"cpu ({mode}, this run)", peak_flops_per_s=peak, mfu=points[0][1],
                    usd_per_hour=0.04, mfu_by_params=points)


def reproduction() -> list[dict]:
    """Per size of the reproduction: train_flops and the measured train_s."""
    by_size: dict = {}
    with open(RESULTS, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["status"] == "ok" and row["train_s"]:
                by_size.setdefault(int(row["params"]), []).append(row)
    return [{"params": p, "trials": len(rows), "train_flops": float(rows[0]["train_flops"]),
             "median_train_s": statistics.median(float(r["train_s"]) for r in rows),
             "min_train_s": min(float(r["train_s"]) for r in rows),
             "max_train_s": max(float(r["train_s"]) for r in rows)}
            for p, rows in sorted(by_size.items())]


def check(doc: dict) -> list[dict]:
    """Predicted over measured seconds, per reproduction size, for each profile compared."""
    from optimix.core import hardware as hw

    sizes = reproduction()
    profiles = {
        "cpu": hw.PROFILES["cpu"],
        "before: one rate": hw.Hardware(name="cpu before", peak_flops_per_s=33.7e9, mfu=1.0, usd_per_hour=0.04),
        **{f"this run, {mode}": profile_from(doc, mode) for mode in MODES},
    }
    rows = []
    for size in sizes:
        row = dict(size)
        for label, profile in profiles.items():
            predicted_s = profile.hours(size["train_flops"], size["params"]) * 3600
            row[label] = {"predicted_s": round(predicted_s, 2),
                          "ratio": round(predicted_s / size["median_train_s"], 3)}
        rows.append(row)
    return rows


def show(doc: dict) -> None:
    print(f"\nachieved training FLOP/s, one thread (median of {doc['repeats']} repeats; "
          f"paired: 2 runs a repeat)")
    print(f"{'params':>10} {'FLOPs/token':>12} {'alone GFLOP/s':>14} {'alone/peak':>11} {'paired GFLOP/s':>15}")
    for row in doc["rates"]:
        print(f"{row['params']:>10,} {row['flops_per_token']:>12,.0f} {row['alone_flops_per_s'] / 1e9:>14.2f} "
              f"{row['alone_flops_per_s'] / doc['matmul_flops_per_s']:>11.3f} {row['paired_flops_per_s'] / 1e9:>15.2f}")
    print(f"matmul 1024^3, one thread: {doc['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s (median of "
          f"{len(doc['matmul_runs'])})")
    labels = [k for k in doc["check"][0] if isinstance(doc["check"][0][k], dict)]
    print("\ncheck: predicted / measured train_s for docs/reproduction/results.csv (held out; its 18 "
          "trials a size ran two at a time, one core each, under load; goal: within 2x)\n"
          "cpu: optimix's profile; before: its one rate, 33.7 GFLOP/s; this run: profiles built from "
          "the alone or the paired medians above")
    print(f"{'params':>8} {'measured s (min-max)':>21} " + " ".join(f"{label:>19}" for label in labels))
    for row in doc["check"]:
        cells = " ".join(f"{row[label]['predicted_s']:>9.1f} s {row[label]['ratio']:>6.2f}x" for label in labels)
        spread = f"{row['median_train_s']:.1f} s ({row['min_train_s']:.0f}-{row['max_train_s']:.0f})"
        print(f"{row['params']:>8,} {spread:>21} {cells}")
    worst = max(abs(math.log(row["cpu"]["ratio"])) for row in doc["check"])
    print(f"cpu profile: worst ratio {math.exp(worst):.2f}x off -> "
          f"{'within' if worst <= math.log(2) else 'NOT within'} 2x at every size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=179_200, help="per run (200 steps of 128 x 7)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--check-only", action="store_true", help="redo the check from --out")
    args = parser.parse_args()

    if args.check_only:
        doc = json.loads(Path(args.out).read_text())
    else:
        import torch

        load_before = os.getloadavg()
        started = time.time()
        runs, peaks = measure([int(s) for s in args.sizes.split(",")], args.tokens, args.repeats)
        doc = {
            "command": "python benchmarks/cpu_rate.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {_cpu_name()}, {os.cpu_count()} cores (1 thread a core); "
                       f"one torch thread a trial",
            "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.time() - started, 1),
            "space": SPACE.name, "tokens_per_run": args.tokens, "repeats": args.repeats,
            "batch": "128 sequences x 7 tokens",
            "matmul_flops_per_s": statistics.median(peaks), "matmul_runs": [round(p) for p in peaks],
            "rates": table(runs),
        }
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")  # kept if the check fails
    doc["check"] = check(doc)
    doc["check_note"] = (
        "predicted / measured train_s per size of docs/reproduction/results.csv (held out: not used to "
        "build any profile). Its 18 trials a size ran two at a time (search.max_concurrent 2, one core "
        "and one torch thread each) on this 2-core VM, under load. cpu: optimix.core.hardware's profile (the "
        "alone medians of the committed run); before: the one rate it had, 33.7 GFLOP/s at every size; "
        "this run: profiles built from this run's alone or paired medians.")
    show(doc)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
