"""Tests for optimix.core.pareto (dominance mask, 2-D hypervolume, frontier ordering)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimix.core.pareto import (
    Direction,
    _non_dominated_2d,
    _non_dominated_nd,
    frontier_order,
    hypervolume_2d,
    non_dominated,
    to_minimise,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

INF = math.inf
NAN = math.nan


def _brute_force_mask(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Reference implementation straight from the definition (pure Python loops)."""
    rows = [
        [-v if d == "max" else v for v, d in zip(row, directions, strict=True)]
        for row in values.tolist()
    ]
    valid = [not any(math.isnan(v) for v in r) for r in rows]
    mask = []
    for i, a in enumerate(rows):
        if not valid[i]:
            mask.append(False)
            continue
        dominated = any(
            valid[j] and b != a and all(bv <= av for bv, av in zip(b, a, strict=True))
            for j, b in enumerate(rows)
        )
        mask.append(not dominated)
    return np.array(mask, dtype=bool)


# ---------------------------------------------------------------------------
# Hand-made cases.
#
# Case "mixed_2d": accuracy (max) vs flops (min).
#
#   row | acc  | flops | dominated by | on front
#   ----+------+-------+--------------+---------
#    0  | 0.90 |  10   |      -       |   yes
#    1  | 0.80 |  10   |     0, 5     |   no    (same flops, worse acc)
#    2  | 0.95 |  20   |      -       |   yes
#    3  | 0.95 |  30   |      2       |   no    (same acc, more flops)
#    4  | 0.70 |   5   |      -       |   yes
#    5  | 0.90 |  10   |      -       |   yes   (duplicate of 0: duplicates never dominate)
#    6  | nan  |   1   |      -       |   no    (failed trial; also dominates nothing)
#    7  | 0.60 |   6   |      4       |   no    (worse acc and more flops than 4)
#
# Case "inf_2d": both objectives minimised; infinities are ordinary ordered values.
#
#   row |  f0  |  f1  | dominated by | on front
#   ----+------+------+--------------+---------
#    0  | -inf | +inf |      1       |   no    (same f0 as 1, worse f1)
#    1  | -inf |  5   |      -       |   yes   (best f0)
#    2  |  3   | -inf |      -       |   yes   (best f1)
#    3  |  3   |  0   |      2       |   no
#    4  | +inf | -inf |      2       |   no    (same f1 as 2, worse f0)
# ---------------------------------------------------------------------------

