"""Pareto-front utilities for multi-objective trial results.

Everything here works on a plain ``(n_trials, n_objectives)`` float array plus one
direction per objective, so it can be used on optuna studies, Ray Tune results or
hand-made tables alike. The dominance rule matches optuna's ``study.best_trials``:
after turning every objective into a loss, row ``a`` dominates row ``b`` iff
``a <= b`` in every objective and ``a != b`` (so identical rows never dominate
each other and all copies of a front point are on the front).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "Direction",
    "frontier_order",
    "hypervolume_2d",
    "non_dominated",
    "to_minimise",
]

Direction = Literal["min", "max"]

# Upper bound on the number of pairwise comparisons held in memory at once by the
# n-D path: 2**22 booleans is 4 MiB per temporary, which keeps 10k x 10k inputs cheap
# without ever materialising an n x n x k tensor.
_MAX_PAIRS_PER_BLOCK = 1 << 22
# Rows per chunk in the n-D path. Each chunk costs a (chunk x chunk) self-comparison, so small
# chunks waste little work when the front is small, while still amortising Python overhead.
_CHUNK_ROWS = 256


def _as_values(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Validate ``values``/``directions`` and return a 2-D float array.

    Args:
        values: Array-like of shape ``(n, k)``. An empty 1-D input is read as ``(0, k)``.
        directions: One of ``"min"``/``"max"`` per objective.

    Returns:
        A float64 array of shape ``(n, k)`` (not necessarily a copy).
    """
    for d in directions:
        if d not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {d!r}.")
    k = len(directions)
    if k == 0:
        raise ValueError("at least one objective direction is required.")
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        # `np.asarray([])` is 1-D; treat it as "no trials" rather than an error.
        arr = arr.reshape(0, k)
    if arr.ndim != 2:
        raise ValueError(f"values must be a 2-D (n_trials, n_objectives) array, got {arr.shape}.")
    if arr.shape[1] != k:
        raise ValueError(f"values has {arr.shape[1]} objectives but {k} directions were given.")
    return arr


