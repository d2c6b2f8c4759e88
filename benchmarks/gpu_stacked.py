"""K small models trained together (``optimix.trial.stacked.run_stacked``) against one eager trial.

A model under 5M parameters cannot fill a GPU: one eager trial spends its step on kernel
launches and Python. This measures what stacking buys, on one GPU, in one process:

1. one eager ``run_trial`` of one small model (default: ``search_spaces/quickstart.yaml`` with
   d_model 128, 2 layers, batch 256): steady tokens/s between its two evaluation points, so
   start-up and warm-up are left out (as ``benchmarks/gpu_trial.py`` measures);
2. ``run_stacked`` of K such models (seeds 0..K-1, rare frequencies spread over the space's
   range, the same per-model batch and steps), eager and with ``torch.compile``: aggregate
   steady tokens/s of all K models, measured the same way;
3. a spot check that stacking gives the same results: 2 models trained stacked and one by one
   for a few steps; the largest differences of final training loss, held-out loss and accuracy
   (bf16 autocast on CUDA: the same within bf16 tolerance; fp32 on CPU: float rounding).

``stacked_ratio_vs_one_eager`` = the best aggregate rate / the one eager rate. Each variant is
timed under a shared budget (``--budget-s``) and its failure recorded, not raised; the JSON is
rewritten after every variant, so a run cut short still leaves what it measured. Needs only
torch, transformers, numpy, pydantic, yaml and optimix (no Ray, no MLflow).

    python benchmarks/gpu_stacked.py                      # CUDA: writes docs/benchmarks/gpu.json
    python benchmarks/gpu_stacked.py --tokens 20000       # no GPU: tiny CPU smoke run, /tmp
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from optimix.core.config import TrialConfig
from optimix.core.space import load_space
from optimix.trial.stacked import run_stacked
from optimix.trial.train import TrialResult, plan_trial, run_trial

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


def steady_rate(result: TrialResult) -> float:
    """Tokens/s of one model between its first and last evaluation (training time only)."""
    first, last = result.curve[0], result.curve[-1]
    return (last.tokens - first.tokens) / (last.train_s - first.train_s)


def trial_configs(args: argparse.Namespace, k: int, tokens: int, compiled: bool) -> list[TrialConfig]:
    """K configs of one shape: seeds 0..K-1 and rare frequencies spread log-evenly over the range."""
    low, high = args.rare_freq
    configs = []
    for i in range(k):
        freq = low * (high / low) ** (i / max(1, k - 1))
        overrides = [*args.overrides, f"seed={i}", f"mixture.rare_freq={freq:.6g}",
                     f"train.tokens={tokens}", f"train.batch_size={args.batch_size}",
                     f"train.compile={str(compiled).lower()}", f"train.device={args.device}",
                     "eval.points=2"]
        configs.append(load_space(args.space, overrides).base)
    return configs


class Budget:
    """Wall-clock budget shared by the variants: a variant that would start past it is skipped."""

    def __init__(self, seconds: float):
        self.started, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)


def run_variant(name: str, budget: Budget, measure) -> dict:
    """``measure()``'s row, or a row holding why it did not run or what it raised."""
    if budget.left() <= 0:
        print(f"{name}: skipped (time budget spent)", flush=True)
        return {"name": name, "error": "skipped: time budget spent"}
    started = time.perf_counter()
    try:
        row = {"name": name, **measure()}
    except Exception as err:  # one variant's failure must not lose the others' numbers
        traceback.print_exc()
        row = {"name": name, "error": f"{type(err).__name__}: {err}".splitlines()[0][:500]}
    row["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(row), flush=True)
    return row


def one_eager(args: argparse.Namespace) -> dict:
    [config] = trial_configs(args, 1, args.tokens, compiled=False)
    result = run_trial(config, cpus=args.cpus)
    if result.status != "ok":
        raise RuntimeError(f"trial {result.status}: {result.error}")
    rate = steady_rate(result)
    return {"k": 1, "compile": False, "aggregate_tokens_per_s": round(rate),
            "per_model_tokens_per_s": round(rate), "steps": result.steps}


def stacked(args: argparse.Namespace, k: int, compiled: bool) -> dict:
    results = run_stacked(trial_configs(args, k, args.tokens, compiled), cpus=args.cpus)
    statuses = [r.status for r in results]
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        raise RuntimeError(f"no model ended ok: {results[0].status}: {results[0].error}")
    rate = steady_rate(ok[0])  # one shared loop: every model's rate is the same
    return {"k": k, "compile": compiled, "aggregate_tokens_per_s": round(k * rate),
            "per_model_tokens_per_s": round(rate), "steps": ok[0].steps,
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))}}


