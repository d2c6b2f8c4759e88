"""Predicted against achieved: ``optimix plan --verify`` over several queries of one recorded search.

Each query (``--budget B``: the best accuracy for B training FLOPs; ``--target A``: the
cheapest way to accuracy A) is answered as ``optimix plan`` answers it (``records.load_search``,
``plan.search_table``, ``plan.answer``), and its recommended config is trained by
``verify.verify`` as a new trial, at a seed no recorded trial used. The table gives, per query,
the recommendation (params, rare_freq, tokens, FLOPs), the predicted accuracy, the 90% interval
it is checked against (``trial_interval``: one trained trial, seed noise included, where the
answer has one; else ``interval``), the achieved accuracy and whether it fell inside. ``--out``
keeps every figure, with the whole verify record of each query, as JSON.

    python benchmarks/plan_verify.py --tracking-uri sqlite:///mlflow.db --experiment quickstart \\
        --budget 7.2e10 3e11 --target 0.3 0.8 [--params 2e5] --out plan_verify.json

Each query trains one trial on this machine (a quickstart trial: one to five minutes on 2 CPU
cores); a query the trials cannot answer is a row with its reason, and nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optimix.core import hardware as hw
from optimix.core.fit import PlanError
from optimix.plan import plan, verify
from optimix.records.mlflow_client import TrackingError, redact_uri, resolve_uri
from optimix.records.records import load_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the latest one)")
    parser.add_argument("--run-id", default=None, help="a search's parent run (default: the latest search)")
    parser.add_argument("--budget", type=float, nargs="+", action="extend", default=[],
                        help="budget queries: training FLOPs")
    parser.add_argument("--target", type=float, nargs="+", action="extend", default=[],
                        help="target queries: accuracies")
    parser.add_argument("--task", default=None, help="task to plan for (default: the search's rare task)")
    parser.add_argument("--params", type=float, default=None,
                        help="answer every query for a model of this size, as optimix plan --params")
    parser.add_argument("--hardware", default=None, help="cost profile, as optimix plan --hardware")
    parser.add_argument("--seed", type=int, default=0, help="seed of the planning fit, as optimix plan --seed")
    parser.add_argument("--trial-seed", type=int, default=None,
                        help="seed of the verify trials (default: one no recorded trial used)")
    parser.add_argument("--out", default="plan_verify.json", help="where the JSON goes")
    args = parser.parse_args()
    if not args.budget and not args.target:
        parser.error("give at least one --budget B or --target A")

    started = time.time()
    try:
        record = load_search(args.tracking_uri, args.experiment, args.run_id)
        head, table = plan.search_table(record, args.task)
        profile = hw.resolve(args.hardware)
    except (TrackingError, PlanError, ValueError) as err:  # HardwareError is a ValueError
        raise SystemExit(f"error: {err}") from None
    queries = [{"budget_flops": b} for b in args.budget] + [{"target_acc": a} for a in args.target]
    print(header(head), flush=True)
    rows: list[dict[str, Any]] = []
    trained: dict[str, int] = {}  # a recommendation -> the query that trained it
    for query in queries:
        rows.append(run_query(head, table, record.trials, query, profile, args, rows, trained))
        print(line(rows[-1], head["metric"]), flush=True)
    checked = [r for r in rows if r["inside"] is not None and r["same_trial_as"] is None]
    inside = sum(r["inside"] for r in checked)
    print(f"\n{inside} of {len(checked)} trained recommendations inside their 90% interval"
          + (f"; {len(rows) - len(checked)} of {len(rows)} queries trained nothing new or nothing"
             if len(checked) < len(rows) else ""))
    doc = {
        "tracking_uri": redact_uri(resolve_uri(args.tracking_uri)), "experiment": record.experiment,
        "search_run_id": record.run_id, "metric": head["metric"], "params": args.params,
        "trials": {"recorded": len(table), "ok": len(table.usable())},
        "queries": rows, "verified": len(checked), "inside": inside,
        "wall_s": time.time() - started,
        "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".strip(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "code": code_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    Path(args.out).write_text(json.dumps(plan.jsonable(doc), indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


def run_query(head: dict[str, Any], table, trials, query: dict[str, float], profile,
              args: argparse.Namespace, rows: list[dict[str, Any]], trained: dict[str, int]) -> dict[str, Any]:
    """One query answered and its recommendation trained: a row of the table and the JSON.

    A recommendation an earlier query trained (``trained``: its config -> that query's index in
    ``rows``) is not trained again: the trial is seeded, so it would repeat the same accuracy."""
    metric = head["metric"]
    row: dict[str, Any] = {"query": query, "predicted": None, "observed": None, "verify": None,
                           "checked_interval": None, "checked_against": None, "inside": None,
                           "same_trial_as": None, "error": None}
    try:
        size = {} if args.params is None else {"params": args.params}
        doc = {**head, **plan.answer(table, metric=metric, hardware=profile, seed=args.seed, **query, **size)}
    except PlanError as err:
        row["error"] = str(err)
        return row
    pred, obs = doc.get("predicted"), doc.get("observed")
    row["observed"] = obs and {"run_id": obs["run_id"], metric: obs[metric], "train_flops": obs["train_flops"],
                               "config": obs["config"]}
    if not pred:
        row["error"] = doc.get("predicted_error") or "no predicted config"
        return row
    row["predicted"] = {"config": pred["config"], metric: pred[metric], "interval": pred.get("interval"),
                        "trial_interval": pred.get("trial_interval"),
                        "extrapolated": pred.get("extrapolated"), "outside": pred.get("outside")}
    key = json.dumps(plan.jsonable(pred["config"]), sort_keys=True)
    try:
        if key in trained:  # the same config from the same fit: the same prediction too
            row["same_trial_as"] = trained[key]
            ver = rows[trained[key]]["verify"]
        else:
            ver = verify.verify(doc, table, trials, seed=args.trial_seed)
            trained[key] = len(rows)
    except PlanError as err:
        row["error"] = str(err)
        return row
    # The interval to judge by: one trained trial's where the answer has it, else the mean's.
    row["checked_interval"] = verify.finite_interval(pred.get("trial_interval") or pred.get("interval"))
    row["checked_against"] = ver["checked_against"]
    row["verify"] = ver
    row["inside"] = ver["within_interval"]
    if ver["status"] != "ok":
        row["error"] = f"the trial ended {ver['status']}: {ver['error']}"
    return row


def code_version() -> str | None:
    """The commit of the optimix that ran, with ``+changes`` when its planning code differed from it."""
    root = Path(plan.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "optimix"], cwd=root,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+changes" if changed else "")) or None


COLUMNS = (("query", 16), ("params", 10), ("rare_freq", 10), ("tokens", 10), ("FLOPs", 9),
           ("predicted", 10), ("90% interval", 15), ("achieved", 9), ("inside?", 8))


def header(head: dict[str, Any]) -> str:
    title = f"experiment {head['experiment']}, search {head['search_run_id']}: planning {head['metric']}\n"
    return title + "".join(f"{name:>{width}}" if i else f"{name:<{width}}"
                           for i, (name, width) in enumerate(COLUMNS))


def line(row: dict[str, Any], metric: str) -> str:
    """A query's row: what was recommended, predicted and achieved."""
    query = row["query"]
    what = (f"budget {query['budget_flops']:.3g}" if "budget_flops" in query
            else f"target {query['target_acc']:g}")
    pred, ver = row["predicted"], row["verify"]
    if pred is None or ver is None:
        return f"{what:<16}  {row['error']}"
    config = pred["config"]
    interval = row["checked_interval"]
    cells = [f"{config['params']:,}", f"{config['rare_freq']:.4g}", f"{config['tokens']:,}",
             f"{config['train_flops']:.3g}", f"{pred[metric]:.3f}",
             "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]",
             "-" if ver["achieved"] is None else f"{ver['achieved']:.3f}",
             {True: "yes", False: "no", None: "-"}[row["inside"]]]
    text = f"{what:<16}" + "".join(f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS[1:], strict=True))
    same = row["same_trial_as"]
    notes = [f"trained {ver['params']:,} params" if config["params"] != ver["params"] else "",
             f"the trial of query {same + 1}" if same is not None else "",
             "extrapolated" if pred.get("extrapolated") else "", row["error"] or ""]
    notes = [n for n in notes if n]
    return text + (f"  ({'; '.join(notes)})" if notes else "")


if __name__ == "__main__":
    main()
