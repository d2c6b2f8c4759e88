"""The training mixture: which task each training sequence comes from.

The rare task's share is exact in expectation. Each sequence position ``i`` carries a rare
*density* ``d(i)`` (``f`` everywhere for ``even``; ``f / duty`` inside a burst and 0 between
bursts for ``bursts``); with ``C(i)`` the cumulative density and one uniform offset ``u``,
position ``i`` is rare when ``floor(C(i) + u)`` steps up. Any window then holds the sum of its
densities, rounded up or down at random: the long-run frequency is ``f`` for both deliveries,
and only *when* the rare task is seen differs (the study's matched-frequency test). Several
rare tasks add their densities, and each rare position goes to the one furthest behind its
own share. The other tasks share the remaining sequences by their weights, drawn at random.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from optimix.core.config import MixtureConfig, RareSpec
from optimix.trial.tasks import PAD, TaskSet, shift_targets

CHUNK_STEPS = 64  # batches generated at a time: numpy work amortised, memory bounded


def rare_density(index: np.ndarray, freq: float, mixture: MixtureConfig | RareSpec,
                 batch_size: int) -> np.ndarray:
    """Cumulative rare density ``C(i)`` at sequence positions ``index`` (inclusive), for one
    rare task with share ``freq`` and ``mixture``'s delivery."""
    index = index.astype(np.float64)
    if mixture.delivery == "even":
        return freq * (index + 1)
    period = mixture.burst_period * batch_size
    window = mixture.burst_duty * period
    full, offset = np.divmod(index, period)
    return (freq / mixture.burst_duty) * (full * window + np.minimum(offset + 1, window))


def assign(
    start: int,
    count: int,
    mixture: MixtureConfig,
    batch_size: int,
    rare: int | list[int],
    weights: np.ndarray,
    offset: float,
    rng: np.random.Generator,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Task indices for sequences ``start .. start+count``.

    Args:
        rare: the rare tasks' indices, in the order of ``mixture.rare_specs()`` (one int for one).
        weights: sampling weights of all tasks (the rare tasks' entries are ignored).
        offset: the run's uniform offset ``u`` (fixed for a run, so chunks join up exactly).
        counts: with several rare tasks, how many sequences each has had before ``start``;
            updated in place (``batches`` carries it from chunk to chunk).

    The rare positions follow the rare tasks' summed density. With several, each rare
    position goes to the task furthest behind its own cumulative density, so every task's
    count stays within about one sequence of its exact share, bursts included.
    """
    specs = list(mixture.rare_specs().values())
    rare = [rare] if isinstance(rare, int | np.integer) else list(rare)
    index = np.arange(start - 1, start + count)
    per_task = np.stack([rare_density(index, s.freq, s, batch_size) for s in specs])
    if start == 0:
        per_task[:, 0] = 0.0
    is_rare = np.diff(np.floor(per_task.sum(axis=0) + offset)) > 0
    out = np.empty(count, dtype=np.int64)
    positions = np.flatnonzero(is_rare)
    if len(specs) == 1:
        out[positions] = rare[0]
    else:
        counts = np.round(per_task[:, 0]) if counts is None else counts
        for p in positions:
            k = int(np.argmax(per_task[:, p + 1] - counts))
            counts[k] += 1
            out[p] = rare[k]
    others = weights.astype(np.float64).copy()
    others[rare] = 0.0
    n_other = count - len(positions)
    if n_other:
        out[~is_rare] = rng.choice(len(weights), size=n_other, p=others / others.sum())
    return out


def batches(
    taskset: TaskSet, mixture: MixtureConfig, batch_size: int, steps: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` training batches of ``(ids, targets)``, each ``(batch_size, seq_len)`` int64.

    ``targets[:, t]`` is the answer token at ``t + 1``, or ``IGNORE`` (see ``shift_targets``).
    """
    names = list(taskset.tasks)
    rare = [names.index(name) for name in mixture.rare_specs()]
    weights = np.array([taskset.weights[n] for n in names])
    offset = rng.random()
    counts = np.zeros(len(rare))
    width = taskset.seq_len
    for first in range(0, steps, CHUNK_STEPS):
        n_steps = min(CHUNK_STEPS, steps - first)
        n = n_steps * batch_size
        which = assign(first * batch_size, n, mixture, batch_size, rare, weights, offset, rng, counts)
        ids = np.full((n, width), PAD, dtype=np.int64)
        mask = np.zeros((n, width), dtype=bool)
        for k, name in enumerate(names):
            rows = np.flatnonzero(which == k)
            if len(rows):
                task_ids, task_mask = taskset.tasks[name].sample(rng, len(rows))
                ids[rows, : task_ids.shape[1]] = task_ids
                mask[rows, : task_ids.shape[1]] = task_mask
        targets = shift_targets(ids, mask)
        for s in range(n_steps):
            rows = slice(s * batch_size, (s + 1) * batch_size)
            yield ids[rows], targets[rows]

