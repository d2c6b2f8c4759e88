"""What Optuna is told: a trial's outcome as the ledger records it (``tell``), and, on
``--resume``, the trials a killed driver left RUNNING set right by the ledger (``reconcile``).
The ledger is the truth; Optuna hears it second (``optimix.search.searcher``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from optimix.core import metrics
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import (
    CURVE_ATTR,
    FLOPS_ATTR,
    RERUN_ATTR,
    SKIPPED_ATTR,
    TRIAL_ID_ATTR,
    SearchSpec,
)
from optimix.search.proposals import optuna_value

log = logging.getLogger(__name__)


def tell(study, ot_trial, entry: LedgerEntry, spec: SearchSpec) -> None:
    """Tell Optuna a trial's outcome as the ledger ``entry`` records it (with the search's
    constraints, how far it is from each, for the samplers' ``constraints_func``)."""
    from optuna.trial import TrialState

    constraints, objectives = spec.constraints, spec.objectives
    ot_trial.set_user_attr(FLOPS_ATTR, entry.train_flops)
    status = entry.status
    if status in (metrics.OK, metrics.PRUNED):
        ot_trial.set_user_attr(CURVE_ATTR, curve_points(entry, spec))
    if status == metrics.OK:
        values = entry.final_metrics()
        if constraints:  # finite: Optuna's storage keeps JSON numbers
            told = [min(v, 1e12) for v in metrics.violations(constraints, values)]
            ot_trial.set_user_attr(metrics.CONSTRAINT_ATTR, told)
            if hasattr(ot_trial, "set_constraint"):  # Optuna 5; earlier, the constraints_func
                for constraint, value in zip(constraints, told, strict=True):
                    ot_trial.set_constraint(str(constraint), value)
        missing = [o.metric for o in objectives if not math.isfinite(values.get(o.metric, math.nan))]
        if not missing:
            study.tell(ot_trial, [optuna_value(o.metric, values[o.metric]) for o in objectives])
            return
        ot_trial.set_user_attr("optimix.error", f"no value for {', '.join(missing)}")
        log.warning("trial %s: no value for %s: told to Optuna as failed", entry.trial_id, missing)
    study.tell(ot_trial, state=TrialState.PRUNED if status == metrics.PRUNED else TrialState.FAIL)


def curve_points(entry: LedgerEntry, spec: SearchSpec) -> list[list[float]]:
    """The trial's learning-curve points as ``[log10 FLOPs, quality]``, for the frontier
    sampler's current frontier."""
    quality = spec.quality.metric if spec.quality is not None else None
    if quality is None or not metrics.curve_metric(quality):
        return []
    points = []
    for point in entry.result.get("curve", []):
        value = metrics.point_metrics(entry.result, point).get(quality)
        if value is not None and point["train_flops"] > 0:
            points.append([math.log10(point["train_flops"]), value])
    return points


def reconcile(study, storage, entries: Sequence[LedgerEntry], spec: SearchSpec) -> None:
    """Optuna trials a killed driver left RUNNING, set right by the ledger.

    A trial in the ledger was killed between its ledger line and Optuna's tell: Optuna is
    told what the ledger says. Any other was interrupted while it trained: FAIL, and its
    point queued to run again, once (a trial that takes the driver down with it must not
    make every ``--resume`` die the same way).
    """
    import optuna
    from optuna.trial import TrialState

    by_id = {e.trial_id: e for e in entries}
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial = optuna.Trial(study, _storage_id(study, storage, frozen.number))
        entry = by_id.get(frozen.user_attrs.get(TRIAL_ID_ATTR, ""))
        if entry is not None:
            tell(study, trial, entry, spec)
            continue
        trial.set_user_attr(SKIPPED_ATTR, "the driver stopped while it ran")
        study.tell(trial, state=TrialState.FAIL)
        if not frozen.params:
            continue
        if RERUN_ATTR in frozen.user_attrs:
            log.warning("trial %d was interrupted twice: not run again", frozen.user_attrs[RERUN_ATTR])
        else:
            study.enqueue_trial(frozen.params, user_attrs={RERUN_ATTR: frozen.number})


def _storage_id(study, storage, number: int) -> int:
    """The storage's id of trial ``number`` (Optuna's public storage API)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)