def to_minimise(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Turn every objective into a loss (lower is better).

    Args:
        values: Array of shape ``(n, k)``, one row per trial.
        directions: ``"min"`` or ``"max"`` for each of the ``k`` columns.

    Returns:
        A new float array of shape ``(n, k)`` with the ``"max"`` columns negated.
    """
    arr = _as_values(values, directions)
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    # Multiplication always allocates, so callers may mutate the result freely.
    return arr * sign


def _front_2d_sorted(sorted_loss: np.ndarray) -> np.ndarray:
    """Mark the first copy of every Pareto-optimal point in lexsorted 2-D losses.

    Args:
        sorted_loss: NaN-free losses of shape ``(m, 2)``, sorted by column 0 then column 1.

    Returns:
        Boolean mask ``(m,)``; True for the first row of each distinct non-dominated point.
        Later duplicates are False, which is what hypervolume needs (no double counting).
    """
    y = sorted_loss[:, 1]
    on_front = np.zeros(len(y), dtype=bool)
    if len(y) == 0:
        return on_front
    # Every earlier row has x <= current x, so an earlier row dominates (or equals) the current
    # one iff its y is <= current y. A strictly new running minimum of y is therefore exactly the
    # condition for being the first copy of a non-dominated point.
    prev_min = np.minimum.accumulate(y)[:-1]
    on_front[0] = True
    on_front[1:] = y[1:] < prev_min
    return on_front


def _unique_lexsorted(loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lexsort NaN-free losses and collapse identical rows.

    Args:
        loss: NaN-free losses of shape ``(n, k)``.

    Returns:
        ``(order, unique_rows, group_id)``: ``loss[order]`` is lexsorted by column 0, then 1,
        ...; ``unique_rows`` holds its distinct rows in that order; ``group_id[i]`` is the
        index in ``unique_rows`` of ``loss[order][i]``.
    """
    # np.lexsort uses the last key as the primary one.
    order = np.lexsort(loss.T[::-1])
    sorted_loss = loss[order]
    # Identical rows are adjacent after lexsorting. `!=` (not bytes) is used so that -0.0 and
    # 0.0 count as the same value, as they do in optuna's Python-level comparison.
    new_group = np.ones(len(sorted_loss), dtype=bool)
    new_group[1:] = np.any(sorted_loss[1:] != sorted_loss[:-1], axis=1)
    group_id = np.cumsum(new_group) - 1
    return order, sorted_loss[new_group], group_id


def _scatter_groups(
    order: np.ndarray, group_id: np.ndarray, unique_on_front: np.ndarray
) -> np.ndarray:
    """Map a per-unique-row verdict back to every original row (duplicates share it)."""
    mask = np.empty(len(order), dtype=bool)
    mask[order] = unique_on_front[group_id]
    return mask


def _non_dominated_2d(loss: np.ndarray) -> np.ndarray:
    """O(n log n) Pareto mask for NaN-free 2-D losses (duplicates all kept)."""
    order, unique_rows, group_id = _unique_lexsorted(loss)
    return _scatter_groups(order, group_id, _front_2d_sorted(unique_rows))


def _weakly_dominated_by_any(cand: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Return which rows of ``cand`` have some row of ``others`` that is ``<=`` in every column.

    Args:
        cand: NaN-free losses of shape ``(c, d)``.
        others: NaN-free losses of shape ``(m, d)``.

    Returns:
        Boolean mask ``(c,)``.
    """
    c, d = cand.shape
    m = others.shape[0]
    dominated = np.zeros(c, dtype=bool)
    if c == 0 or m == 0:
        return dominated
    # Block over `others` so each (c, block) temporary stays under the memory budget.
    block = max(1, _MAX_PAIRS_PER_BLOCK // c)
    for start in range(0, m, block):
        o = others[start : start + block]
        # Accumulating column by column on 2-D arrays is much cheaper than building a
        # (c, m, d) tensor and reducing it with np.all.
        all_le = np.ones((c, o.shape[0]), dtype=bool)
        for j in range(d):
            all_le &= o[np.newaxis, :, j] <= cand[:, j, np.newaxis]
        dominated |= all_le.any(axis=1)
    return dominated


def _front_nd_unique_sorted(unique_rows: np.ndarray) -> np.ndarray:
    """Pareto mask for distinct, lexsorted, NaN-free losses of any dimension.

    Worst case O(n^2 k) (every row on the front); typically O(n * (chunk + |front|) * k).
    """
    n = unique_rows.shape[0]
    # Rows are distinct and lexsorted, so (1) a dominator of row i always comes before i, and
    # (2) every earlier row already has column 0 <= row i's. Hence "row b dominates row a" reduces
    # to "b is earlier and b[1:] <= a[1:]", the same trick as optuna's `_is_pareto_front_nd`.
    # Each chunk is checked against the earlier rows of the chunk and against the front found so
    # far; the front suffices because dominance is transitive and its maximal elements come first.
    tail = unique_rows[:, 1:]
    on_front = np.zeros(n, dtype=bool)
    front_parts: list[np.ndarray] = []
    for start in range(0, n, _CHUNK_ROWS):
        block = tail[start : start + _CHUNK_ROWS]
        c = block.shape[0]
        all_le = np.tril(np.ones((c, c), dtype=bool), k=-1)  # only earlier rows may dominate
        for j in range(block.shape[1]):
            all_le &= block[np.newaxis, :, j] <= block[:, j, np.newaxis]
        dominated = all_le.any(axis=1)
        if front_parts:
            alive = np.flatnonzero(~dominated)
            front = np.concatenate(front_parts)
            dominated[alive] = _weakly_dominated_by_any(block[alive], front)
        keep = ~dominated
        on_front[start : start + c] = keep
        front_parts.append(block[keep])
    return on_front


def _non_dominated_nd(loss: np.ndarray) -> np.ndarray:
    """Chunked, vectorised Pareto mask for NaN-free losses of any dimension (duplicates kept)."""
    order, unique_rows, group_id = _unique_lexsorted(loss)
    return _scatter_groups(order, group_id, _front_nd_unique_sorted(unique_rows))


def non_dominated(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Boolean mask of the Pareto-optimal rows.

    Rows with any NaN (e.g. failed trials) are never on the front and never dominate.
    ``+/-inf`` are ordinary ordered values. Identical rows do not dominate each other, so all
    copies of a front point are kept, as in optuna's ``study.best_trials``.

    Args:
        values: Array of shape ``(n, k)``, one row per trial.
        directions: ``"min"`` or ``"max"`` for each of the ``k`` objectives.

    Returns:
        Boolean array of shape ``(n,)``.
    """
    loss = to_minimise(values, directions)
    n, k = loss.shape
    mask = np.zeros(n, dtype=bool)
    valid = ~np.isnan(loss).any(axis=1)
    if not valid.any():
        return mask
    valid_loss = loss[valid]
    if k == 1:
        col = valid_loss[:, 0]
        mask[valid] = col == col.min()
    elif k == 2:
        mask[valid] = _non_dominated_2d(valid_loss)
    else:
        mask[valid] = _non_dominated_nd(valid_loss)
    return mask


def hypervolume_2d(
    values: np.ndarray, directions: Sequence[Direction], reference: Sequence[float]
) -> float:
    """Area dominated by the points and bounded by a reference point (2 objectives).

    Args:
        values: Array of shape ``(n, 2)`` in original units.
        directions: Directions of the two objectives.
        reference: Reference point in original units, e.g. ``(0.0, budget)`` for
            ``(accuracy "max", flops "min")``.

    Returns:
        The hypervolume as a float (``inf`` if a contributing point is infinitely good or the
        reference is infinitely bad). Points not strictly better than the reference in both
        objectives and NaN rows contribute nothing; ``0.0`` when nothing contributes.
    """
    if len(directions) != 2:
        raise ValueError(f"hypervolume_2d needs exactly 2 objectives, got {len(directions)}.")
    ref_arr = np.asarray(reference, dtype=float)
    if ref_arr.shape != (2,):
        raise ValueError(f"reference must have 2 entries, got shape {ref_arr.shape}.")
    loss = to_minimise(values, directions)
    ref = to_minimise(ref_arr[np.newaxis, :], directions)[0]
    # NaN compares False, so this drops NaN rows (and everything if the reference has a NaN).
    inside = np.all(loss < ref, axis=1)
    if not inside.any():
        return 0.0
    pts = loss[inside]
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    # First copies of front points only: x strictly increases and y strictly decreases, so
    # every width and height below is > 0 (possibly inf) and inf - inf never occurs.
    stair = pts[_front_2d_sorted(pts)]
    widths = ref[0] - stair[:, 0]
    upper = np.concatenate([ref[1:], stair[:-1, 1]])
    heights = upper - stair[:, 1]
    return float(np.sum(widths * heights))


def hypervolume(values: np.ndarray, directions: Sequence[Direction], reference: Sequence[float]) -> float:
    """The volume dominated by the points and bounded by ``reference``, in any number of
    objectives (``moocore``'s exact algorithms; ``hypervolume_2d`` is the check in 2-D).

    Same conventions as ``hypervolume_2d``: original units, rows that are not strictly better
    than the reference in every objective (NaN rows included) contribute nothing.
    """
    import moocore

    ref_arr = np.asarray(reference, dtype=float)
    if ref_arr.shape != (len(directions),):
        raise ValueError(f"reference must have {len(directions)} entries, got shape {ref_arr.shape}.")
    loss = to_minimise(values, directions)
    ref = to_minimise(ref_arr[np.newaxis, :], directions)[0]
    inside = np.all(loss < ref, axis=1)
    if not inside.any():
        return 0.0
    return float(moocore.hypervolume(loss[inside], ref=ref))


def frontier_order(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Indices of the non-dominated rows, sorted for plotting or tables.

    Args:
        values: Array of shape ``(n, k)``, one row per trial.
        directions: ``"min"`` or ``"max"`` for each objective.

    Returns:
        Integer array of row indices, ordered by the first objective ascending in original
        units; ties are broken by the following objectives (ascending), then by row index.
    """
    arr = _as_values(values, directions)
    idx = np.flatnonzero(non_dominated(arr, directions))
    front = arr[idx]
    # np.lexsort's last key is primary: column 0, then 1, ..., then the row index.
    keys = (idx, *(front[:, j] for j in reversed(range(arr.shape[1]))))
    return idx[np.lexsort(keys)]
