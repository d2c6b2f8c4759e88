"""Exact kill points for the reliability benchmark (``benchmarks/faults.py``) and the tests.

``OPTIMIX_KILL_AT=POINT[:N]`` makes the search driver kill itself with SIGKILL (no clean-up,
as a power cut or the OOM killer would) the N-th time (default 1) it reaches POINT:

- ``before_ledger``: a trial has finished, its ledger line is not yet written;
- ``torn_ledger``: half of the trial's ledger line is written;
- ``before_tell``: the ledger line is written, Optuna has not been told;
- ``mid_mlflow``: the trial's MLflow run is created with its params, its metrics not yet logged;
- ``before_logged``: the MLflow run is complete, the ledger's ``logged`` line not yet written;
- ``mid_tags``: one run's frontier tags are rewritten, the others not yet.

Unset (always, outside these checks), ``kill_at`` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_ENV = "OPTIMIX_KILL_AT"
POINTS = ("before_ledger", "torn_ledger", "before_tell", "mid_mlflow", "before_logged", "mid_tags")
_seen: dict[str, int] = {}


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
    if armed(point):
        os.kill(os.getpid(), signal.SIGKILL)
