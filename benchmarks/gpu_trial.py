"""One ~34M-parameter trial on a GPU: steady tokens/s and MFU, compiled and eager.

Runs ``run_trial`` (no Ray) on ``search_spaces/gpu.yaml`` twice: with bf16 autocast and
``torch.compile``, then eager. The steady rate is taken between the two evaluation points
(so compilation and warm-up are left out). MFU divides achieved training FLOPs/s by a bf16
matmul rate measured on the same GPU (8192^3 products), under two FLOP counts:

- optimix's count (``optimix.core.flops``: matmuls incl. the output projection, attention
  scores at full n_ctx, no embedding lookup);
- the anchors' count (6 N per token with N = all parameters, embeddings included, plus
  12 L d T attention), for comparison with ``docs/anchors``.

    python benchmarks/gpu_trial.py [--tokens 50000000] [--out docs/benchmarks/gpu_trial.json]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from optimix.core.space import load_space
from optimix.trial.tasks import build_tasks
from optimix.trial.train import plan_trial, run_trial

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def steady_rate(result) -> float:
    first, last = result.curve[0], result.curve[-1]
    return (last.tokens - first.tokens) / (last.train_s - first.train_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "gpu.yaml"))
    parser.add_argument("--tokens", type=int, default=50_000_000)
    parser.add_argument("--eager-tokens", type=int, default=20_000_000, help="0: skip the eager run")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "gpu_trial.json"))
    args = parser.parse_args()

    peak = matmul_peak()
    print(f"{torch.cuda.get_device_name()}: bf16 matmul {peak / 1e12:.0f} TFLOP/s", flush=True)
    rows = []
    runs = [(True, args.tokens)] + ([(False, args.eager_tokens)] if args.eager_tokens else [])
    for compiled, tokens in runs:
        config = load_space(args.space, [*args.overrides, f"train.tokens={tokens}",
                                         f"train.compile={str(compiled).lower()}",
                                         "train.device=cuda", "eval.points=2"]).base
        taskset = build_tasks(config)
        plan = plan_trial(config, taskset)
        result = run_trial(config, taskset=taskset, cpus=8)
        assert result.status == "ok", result.error
        rate = steady_rate(result)
        s = plan.shape
        anchor_flops_per_token = 6 * s.params + 12 * s.n_layer * s.d_model * s.n_ctx
        row = {
            "compile": compiled,
            "overrides": args.overrides,
            "params": result.params,
            "shape": result.shape,
            "batch_size": config.train.batch_size,
            "seq_len": taskset.seq_len,
            "tokens": result.tokens,
            "wall_s": round(result.wall_s, 1),
            "steady_tokens_per_s": round(rate),
            "mfu": round(rate * s.train_flops_per_token / peak, 4),
            "mfu_anchor_count": round(rate * anchor_flops_per_token / peak, 4),
            "accuracy": result.accuracy,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'compile':<9}{'params':>12}{'tokens/s':>14}{'MFU':>8}{'MFU (anchor count)':>20}")
    for r in rows:
        print(f"{str(r['compile']):<9}{r['params']:>12,}{r['steady_tokens_per_s']:>14,}"
              f"{r['mfu']:>8.1%}{r['mfu_anchor_count']:>20.1%}")
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "bf16_matmul_flops_per_s": peak, "runs": rows,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