def same_results_check(args: argparse.Namespace) -> dict:
    """Two models trained stacked and one by one: the largest differences of their results."""
    configs = trial_configs(args, 2, args.check_tokens, compiled=False)
    together = run_stacked(configs, cpus=args.cpus)
    alone = [run_trial(config, cpus=args.cpus) for config in configs]
    for result in [*together, *alone]:
        if result.status != "ok":
            raise RuntimeError(f"check run {result.status}: {result.error}")

    def largest(pick) -> float:
        """Largest |stacked - alone| over both models of ``pick(result) -> list of values``."""
        return max(abs(a - b) for s, o in zip(together, alone, strict=True)
                   for a, b in zip(pick(s), pick(o), strict=True))

    return {
        "dtype": "bf16 autocast" if CUDA else "fp32",
        "steps": together[0].steps,
        "max_abs_diff_final_train_loss": largest(lambda r: [r.curve[-1].train_loss]),
        "max_abs_diff_final_eval_loss": largest(lambda r: [r.loss[t] for t in sorted(r.loss)]),
        "max_abs_diff_final_accuracy": largest(lambda r: [r.accuracy[t] for t in sorted(r.accuracy)]),
        "final_train_loss_stacked": [a.curve[-1].train_loss for a in together],
        "final_train_loss_one_by_one": [b.curve[-1].train_loss for b in alone],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "quickstart.yaml"))
    parser.add_argument("--set", dest="overrides", action="append",
                        default=["model.d_model=128", "model.n_layer=2"],
                        help="KEY=VALUE override of the space (repeatable; default d_model 128, 2 layers)")
    parser.add_argument("--tokens", type=int, default=2_000_000 if CUDA else 20_000,
                        help="training tokens per model")
    parser.add_argument("--batch-size", type=int, default=256 if CUDA else 32, help="per model")
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32] if CUDA else [2, 4],
                        help="numbers of models trained together")
    parser.add_argument("--compile-k", type=int, nargs="*", default=None,
                        help="K values also run with torch.compile (default on CUDA: the largest K)")
    parser.add_argument("--check-tokens", type=int, default=100_000 if CUDA else 6_000,
                        help="training tokens per model of the same-results check (0: skip)")
    parser.add_argument("--rare-freq", type=float, nargs=2, default=[0.003, 0.1], metavar=("LOW", "HIGH"))
    parser.add_argument("--cpus", type=int, default=min(8, os.cpu_count() or 1) if CUDA else 1,
                        help="torch threads (on a shared CPU, more than 1 thread can stall on contention)")
    parser.add_argument("--budget-s", type=float, default=140.0,
                        help="no variant starts after this many seconds")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "gpu.json") if CUDA
                        else "/tmp/optimix_gpu_stacked_cpu.json")
    args = parser.parse_args()
    args.device = "cuda" if CUDA else "cpu"
    compile_k = args.compile_k if args.compile_k is not None else ([max(args.k)] if CUDA else [])

    budget = Budget(args.budget_s)
    device_name = torch.cuda.get_device_name() if CUDA else "cpu"
    [config] = trial_configs(args, 1, args.tokens, compiled=False)
    plan = plan_trial(config)
    doc: dict = {
        "device": device_name,
        "torch": torch.__version__,
        "k": args.k,
        "compile_k": compile_k,
        "shape": asdict(plan.shape),
        "params_per_model": plan.shape.params,
        "batch_size": args.batch_size,
        "seq_len": plan.shape.n_ctx,
        "tokens_per_model": plan.tokens,
        "steps": plan.steps,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": " ".join(["python", *sys.argv]),
        "variants": [],
    }
    print(f"{device_name}: {plan.shape.params:,} params per model, batch {args.batch_size} x "
          f"{plan.shape.n_ctx} tokens, {plan.steps} steps", flush=True)
    out = Path(args.out)

    def save() -> None:
        rows = [r for r in doc["variants"] if "error" not in r]
        base = next((r["aggregate_tokens_per_s"] for r in rows if r["name"] == "one eager"), None)
        rates = [r["aggregate_tokens_per_s"] for r in rows if r["name"] != "one eager"]
        if base is not None:
            for row in rows:
                row["ratio_vs_one_eager"] = round(row["aggregate_tokens_per_s"] / base, 2)
        doc["one_eager_tokens_per_s"] = base
        doc["stacked_ratio_vs_one_eager"] = round(max(rates) / base, 2) if base and rates else None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")

    plan_of_runs = [("one eager", lambda: one_eager(args))]
    plan_of_runs += [(f"stacked K={k} eager", lambda k=k: stacked(args, k, False)) for k in args.k]
    checks = [("same results check", lambda: same_results_check(args))] if args.check_tokens else []
    compiled = [(f"stacked K={k} compiled", lambda k=k: stacked(args, k, True)) for k in compile_k]
    for name, measure in plan_of_runs:
        doc["variants"].append(run_variant(name, budget, measure))
        save()
    for name, measure in checks:  # before compiling: the slowest, riskiest variant goes last
        doc["check"] = run_variant(name, budget, measure)
        save()
    for name, measure in compiled:
        doc["variants"].append(run_variant(name, budget, measure))
        save()

    print(f"\n{'variant':<24}{'models':>7}{'tokens/s (all)':>16}{'per model':>12}{'vs one eager':>14}")
    for row in doc["variants"]:
        if "error" in row:
            print(f"{row['name']:<24}  {row['error']}")
        else:
            print(f"{row['name']:<24}{row['k']:>7}{row['aggregate_tokens_per_s']:>16,}"
                  f"{row['per_model_tokens_per_s']:>12,}{row.get('ratio_vs_one_eager', math.nan):>13.2f}x")
    check = doc.get("check", {})
    if "error" in check:
        print(f"same results check: {check['error']}")
    elif check:
        print(f"same results check ({check['dtype']}, {check['steps']} steps, 2 models): max |diff| "
              f"final train loss {check['max_abs_diff_final_train_loss']:.2e}, "
              f"held-out loss {check['max_abs_diff_final_eval_loss']:.2e}, "
              f"accuracy {check['max_abs_diff_final_accuracy']:.3f}")
    print(f"stacked_ratio_vs_one_eager: {doc['stacked_ratio_vs_one_eager']}\nwrote {out}", flush=True)


if __name__ == "__main__":
    main()
