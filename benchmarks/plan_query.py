"""How long a planning query takes over many recorded trials.

A table of ``--trials`` synthetic trials (``plan.simulate_trials``: sizes, frequencies and
tokens log-uniform, accuracy from a known threshold law with a token term) stands in for a
large search. Each query is the whole of what ``optimix plan`` computes after reading the
trials: the observed answer, the fit with its bootstrap refits (200), the predicted config,
the frequency-vs-size comparison and the costs. Reading trials from MLflow is not timed.

    python benchmarks/plan_query.py [--trials 10000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from optimix.core.hardware import PROFILES
from optimix.plan import plan

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "plan_query.json"))
    args = parser.parse_args()

    table = plan.simulate_trials(args.trials, np.random.default_rng(args.seed), c=9.5 * 1e6 ** 0.4,
                                 u=0.4, tokens=(2e5, 5e6))
    budget = float(np.median(table.train_flops))
    queries = {
        "budget": lambda: plan.answer(table, metric="acc/facts", budget_flops=budget,
                                      hardware=PROFILES["h100"], seed=args.seed),
        "target": lambda: plan.answer(table, metric="acc/facts", target_acc=0.9,
                                      hardware=PROFILES["h100"], seed=args.seed),
        "validate": lambda: plan.cross_validate(table, seed=args.seed),
    }
    queries["budget"]()  # warm-up: first-call allocations
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits all alike
        for name, query in queries.items():
            started = time.perf_counter()
            query()
            times.setdefault(name, []).append(time.perf_counter() - started)

    doc = plan.answer(table, metric="acc/facts", budget_flops=budget, hardware=PROFILES["h100"],
                      seed=args.seed)
    print(f"{args.trials:,} trials, {plan.N_BOOT} draws, {args.repeats} repeats\n")
    print(f"{'query':<20}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, values in times.items():
        print(f"{name:<20}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    median = statistics.median(times["budget"])
    law = doc["fit"]["power_law"]
    print(f"\nbudget query median {median:.3f} s (goal < {GOAL_S:g} s); fitted s = "
          f"{law['s']:.3f} (true 0.56), u = {law['u']:.3f} (true 0.4)")

    out = {
        "trials": args.trials,
        "draws": plan.N_BOOT,
        "repeats": args.repeats,
        "budget_flops": budget,
        "seconds": {name: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                    for name, v in times.items()},
        "query_median_s": median,
        "goal_s": GOAL_S,
        "fit": {"s": law["s"], "u": law["u"], "true_s": 0.56, "true_u": 0.4},
        "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".strip(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "date": datetime.now(timezone.utc).date().isoformat(),
    }
    Path(args.out).write_text(json.dumps(plan.jsonable(out), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
