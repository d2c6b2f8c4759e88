"""How much of a search's trial-slot time is spent training.

Runs ``optimix search SPACE`` as a user would (a subprocess, in-process Ray, MLflow in
SQLite, all in a fresh temporary folder), times it, then reads the search's ledger:

    training_share      = sum of train_s / (slots x (last trial's end - first trial's start))
    training_share_wall = sum of train_s / (slots x the command's whole wall time)

``train_s`` is a trial's training loop (batch generation included, evaluation excluded).
The first counts the slots' time while the search runs trials: worker imports, data and
model building, evaluation, reporting, refilling a slot and the idle tail are in it; the
second adds what comes before the first trial and after the last (the CLI's imports,
MLflow's and Ray's start-up, the final frontier plots, Ray's shutdown). A slot-seconds
breakdown says where the rest goes.

    python benchmarks/search_overhead.py [--space search_spaces/quickstart.yaml] [--set K=V ...] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(args, workdir: str | None) -> dict:
    """One search, timed; its shares and the slot-seconds breakdown."""
    with tempfile.TemporaryDirectory(prefix="optimix-bench-") as scratch:
        tmp = workdir or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "optimix.cli", "search", str(Path(args.space).resolve())]
        for override in args.overrides:
            cmd += ["--set", override]
        launched_at = time.time()
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"search failed ({done.returncode}):\n{done.stderr[-3000:]}")
        if args.log:
            Path(args.log).write_text(done.stdout)
        ledger = next(Path(tmp, "optimix_runs").glob("*/*/results.jsonl"))
        entries = [json.loads(x) for x in ledger.read_text().splitlines() if '"trial_id"' in x]
        space_doc = json.loads(subprocess.run(
            [sys.executable, "-c", "import json,sys; from optimix.core.space import load_space; "
             "s=load_space(sys.argv[1], sys.argv[2:]).base.search; print(json.dumps(s.model_dump()))",
             args.space, *args.overrides], capture_output=True, text=True, check=True).stdout)

    slots = space_doc["max_concurrent"]
    train_s = sum(e["result"]["train_s"] for e in entries)
    trial_s = sum(e["result"]["wall_s"] for e in entries)
    # Where the rest of the slot time goes (trial timestamps are wall-clock seconds).
    first = min(e["result"]["started_at"] for e in entries)
    last = max(e["result"]["ended_at"] for e in entries)
    in_trials = sum(e["result"]["ended_at"] - e["result"]["started_at"] for e in entries)
    breakdown = {
        "training": train_s,
        "in_trial_other": in_trials - train_s,  # imports, data, model build, evaluation, report
        "startup": slots * (first - launched_at),  # CLI, MLflow, Ray, the first worker
        "between_trials": slots * (last - first) - in_trials,  # slot refills, idle tail
        "shutdown": slots * (launched_at + wall - last),  # frontier plots, final logging, Ray stop
    }
    return {
        "share": train_s / (slots * (last - first)),  # over the slots' time, first trial to last
        "share_wall": train_s / (wall * slots),
        "in_trial_share": trial_s / (wall * slots),
        "wall": wall, "trials": len(entries), "slots": slots, "train_s": train_s, "trial_s": trial_s,
        "breakdown": breakdown,
        "per_trial_train_s_median": sorted(e["result"]["train_s"] for e in entries)[len(entries) // 2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "quickstart.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--key", default="training_share", help="JSON key for the share")
    parser.add_argument("--runs", type=int, default=1,
                        help="Searches run one after another; the run with the median share is reported.")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "search_overhead.json"))
    parser.add_argument("--log", default=None, help="Also save the search's console output here.")
    parser.add_argument("--workdir", default=None,
                        help="Run the search in this (new) folder and keep it; default: a temporary one.")
    args = parser.parse_args()

    runs = []
    for i in range(args.runs):
        runs.append(measure(args, f"{args.workdir}/{i}" if args.workdir and args.runs > 1 else args.workdir))
        print(f"run {i + 1}/{args.runs}: training share {runs[-1]['share']:.3f} "
              f"(wall {runs[-1]['share_wall']:.3f}), {runs[-1]['wall']:.1f} s", flush=True)
    m = sorted(runs, key=lambda r: r["share"])[(len(runs) - 1) // 2]  # the median run (lower middle)
    wall, slots, train_s, breakdown = m["wall"], m["slots"], m["train_s"], m["breakdown"]
    rows = [("search wall time (s)", f"{wall:.1f}"), ("trials", m["trials"]),
            ("concurrent slots", slots), ("sum of train_s (s)", f"{train_s:.1f}"),
            ("sum of run_trial wall (s)", f"{m['trial_s']:.1f}"),
            ("training share (slots)", f"{m['share']:.3f}"), ("training share (wall)", f"{m['share_wall']:.3f}"),
            ("in-trial share (wall)", f"{m['in_trial_share']:.3f}")]
    if len(runs) > 1:
        rows.append(("shares of all runs", ", ".join(f"{r['share']:.3f}" for r in runs)))
    for name, value in rows:
        print(f"{name:<28}{value:>12}")
    print(f"\n{'slot-seconds':<28}{'s':>12}{'share':>8}")
    for name, value in breakdown.items():
        print(f"{name:<28}{value:>12.1f}{value / (wall * slots):>8.3f}")

    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.update({
        args.key: round(m["share"], 4),
        f"{args.key}_wall": round(m["share_wall"], 4),
        f"{args.key}_detail": {
            "space": Path(args.space).name, "overrides": args.overrides, "wall_s": round(wall, 1),
            "trials": m["trials"], "slots": slots, "train_s": round(train_s, 1),
            "in_trial_share": round(m["in_trial_share"], 4),
            "slot_seconds": {k: round(v, 1) for k, v in breakdown.items()},
            "per_trial_train_s_median": m["per_trial_train_s_median"],
            "runs": len(runs),
            "shares_of_all_runs": [round(r["share"], 4) for r in runs],
            "wall_shares_of_all_runs": [round(r["share_wall"], 4) for r in runs],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        },
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