HAND_CASES: list[tuple[str, list[list[float]], list[Direction], list[bool]]] = [
    (
        "mixed_2d",
        [
            [0.90, 10],
            [0.80, 10],
            [0.95, 20],
            [0.95, 30],
            [0.70, 5],
            [0.90, 10],
            [NAN, 1],
            [0.60, 6],
        ],
        ["max", "min"],
        [True, False, True, False, True, True, False, False],
    ),
    (
        "inf_2d",
        [[-INF, INF], [-INF, 5], [3, -INF], [3, 0], [INF, -INF]],
        ["min", "min"],
        [False, True, True, False, False],
    ),
    (
        # Same as "inf_2d" expressed with both objectives maximised (every sign flipped).
        "inf_2d_max",
        [[INF, -INF], [INF, -5], [-3, INF], [-3, 0], [-INF, INF]],
        ["max", "max"],
        [False, True, True, False, False],
    ),
    (
        # +inf in a minimised objective can still be on the front if best elsewhere.
        "plus_inf_min_on_front",
        [[INF, 0.0], [1.0, 1.0]],
        ["min", "min"],
        [True, True],
    ),
    (
        # -inf in a maximised objective can still be on the front if best elsewhere.
        "minus_inf_max_on_front",
        [[-INF, 10.0], [1.0, 1.0]],
        ["max", "max"],
        [True, True],
    ),
    ("empty_2d", [], ["min", "max"], []),
    ("single_row", [[1.0, 2.0]], ["min", "max"], [True]),
    ("single_nan_row", [[1.0, NAN]], ["min", "max"], [False]),
    ("all_nan", [[NAN, NAN], [NAN, 1.0], [2.0, NAN]], ["min", "min"], [False, False, False]),
    # A NaN row with otherwise perfect values must not knock anyone off the front.
    ("nan_never_dominates", [[-INF, NAN], [5.0, 5.0]], ["min", "min"], [False, True]),
    ("all_duplicates", [[1.0, 1.0]] * 4, ["min", "max"], [True] * 4),
    # Ties in one objective: only the better one in the other objective survives.
    ("tie_first", [[1.0, 2.0], [1.0, 3.0], [1.0, 2.0]], ["min", "min"], [True, False, True]),
    ("tie_second", [[2.0, 1.0], [3.0, 1.0]], ["min", "min"], [True, False]),
    ("tie_second_max", [[2.0, 1.0], [3.0, 1.0]], ["max", "min"], [False, True]),
    # -0.0 and 0.0 are equal, so they are duplicates rather than one dominating the other.
    ("signed_zero", [[0.0, 1.0], [-0.0, 1.0]], ["min", "min"], [True, True]),
    (
        "one_objective_min",
        [[3.0], [1.0], [1.0], [NAN], [2.0]],
        ["min"],
        [False, True, True, False, False],
    ),
    ("one_objective_max", [[3.0], [1.0], [3.0], [NAN]], ["max"], [True, False, True, False]),
    ("one_objective_inf", [[INF], [-INF], [-INF]], ["min"], [False, True, True]),
    ("one_objective_empty", [], ["max"], []),
    (
        # Each row is best in one objective, except row 3, which row 0 dominates.
        "three_objectives",
        [[1, 5, 5], [5, 1, 5], [5, 5, 1], [2, 5, 5], [1, 5, 5], [NAN, 0, 0]],
        ["min", "min", "min"],
        [True, True, True, False, True, False],
    ),
    (
        "three_objectives_mixed_inf",
        [[1, 5, -INF], [0, 5, INF], [1, 5, 0], [-1, 6, -INF]],
        ["min", "min", "max"],
        [False, True, False, True],
    ),
    ("three_objectives_empty", [], ["min", "max", "min"], []),
]


@pytest.mark.parametrize(
    ("values", "directions", "expected"),
    [pytest.param(v, d, e, id=name) for name, v, d, e in HAND_CASES],
)
def test_non_dominated_hand_cases(
    values: list[list[float]], directions: list[Direction], expected: list[bool]
) -> None:
    arr = np.array(values, dtype=float).reshape(len(values), len(directions))
    mask = non_dominated(arr, directions)
    assert mask.dtype == bool
    assert mask.shape == (len(values),)
    np.testing.assert_array_equal(mask, np.array(expected, dtype=bool))
    np.testing.assert_array_equal(mask, _brute_force_mask(arr, directions))


def test_empty_1d_input_is_accepted() -> None:
    assert non_dominated(np.array([]), ["min", "max"]).shape == (0,)
    assert frontier_order(np.array([]), ["min", "max"]).shape == (0,)


@pytest.mark.parametrize(
    ("values", "directions"),
    [
        pytest.param(np.zeros((3, 2)), ["min"], id="too_few_directions"),
        pytest.param(np.zeros((3, 2)), ["min", "max", "min"], id="too_many_directions"),
        pytest.param(np.zeros(3), ["min"], id="1d_nonempty"),
        pytest.param(np.zeros((3, 2)), ["min", "maximize"], id="bad_direction"),
        pytest.param(np.zeros((3, 0)), [], id="no_objectives"),
    ],
)
def test_invalid_input_raises(values: np.ndarray, directions: list[str]) -> None:
    with pytest.raises(ValueError):
        non_dominated(values, directions)  # type: ignore[arg-type]


def test_does_not_modify_input() -> None:
    values = np.array([[1.0, 2.0], [3.0, -1.0]])
    before = values.copy()
    non_dominated(values, ["max", "max"])
    to_minimise(values, ["max", "max"])[0, 0] = 99.0
    hypervolume_2d(values, ["max", "max"], (-10.0, -10.0))
    np.testing.assert_array_equal(values, before)


