"""``optimix frontier --confirm K``: a recorded search's frontier configs retrained at K fresh
seeds each, as trials of the same search (same parent run, ledger, budget and Optuna study).

It is a ``--resume`` that proposes nothing new: each config whose mean final result is on the
frontier (``Driver.front_configs``) gets K seeds none of its trials used (``replicates.seed_for``),
queued in Optuna with their seed (``SEED_ATTR``); the searcher runs what is queued and stops.
The FLOPs budget grows by what the confirmations cost, and the parent run's budget says so.
"""

from __future__ import annotations

import logging
from typing import Any

from optimix.core import replicates
from optimix.core.metrics import SEED_ATTR

log = logging.getLogger(__name__)


def queue(study: Any, driver: Any, base_seed: int, k: int) -> tuple[int, float]:
    """Queue ``k`` fresh seeds of every frontier config; (trials queued, their FLOPs)."""
    groups = driver.config_groups()
    count, cost = 0, 0.0
    for config in sorted(driver.front_configs(), key=lambda c: -groups[c].quality):
        group = groups[config]
        j, added = 1, 0
        while added < k:
            seed = replicates.seed_for(base_seed, j)
            j += 1
            if seed in group.seeds:
                continue
            study.enqueue_trial(dict(group.point), user_attrs={SEED_ATTR: seed})
            added += 1
        count, cost = count + k, cost + k * group.cost
        log.info("confirming config %s at %d fresh seeds", config, k)
    return count, cost

