"""Exact kill points for the reliability benchmark (``benchmarks/faults.py``) and the tests.

``OPTIMIX_KILL_AT=POINT[:N]`` makes the search driver kill itself with SIGKILL (no clean-up,
as a power cut or the OOM killer would) the N-th time (default 1) it reaches POINT:

- ``before_ledger``: a trial has finished, its ledger line is not yet written;
- ``torn_ledger``: half of the trial's ledger line is written;
- ``before_tell``: the ledger line is written, Optuna has not been told;
- ``mid_mlflow``: the trial's MLflow run is created with its params, its metrics not yet logged;
- ``before_logged``: the MLflow run is complete, the ledger's ``logged`` line not yet written;
- ``mid_tags``: one run's frontier tags are rewritten, the others not yet.

``OPTIMIX_HOLD_AT=POINT:N[,POINT:N...]`` holds the driver instead, at each named visit,
until a test lets it go: with ``OPTIMIX_HOLD_DIR=DIR``, the thread that reaches ``POINT:N``
opens the FIFO ``DIR/POINT.N`` (made by the test) for reading, which waits for the test to
open it for writing, and reads it to its end, which waits for the test to close it. So a
test holds a search in the middle by construction, never by timing. Besides ``POINTS``, a
search can be held at ``ray_started`` (Ray is up; nothing is written yet), and its trials at
``trial_started`` (a trial's worker has begun it, before anything is trained): there the
visits are counted per worker process, so ``trial_started:1`` holds the first trial of each
worker (every worker that has the variables in its environment: a cluster's, from the
``ray start`` that started its node).

Unset (always, outside these checks), ``kill_at`` is two dictionary lookups.
"""

from __future__ import annotations

import os
import signal

_ENV = "OPTIMIX_KILL_AT"
_HOLD_ENV, _HOLD_DIR = "OPTIMIX_HOLD_AT", "OPTIMIX_HOLD_DIR"
POINTS = ("before_ledger", "torn_ledger", "before_tell", "mid_mlflow", "before_logged", "mid_tags")
_seen: dict[str, int] = {}
_held: dict[str, int] = {}


def armed(point: str) -> bool:
    """Whether reaching ``point`` now should kill the process (counts the visit)."""
    spec = os.environ.get(_ENV)
    if not spec:
        return False
    name, _, nth = spec.partition(":")
    if name != point:
        return False
    _seen[point] = _seen.get(point, 0) + 1
    return _seen[point] == int(nth or 1)


def kill_at(point: str) -> None:
    hold_at(point)
    if armed(point):
        os.kill(os.getpid(), signal.SIGKILL)


def hold_at(point: str) -> None:
    """Wait at ``point`` while a test holds its FIFO (``OPTIMIX_HOLD_AT``; counts the visit)."""
    spec = os.environ.get(_HOLD_ENV)
    if not spec:
        return
    _held[point] = _held.get(point, 0) + 1
    if f"{point}:{_held[point]}" in spec.split(","):
        fifo = os.path.join(os.environ[_HOLD_DIR], f"{point}.{_held[point]}")
        with open(fifo, "rb") as f:  # waits for the writer
            f.read()  # ... and for it to close