# ---------------------------------------------------------------------------
# Normalisation.
# ---------------------------------------------------------------------------


def test_to_minimise_negates_only_max_columns() -> None:
    values = np.array([[1.0, 2.0, 3.0], [-4.0, INF, -INF]])
    out = to_minimise(values, ["min", "max", "max"])
    np.testing.assert_array_equal(out, [[1.0, -2.0, -3.0], [-4.0, -INF, INF]])
    assert out is not values
    assert out.dtype == np.float64


def test_to_minimise_keeps_nan() -> None:
    out = to_minimise(np.array([[NAN, 1.0]]), ["max", "max"])
    assert math.isnan(out[0, 0]) and out[0, 1] == -1.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_direction_flip_is_equivalent_to_negation(seed: int, k: int) -> None:
    # Maximising x must give the same front as minimising -x, for every column subset.
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(60, k)), 1)
    for flips in range(2**k):
        directions: list[Direction] = ["max" if flips >> j & 1 else "min" for j in range(k)]
        negated = to_minimise(values, directions)
        np.testing.assert_array_equal(
            non_dominated(values, directions), non_dominated(negated, ["min"] * k)
        )


def test_max_direction_is_not_min() -> None:
    values = np.array([[1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_array_equal(non_dominated(values, ["min", "min"]), [True, False])
    np.testing.assert_array_equal(non_dominated(values, ["max", "max"]), [False, True])
    np.testing.assert_array_equal(non_dominated(values, ["max", "min"]), [True, True])


# ---------------------------------------------------------------------------
# Agreement with optuna's study.best_trials.
# ---------------------------------------------------------------------------

_OPTUNA_DIR = {"min": "minimize", "max": "maximize"}


def _optuna_front(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Mask of the rows optuna reports in ``best_trials``; NaN rows are added as FAIL."""
    study = optuna.create_study(directions=[_OPTUNA_DIR[d] for d in directions])
    for row in values.tolist():
        if any(math.isnan(v) for v in row):
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL, params={}, distributions={}
            )
        else:
            trial = optuna.trial.create_trial(values=row, params={}, distributions={})
        study.add_trial(trial)
    best = {t.number for t in study.best_trials}
    failed = {t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL}
    assert not best & failed, "optuna put a failed trial on the front"
    return np.array([i in best for i in range(len(values))], dtype=bool)


def _random_values(
    rng: np.random.Generator, n: int, k: int, decimals: int | None, nan_frac: float, inf: bool
) -> np.ndarray:
    values = rng.normal(size=(n, k))
    if decimals is not None:
        # Rounding produces many ties and exact duplicates.
        values = np.round(values, decimals)
    if inf:
        values[rng.random((n, k)) < 0.05] = INF
        values[rng.random((n, k)) < 0.05] = -INF
    values[rng.random(n) < nan_frac, rng.integers(k)] = NAN
    return values


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "directions",
    [
        ["min"],
        ["max"],
        ["min", "min"],
        ["max", "min"],
        ["min", "max", "min"],
        ["max", "max", "max"],
        ["min", "max", "min", "max"],
    ],
    ids=lambda d: "-".join(d),
)
@pytest.mark.parametrize(
    ("decimals", "inf"),
    [(None, False), (1, False), (0, False), (1, True)],
    ids=["continuous", "rounded", "heavy_ties", "rounded_inf"],
)
def test_matches_optuna_best_trials(
    seed: int, directions: list[Direction], decimals: int | None, inf: bool
) -> None:
    rng = np.random.default_rng(seed)
    k = len(directions)
    values = _random_values(rng, n=80, k=k, decimals=decimals, nan_frac=0.15, inf=inf)
    # Force a few exact duplicates of existing rows, including likely front rows.
    dup_src = rng.integers(len(values), size=10)
    values = np.concatenate([values, values[dup_src], values[[np.nanargmin(values[:, 0])]]])
    mask = non_dominated(values, directions)
    np.testing.assert_array_equal(mask, _optuna_front(values, directions))
    assert not mask[np.isnan(values).any(axis=1)].any()


def test_matches_optuna_with_only_failed_trials() -> None:
    values = np.full((5, 2), NAN)
    mask = non_dominated(values, ["min", "max"])
    assert not mask.any()
    np.testing.assert_array_equal(mask, _optuna_front(values, ["min", "max"]))


# ---------------------------------------------------------------------------
# Internal paths agree with each other and with the definition.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_2d_fast_path_matches_nd_path(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    loss = _random_values(rng, n=300, k=2, decimals=decimals, nan_frac=0.0, inf=True)
    np.testing.assert_array_equal(_non_dominated_2d(loss), _non_dominated_nd(loss))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    values = _random_values(rng, n=120, k=k, decimals=1, nan_frac=0.1, inf=True)
    directions: list[Direction] = [("min", "max")[j % 2] for j in range(k)]
    np.testing.assert_array_equal(
        non_dominated(values, directions), _brute_force_mask(values, directions)
    )


# Small integers plus the special values make ties, duplicates, infs and NaNs very likely.
_CELL = st.sampled_from([-2.0, -1.0, 0.0, -0.0, 1.0, 2.0, INF, -INF, NAN])


@st.composite
def _tables(draw: st.DrawFn) -> tuple[np.ndarray, list[Direction]]:
    k = draw(st.integers(1, 4))
    n = draw(st.integers(0, 25))
    directions = draw(st.lists(st.sampled_from(["min", "max"]), min_size=k, max_size=k))
    cells = draw(st.lists(_CELL, min_size=n * k, max_size=n * k))
    return np.array(cells, dtype=float).reshape(n, k), directions


@settings(max_examples=300, deadline=None)
@given(_tables())
def test_property_matches_brute_force(table: tuple[np.ndarray, list[Direction]]) -> None:
    values, directions = table
    mask = non_dominated(values, directions)
    np.testing.assert_array_equal(mask, _brute_force_mask(values, directions))
    order = frontier_order(values, directions)
    np.testing.assert_array_equal(np.sort(order), np.flatnonzero(mask))


def test_nd_path_spans_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny memory budget -> many chunks and blocks; the answer must not change.
    import optimix.core.pareto as pareto

    rng = np.random.default_rng(0)
    loss = np.round(rng.normal(size=(400, 3)), 1)
    expected = _non_dominated_nd(loss)
    monkeypatch.setattr(pareto, "_MAX_PAIRS_PER_BLOCK", 64)
    monkeypatch.setattr(pareto, "_CHUNK_ROWS", 7)
    np.testing.assert_array_equal(pareto._non_dominated_nd(loss), expected)
    np.testing.assert_array_equal(expected, _brute_force_mask(loss, ["min"] * 3))


@pytest.mark.parametrize(
    ("k", "all_on_front"),
    [(2, False), (2, True), (3, False), (3, True), (4, False)],
)
def test_10k_rows_is_fast(k: int, all_on_front: bool) -> None:
    rng = np.random.default_rng(0)
    values = rng.random((10_000, k))
    if all_on_front:
        # Points on the simplex sum(x) = 1 are mutually non-dominated: the worst case.
        values /= values.sum(axis=1, keepdims=True)
    directions: list[Direction] = ["min"] * k
    start = time.perf_counter()
    mask = non_dominated(values, directions)
    elapsed = time.perf_counter() - start
    if all_on_front:
        assert mask.all()
    else:
        assert 0 < mask.sum() < len(mask)
    assert elapsed < 1.0, f"non_dominated took {elapsed:.2f}s on 10k rows, k={k}"


# ---------------------------------------------------------------------------
# Hypervolume.
# ---------------------------------------------------------------------------


def _grid_hypervolume(loss: np.ndarray, ref: np.ndarray) -> int:
    """Count unit cells [x, x+1) x [y, y+1) below ``ref`` dominated by an integer loss point."""
    pts = loss[np.all(loss < ref, axis=1)]
    lo = int(min(pts.min(initial=ref[0]), ref[0]))
    lo = min(lo, int(pts.min(initial=ref[1])))
    count = 0
    for cx in range(lo, int(ref[0])):
        for cy in range(lo, int(ref[1])):
            if np.any((pts[:, 0] <= cx) & (pts[:, 1] <= cy)):
                count += 1
    return count


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "directions", [["min", "min"], ["max", "min"], ["min", "max"], ["max", "max"]]
)
def test_hypervolume_matches_grid_count(seed: int, directions: list[Direction]) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(-6, 7, size=(25, 2)).astype(float)
    values[rng.random(25) < 0.1, 0] = NAN
    # Reference in original units: somewhere inside the data range so some points fall outside.
    reference = rng.integers(-2, 3, size=2).astype(float)
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    loss = values * sign
    expected = _grid_hypervolume(loss[~np.isnan(loss).any(axis=1)], reference * sign)
    assert hypervolume_2d(values, directions, reference) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("directions", [["min", "min"], ["max", "min"], ["max", "max"]])
def test_hypervolume_matches_optuna(seed: int, directions: list[Direction]) -> None:
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(seed)
    values = rng.normal(size=(200, 2))
    values = np.concatenate([values, np.round(values[:50], 1)])  # ties and duplicates
    reference = rng.normal(scale=0.5, size=2)
    loss = to_minimise(values, directions)
    ref_loss = to_minimise(reference[np.newaxis, :], directions)[0]
    inside = np.all(loss < ref_loss, axis=1)
    expected = compute_hypervolume(loss[inside], ref_loss) if inside.any() else 0.0
    assert hypervolume_2d(values, directions, reference) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_accuracy_vs_flops_example() -> None:
    # acc (max) vs flops (min), reference = (0 accuracy, budget 100).
    values = np.array([[0.5, 50.0], [0.8, 80.0], [0.4, 60.0], [0.9, 120.0], [0.0, 10.0]])
    # Staircase: (0.5, 50) covers 0.5 * 50 = 25; (0.8, 80) adds (0.8 - 0.5) * 20 = 6.
    # (0.4, 60) is dominated, (0.9, 120) is over budget, (0.0, 10) is not better than acc 0.
    assert hypervolume_2d(values, ["max", "min"], (0.0, 100.0)) == pytest.approx(31.0)


@pytest.mark.parametrize(
    ("values", "directions", "reference", "expected"),
    [
        pytest.param([], ["min", "min"], (1.0, 1.0), 0.0, id="empty"),
        pytest.param([[NAN, 0.0], [0.0, NAN]], ["min", "min"], (1.0, 1.0), 0.0, id="all_nan"),
        pytest.param([[1.0, 0.0], [0.0, 1.0]], ["min", "min"], (1.0, 1.0), 0.0, id="on_boundary"),
        pytest.param([[2.0, 2.0]], ["min", "min"], (1.0, 1.0), 0.0, id="worse_than_ref"),
        pytest.param([[0.0, 0.0]], ["min", "min"], (NAN, 1.0), 0.0, id="nan_reference"),
        pytest.param([[0.0, 0.0]], ["min", "min"], (2.0, 3.0), 6.0, id="single_min"),
        pytest.param([[0.0, 0.0]], ["max", "max"], (-2.0, -3.0), 6.0, id="single_max"),
        pytest.param([[0.0, 0.0]] * 3, ["min", "min"], (2.0, 3.0), 6.0, id="duplicates_once"),
        pytest.param(
            [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], ["min", "min"], (2.0, 2.0), 4.0, id="tie"
        ),
        pytest.param([[-INF, 0.0]], ["min", "min"], (1.0, 1.0), INF, id="minus_inf_point"),
        pytest.param([[INF, 0.0]], ["max", "min"], (1.0, 1.0), INF, id="plus_inf_max_point"),
        pytest.param([[INF, 0.0]], ["min", "min"], (1.0, 1.0), 0.0, id="plus_inf_min_ignored"),
        pytest.param([[0.0, 0.0]], ["min", "min"], (INF, 1.0), INF, id="inf_reference"),
        pytest.param([[INF, 0.0]], ["min", "min"], (INF, 1.0), 0.0, id="inf_not_below_inf"),
        pytest.param(
            [[-INF, 0.5], [0.0, -INF]], ["min", "min"], (1.0, 1.0), INF, id="two_inf_corners"
        ),
    ],
)
def test_hypervolume_edge_cases(
    values: list[list[float]],
    directions: list[Direction],
    reference: tuple[float, float],
    expected: float,
) -> None:
    arr = np.array(values, dtype=float).reshape(len(values), 2)
    hv = hypervolume_2d(arr, directions, reference)
    assert isinstance(hv, float)
    assert hv == pytest.approx(expected)


def test_hypervolume_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        hypervolume_2d(np.zeros((2, 3)), ["min", "min", "min"], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        hypervolume_2d(np.zeros((2, 2)), ["min", "min"], (1.0,))


# ---------------------------------------------------------------------------
# Frontier ordering.
# ---------------------------------------------------------------------------


def test_frontier_order_sorted_by_first_objective_in_original_units() -> None:
    # acc (max) vs flops (min); front rows are 0, 2, 4, 5 (see the "mixed_2d" table).
    values = np.array(HAND_CASES[0][1], dtype=float)
    order = frontier_order(values, ["max", "min"])
    # Ascending accuracy: 0.70 (4), 0.90 (0 then its duplicate 5), 0.95 (2).
    np.testing.assert_array_equal(order, [4, 0, 5, 2])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_frontier_order_is_sorted_front(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    values = _random_values(rng, n=100, k=k, decimals=1, nan_frac=0.1, inf=True)
    directions: list[Direction] = [("max", "min")[j % 2] for j in range(k)]
    order = frontier_order(values, directions)
    assert order.dtype.kind == "i"
    np.testing.assert_array_equal(np.sort(order), np.flatnonzero(non_dominated(values, directions)))
    first = values[order, 0]
    # Compare neighbours directly: np.diff would turn inf - inf into NaN.
    assert np.all(first[:-1] <= first[1:])


# --------------------------------------------------------------------------- n-dimensional hypervolume


def _union_volume(loss: np.ndarray, ref: np.ndarray) -> float:
    """Exact volume of the union of boxes [point, ref] by inclusion-exclusion (small sets)."""
    from itertools import combinations

    total = 0.0
    for k in range(1, len(loss) + 1):
        for subset in combinations(range(len(loss)), k):
            corner = loss[list(subset)].max(axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


@pytest.mark.parametrize("seed", range(8))
def test_nd_hypervolume_equals_the_2d_one(seed: int) -> None:
    from optimix.core.pareto import hypervolume

    rng = np.random.default_rng(seed)
    values = np.column_stack([rng.random(30), rng.random(30) * 10])
    for directions, ref in ((["max", "min"], (0.0, 11.0)), (["min", "min"], (1.2, 9.0))):
        assert hypervolume(values, directions, ref) == pytest.approx(hypervolume_2d(values, directions, ref))


@pytest.mark.parametrize("seed", range(8))
def test_3d_hypervolume_equals_inclusion_exclusion(seed: int) -> None:
    from optimix.core.pareto import hypervolume, to_minimise

    rng = np.random.default_rng(seed)
    values = rng.random((7, 3))
    directions = ["max", "max", "min"]  # two accuracies up, FLOPs down
    ref = np.array([0.0, 0.0, 1.0])
    loss, ref_loss = to_minimise(values, directions), to_minimise(ref[None, :], directions)[0]
    assert hypervolume(values, directions, ref) == pytest.approx(_union_volume(loss, ref_loss))


def test_nd_hypervolume_ignores_rows_at_or_past_the_reference_and_nan() -> None:
    from optimix.core.pareto import hypervolume

    values = np.array([[0.5, 0.5, 0.5], [np.nan, 0.9, 0.1], [1.0, 0.2, 0.3]])
    directions = ["min", "min", "min"]
    assert hypervolume(values, directions, (1.0, 1.0, 1.0)) == pytest.approx(0.125)
    assert hypervolume(values[:0], directions, (1.0, 1.0, 1.0)) == 0.0
    with pytest.raises(ValueError):
        hypervolume(values, directions, (1.0, 1.0))
