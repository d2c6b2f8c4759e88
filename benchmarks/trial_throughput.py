"""optimix's training loop against a bare torch loop on the same model and batches.

Both train the same Llama model (same init) on the same batch size and sequence length:

- optimix: ``run_trial`` with one evaluation at the end; its ``train_s`` is the training
  loop's time with batch generation included and the evaluation excluded;
- bare: batches generated beforehand, then ``logits -> cross_entropy -> backward ->
  AdamW step`` and nothing else (no LR schedule, clipping or divergence checks).

Runs alternate (optimix, bare, optimix, bare, ...) so drift on a shared machine hits both;
the ratio reported is the median of the per-pair ratios of tokens/s.

    python benchmarks/trial_throughput.py [--runs 5] [--device cpu] [--set KEY=VALUE ...]

On a shared machine whose speed moves within seconds, more and shorter pairs keep both
halves of a pair on the same machine state: ``--runs 11 --set train.tokens=150000``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from optimix.core.space import load_space
from optimix.trial.mixture import batches
from optimix.trial.model import build_model
from optimix.trial.tasks import build_tasks
from optimix.trial.train import plan_trial, run_trial

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(config, plan, taskset, device: torch.device, autocast) -> float:
    """Tokens/s of the plainest loop on the same data."""
    rng = np.random.default_rng([config.seed, 1])
    data = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
            for x, y in batches(taskset, config.mixture, config.train.batch_size, plan.steps, rng)]
    model = build_model(plan.shape, config.seed).to(device)
    forward = torch.compile(model) if config.train.compile and device.type == "cuda" else model
    opt = torch.optim.AdamW(model.parameters(), lr=config.train.lr, fused=device.type == "cuda")
    model.train()
    _sync(device)
    start = time.perf_counter()
    for x, y in data:
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = forward(input_ids=x).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return plan.tokens / (time.perf_counter() - start)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "quickstart.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "trial_throughput.json"))
    args = parser.parse_args()

    overrides = [*args.overrides, "eval.points=1", f"train.threads={args.threads}",
                 f"train.device={args.device}"]
    config = load_space(args.space, overrides).base
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    taskset = build_tasks(config)
    plan = plan_trial(config, taskset)

    rows = []
    for run in range(args.runs):
        result = run_trial(config, taskset=taskset)
        assert result.status == "ok", result.error
        bare = bare_loop(config, plan, taskset, device, autocast)
        rows.append((result.tokens_per_s, bare, result.tokens_per_s / bare))
        print(f"run {run}: optimix {result.tokens_per_s:>12,.0f} tok/s   bare {bare:>12,.0f} tok/s   "
              f"ratio {rows[-1][2]:.3f}", flush=True)
    ratio = statistics.median(r[2] for r in rows)
    print(f"\n{'':<10}{'tokens/s (median)':>20}")
    print(f"{'optimix':<10}{statistics.median(r[0] for r in rows):>20,.0f}")
    print(f"{'bare':<10}{statistics.median(r[1] for r in rows):>20,.0f}")
    print(f"ratio_vs_bare_torch (median of {args.runs} paired runs): {ratio:.3f}")

    doc = {
        "ratio_vs_bare_torch": round(ratio, 4),
        "ratios": [round(r[2], 4) for r in rows],
        "optimix_tokens_per_s": [round(r[0]) for r in rows],
        "bare_tokens_per_s": [round(r[1]) for r in rows],
        "params": plan.shape.params,
        "tokens_per_run": plan.tokens,
        "batch_size": config.train.batch_size,
        "seq_len": taskset.seq_len,
        "threads": args.threads,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "machine": f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads".strip(),
        "torch": torch.__version__,
        "space": Path(args.space).name,
        "overrides": args.overrides,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
