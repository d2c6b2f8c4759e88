"""The regime a grow-or-boost answer rests on: how long each recorded size trained and
whether its learning rate was searched. Pure: numbers in, a typed answer out.

A search that trains every size on a few tokens per parameter, or at one learning rate,
compares an undertrained or mistuned large model with a small one that is neither: the small
model wins, and "raise the frequency" follows from that rather than from anything about
frequency against size (docs/reproduction.md's iso-FLOP arm gave its larger models 0.04-0.25
tokens per parameter at one learning rate). Every answer that compares sizes says
which regime it stands in (``optimix plan``, the map on a search's parent run, ``optimix
frontier``), and where the larger sizes sit in the unfair one it says so and names the
search that settles it (``SETTLE_WITH``).

The rule (``Regime.favours_smaller``), over each size above the smallest recorded:

- *undertrained*: even its longest-trained trial saw fewer than ``FAR_BELOW`` tokens per
  parameter (a quarter of Chinchilla's compute-optimal ``COMPUTE_OPTIMAL``, arXiv:2203.15556);
- *one learning rate*: all its finished trials trained at the same learning rate.

Parameters are the model's total count (embeddings included, as optimix records ``params``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from optimix.core.metrics import OK

COMPUTE_OPTIMAL = 20.0
"""Tokens per parameter at which training is compute-optimal (Chinchilla, arXiv:2203.15556)."""
FAR_BELOW = 5.0
"""Tokens per parameter under which a size counts as far below ``COMPUTE_OPTIMAL`` (a quarter of it)."""
SETTLE_WITH = "search_spaces/grow_or_boost.yaml"
"""The search that settles the comparison: the learning rate searched at each of three sizes,
FLOPs that give the largest at least ``COMPUTE_OPTIMAL`` tokens per parameter."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SizeRegime:
    """One recorded model size: how its finished trials trained."""

    params: int
    trials: int
    tokens_per_param: tuple[float, float]
    """(least, most) training tokens per parameter over the size's trials."""
    lrs: tuple[float, ...]
    """The distinct learning rates its trials trained at, ascending (empty: none recorded)."""

    @property
    def lr_searched(self) -> bool | None:
        """More than one learning rate among its trials; None where none was recorded."""
        return len(self.lrs) > 1 if self.lrs else None

    @property
    def undertrained(self) -> bool:
        return self.tokens_per_param[1] < FAR_BELOW

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "trials": self.trials,
                "tokens_per_param": list(self.tokens_per_param), "lrs": list(self.lrs),
                "lr_searched": self.lr_searched, "undertrained": self.undertrained}


@dataclass(frozen=True, kw_only=True, slots=True)
class Regime:
    """The recorded sizes' regime, smallest first, and what it means for the comparison."""

    sizes: tuple[SizeRegime, ...]
    why: tuple[str, ...]
    """Why the comparison favours the smaller model (empty: it does not)."""

    @property
    def favours_smaller(self) -> bool:
        return bool(self.why)

    def to_dict(self) -> dict[str, Any]:
        """The ``regime`` entry of an answer's ``--json`` document; ``lines`` and ``verdict``
        are what the terminal and the map print."""
        return {"sizes": [s.to_dict() for s in self.sizes],
                "compute_optimal_tokens_per_param": COMPUTE_OPTIMAL,
                "far_below_tokens_per_param": FAR_BELOW,
                "favours_smaller": self.favours_smaller, "why": list(self.why),
                "settle_with": SETTLE_WITH if self.favours_smaller else None,
                "lines": [size_line(s) for s in self.sizes], "verdict": verdict_line(self)}


def regime(trials: Iterable[tuple[Any, Any, Any]]) -> Regime:
    """The regime of finished trials given as ``(params, tokens, lr)``, numbers or their text
    as records hold them (``lr`` None where not recorded); trials without a positive size or
    token count are left out."""
    by_size: dict[int, list[tuple[float, float | None]]] = {}
    for params, tokens, lr in ((_number(a), _number(b), _number(c)) for a, b, c in trials):
        if params > 0 and tokens > 0:
            by_size.setdefault(round(params), []).append((tokens / params, lr))
    sizes = tuple(_size(n, rows) for n, rows in sorted(by_size.items()))
    return Regime(sizes=sizes, why=_why(sizes[1:]))


def of_entries(entries: Iterable[Any]) -> Regime:
    """The regime of a search's finished trials (``LedgerEntry``: params and tokens from its
    result, the learning rate from its config)."""
    return regime((e.result.get("params"), e.result.get("tokens"), e.params.get("train.lr"))
                  for e in entries if e.status == OK)


def _number(value: Any) -> float:
    """A recorded value as a float (NaN where it is missing or not a number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _size(params: int, rows: list[tuple[float, float | None]]) -> SizeRegime:
    ratios = [r for r, _ in rows]
    lrs = sorted({float(f"{lr:.6g}") for _, lr in rows if lr is not None and lr > 0})
    return SizeRegime(params=params, trials=len(rows), tokens_per_param=(min(ratios), max(ratios)),
                      lrs=tuple(lrs))


def _why(larger: tuple[SizeRegime, ...]) -> tuple[str, ...]:
    """What makes a comparison over these sizes (all but the smallest) favour the smallest."""
    short = [s for s in larger if s.undertrained]
    fixed = [s for s in larger if s.lr_searched is False]
    why = []
    if short:
        why.append(f"the larger sizes trained far below {COMPUTE_OPTIMAL:g} tokens per parameter ("
                   + ", ".join(f"{s.params:,}: {ratio(s.tokens_per_param[1])}" for s in short) + ")")
    if fixed:
        why.append("the larger sizes trained at a single learning rate ("
                   + ", ".join(f"{s.params:,}: {s.lrs[0]:g}" for s in fixed) + ")")
    return tuple(why)


def size_line(size: SizeRegime) -> str:
    """One size's regime in words: ``24,448 params: 0.61 tokens/param, lr 0.003 only (3 trials)``."""
    lo, hi = (ratio(x) for x in size.tokens_per_param)
    per = hi if lo == hi else f"{lo}-{hi}"
    if not size.lrs:
        lr = "lr not recorded"
    elif len(size.lrs) == 1:
        lr = f"lr {size.lrs[0]:g} only"
    else:
        lr = f"lr searched ({len(size.lrs)} values, {size.lrs[0]:.2g}-{size.lrs[-1]:.2g})"
    return f"{size.params:,} params: {per} tokens/param, {lr} ({size.trials} trial{'s' * (size.trials != 1)})"


def ratio(tokens_per_param: float) -> str:
    """Tokens per parameter as read: two significant digits, whole numbers from 10 up."""
    return f"{tokens_per_param:,.0f}" if tokens_per_param >= 10 else f"{tokens_per_param:.2g}"


def verdict_line(reg: Regime) -> str | None:
    """What the regime means for a grow-or-boost answer, in words; None where it is fair."""
    if not reg.favours_smaller:
        return None
    return (f"the comparison favours the smaller model: {'; '.join(reg.why)}; the search that settles "
            f"it: {SETTLE_WITH} (the learning rate searched at each size, at least "
            f"{COMPUTE_OPTIMAL:g} tokens per parameter at the larger ones)")
