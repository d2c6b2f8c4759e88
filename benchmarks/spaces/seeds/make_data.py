"""Writes the local dataset files of the seed-noise spaces (``data/*.jsonl``), seeded.

    python benchmarks/spaces/seeds/make_data.py

reverse8.jsonl: 2,000 distinct strings of 8 letters from ``a``-``j`` and each one reversed
(``{"prompt": "gbdaeijc", "answer": "cjieadbg"}``): a rule, scored on held-out prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def strings(rng: np.random.Generator, n: int, length: int, letters: str) -> list[str]:
    """``n`` distinct random strings of ``length`` letters, in the order drawn."""
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault("".join(rng.choice(list(letters), size=length)), None)
    return list(seen)


def main() -> None:
    rng = np.random.default_rng(27)
    rows = [{"prompt": s, "answer": s[::-1]} for s in strings(rng, 2000, 8, "abcdefghij")]
    out = HERE / "data" / "reverse8.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{out}: {len(rows)} rows")


if __name__ == "__main__":
    main()
