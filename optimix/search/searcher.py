"""optimix's Ray Tune searcher, on Optuna's ask and tell.

Ray Tune asks for points (``suggest``) and reports outcomes (``on_trial_complete``); Optuna
proposes and learns. In between, this searcher keeps the promises the records depend on:

- **The ledger before Optuna.** A finished trial's ledger line is written (and fsynced) by
  ``conclude`` before Optuna is told, so a crash between the two leaves the trial RUNNING in
  Optuna and in the ledger, and ``--resume`` tells Optuna what the ledger says
  (``reconcile``): a trial is never COMPLETE in Optuna and absent from the ledger.
- **Every point once.** A proposal that would train a model already trained or running
  (same effective config, ``budget.effective_key``) is never started; a grid is walked
  point by point, each once, across ``--resume`` too.
- **The budget.** A proposal that does not fit in what is left is never started; running
  trials hold a reservation; what a trial really spent is counted when it ends.
- **Patience.** Once ``out_of_patience()`` says so (the driver: ``search.patience``
  finished trials in a row did not move the frontier), nothing more is proposed.
- **Honest outcomes.** ``ok`` is told COMPLETE with every objective (from the trial's
  result, whatever metric the objective names); ``pruned`` is PRUNED; failed, diverged and
  crashed trials are FAIL. Proposals never started carry ``optimix.skipped`` and are FAIL.
  A trial stopped before it finished (Ctrl-C, the end of the search) is not a result: it is
  FAIL with ``optimix.skipped`` and its point is queued to run again.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from ray.tune import Stopper
from ray.tune.search import Searcher

from optimix.core import faults, replicates
from optimix.core.budget import Budget, Proposal
from optimix.core.config import ReplicatesConfig, SpaceError, TrialConfig
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import (
    GROUP_KEY,
    PROGRESS_KEY,
    RERUN_ATTR,
    RESULT_KEY,
    SEED_ATTR,
    SKIPPED_ATTR,
    TRIAL_ID_ATTR,
    Constraint,
)
from optimix.core.space import Space
from optimix.search.proposals import Proposals, distributions
from optimix.search.study import tell

log = logging.getLogger(__name__)

_MAX_TRIES = 50
_AFFORDABLE_AFTER = 3  # proposals refused before a random point that fits is queued
_PACE = 0.5  # of the replicates' share, what may be spent while the search explores


class TrialRecords(Protocol):
    """Where the searcher's trials are recorded (the search driver): the ledger first."""

    def record(self, trial_id: str, proposal: Proposal, doc: dict) -> LedgerEntry:
        """A finished trial's ledger entry (its ``train_flops`` charged to the budget)."""

    def record_infeasible(self, trial_id: str, point: Mapping[str, Any], reason: str) -> LedgerEntry:
        """A point infeasible before it runs: never trained, no FLOPs."""

    def record_lost(self, trial_id: str, train_flops: float) -> None:
        """An attempt stopped before it finished: no result, its compute charged all the same."""

    def out_of_patience(self) -> bool:
        """Whether ``search.patience`` says to propose nothing more."""

    def config_groups(self) -> dict[str, replicates.Group]:
        """The finished trials by config (``replicates.config_id``)."""

    def front_configs(self) -> set[str]:
        """The configs on the frontier (a mean final result or curve point of theirs)."""


@dataclass
class _Member:
    """One proposal a Tune trial trains (a stacked trial trains several)."""

    trial_id: str
    proposal: Proposal
    ot_trial: Any  # optuna.Trial
    replicate: bool = False
    """A config retrained at a new seed (``replicates``)."""

    def tune_point(self) -> dict[str, Any]:
        return replicates.tune_point(self.proposal.point, self.proposal.seed if self.replicate else None)


@dataclass(frozen=True)
class SearcherSetup:
    """What a searcher is built from (``OptimixSearcher``)."""

    study: Any  # optuna.Study
    space: Space
    budget: Budget
    records: TrialRecords
    proposals: Proposals
    points_left: int
    known: Mapping[str, str]
    """Effective key -> the trial that trained it (the ledger's trials, on ``--resume``)."""
    grid: list[dict[str, Any]] | None = None
    seed: int = 0
    replicates: ReplicatesConfig | None = None
    """Frontier configs retrained at new seeds (``replicates.settings``), or none."""
    base_seed: int = 0
    """The search's seed: a config's first trial's (replicates take ``replicates.seed_for``)."""
    explore_first: int = 3
    """Trials of new configs to finish before any replicate."""
    queued_only: bool = False
    """Run the points queued in Optuna and nothing else (``optimix.search.confirm``)."""


class OptimixSearcher(Searcher):
    def __init__(self, setup: SearcherSetup):
        super().__init__()
        self.study = setup.study
        self.space = setup.space
        self.spec = setup.space.spec
        self.dists = distributions(setup.space)
        self.budget = setup.budget
        self.records = setup.records
        self.proposals = setup.proposals
        self.points_left = setup.points_left
        self.seen = dict(setup.known)  # effective key -> the trial that trains it
        self.grid = setup.grid
        self.stack = setup.space.base.search.stack
        self.live: dict[str, list[_Member]] = {}  # Tune trial id -> what it trains
        self.progress: dict[str, float] = {}  # Tune trial id -> FLOPs it reported so far
        self.errored: set[str] = set()
        self.stopping = False  # an interrupted search: propose nothing more
        self._rng = np.random.default_rng([setup.seed, 11])
        self._dry: tuple[int, float] | None = None  # (points seen, FLOPs left) when none was new
        self.replicates = setup.replicates
        self.base_seed = setup.base_seed
        self.explore_first = setup.explore_first
        self.queued_only = setup.queued_only

    # -- proposing -----------------------------------------------------------------------

    def suggest(self, trial_id: str):
        if self.stopping or self.points_left <= 0 or self.records.out_of_patience():
            return Searcher.FINISHED
        if self.queued_only and not self._queued():
            return Searcher.FINISHED
        # While trials run, "nothing fits" means "not now" (None): one may give FLOPs back.
        not_now = None if self.budget.reserved else Searcher.FINISHED
        if self._dry == (len(self.seen), self.budget.left()):
            return not_now  # nothing new could be found, and nothing has changed since
        attempt = -1
        while attempt + 1 < _MAX_TRIES:
            attempt += 1
            if self.points_left <= 0:
                return Searcher.FINISHED
            if self.budget.exhausted():
                return not_now
            if self.grid is not None:
                point = self._next_grid_point(lambda p: True)
                if point is None:
                    return not_now if self._grid_left() else Searcher.FINISHED
                self.study.enqueue_trial(point)
            elif attempt == 0 and self._enqueue_replicate():
                pass
            elif attempt >= _AFFORDABLE_AFTER and not self._enqueue_affordable():
                self._dry = (len(self.seen), self.budget.left())
                return not_now
            ot_trial = self.study.ask(self.dists)
            points_left = self.points_left
            member = self._admit(ot_trial, trial_id)
            if member is None:
                attempt -= self.points_left < points_left  # an infeasible point is a trial, not a miss
                continue
            members = [member]
            if self.stack > 1 and not member.replicate:
                members = self._fill_group(trial_id, member)
            self.live[trial_id] = members
            if len(members) == 1 and self.stack == 1:
                return member.tune_point()
            return {GROUP_KEY: [m.tune_point() for m in members]}
        if not_now is None:
            return None
        log.warning("no new point fitted the budget in %d tries: ending the search", _MAX_TRIES)
        return Searcher.FINISHED

    def _admit(self, ot_trial, trial_id: str, reserve_for: str | None = None) -> _Member | None:
        """The proposal as a trial to run, or None (told to Optuna as skipped) if it is
        invalid, a repeat, or does not fit."""
        point = dict(ot_trial.params)
        seed = ot_trial.user_attrs.get(SEED_ATTR)
        key = self.proposals.key(point, seed)
        try:
            proposal = self.proposals.get(point, seed)
        except SpaceError as err:
            if key in self.seen:
                self._skip(ot_trial, f"the same point as trial {self.seen[key]}")
            else:
                self._infeasible(ot_trial, f"infeasible-{ot_trial.number}", point, key, str(err))
            return None
        if key in self.seen:
            self._skip(ot_trial, f"trains the same model as trial {self.seen[key]}")
            return None
        missed = known_misses(proposal, self.spec.constraints)
        if missed:
            self._infeasible(ot_trial, f"{trial_id}_n{ot_trial.number}", point, key,
                             "infeasible before training: " + "; ".join(missed))
            return None
        if proposal.cost > self.budget.left():
            self._skip(ot_trial, f"needs {proposal.cost:.3g} FLOPs, {self.budget.left():.3g} left")
            return None
        self.seen[key] = trial_id
        self.budget.reserve(reserve_for or trial_id, proposal.cost)
        self.points_left -= 1
        ot_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
        return _Member(trial_id, proposal, ot_trial, replicate=seed is not None)

    def _infeasible(self, ot_trial, trial_id: str, point: dict[str, Any], key: str, reason: str) -> None:
        """A proposal infeasible before it runs: its config cannot be built (dimensions valid
        one by one, not together), or its plan misses a constraint on a metric known before
        training. A trial of the search all the same: in the ledger as infeasible with its
        reason, then Optuna (FAIL), then MLflow; never trained, no FLOPs; the search goes on."""
        self.seen[key] = trial_id
        self.points_left -= 1
        ot_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
        entry = self.records.record_infeasible(trial_id, point, reason)
        faults.kill_at("before_tell")
        self._tell(ot_trial, entry)
        log.info("trial %s is infeasible: %s", trial_id, reason)

    def _fill_group(self, trial_id: str, first: _Member) -> list[_Member]:
        """Up to ``stack - 1`` more points that share ``first``'s shape and length (every
        dimension that is not per-model fixed), trained stacked in the same Tune trial."""
        from optuna.trial import TrialState

        fixed = {k: v for k, v in first.proposal.point.items() if not TrialConfig.meaning(k).per_model}
        first.trial_id = f"{trial_id}_0"
        first.ot_trial.set_user_attr(TRIAL_ID_ATTR, first.trial_id)
        members = [first]
        while len(members) < self.stack and self.points_left > 0:
            if self.grid is not None:
                point = self._next_grid_point(lambda p: all(p[k] == v for k, v in fixed.items()))
                if point is None:
                    break
                self.study.enqueue_trial(point)
            elif self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                break  # queued points (first points, reruns) keep their own values
            else:
                self.study.enqueue_trial(fixed)
            member = self._admit(self.study.ask(self.dists), f"{trial_id}_{len(members)}", trial_id)
            if member is None:
                break
            members.append(member)
        return members

    def _next_grid_point(self, wanted: Callable[[dict], bool]) -> dict[str, Any] | None:
        left = self.budget.left()
        for point in self.grid:
            if not wanted(point) or self.proposals.key(point) in self.seen:
                continue
            if self.proposals.cost(point) <= left:  # infeasible (``inf``): recorded so when asked for
                return point
            if not self.proposals.feasible(point):
                return point
        return None

    def _grid_left(self) -> bool:
        return any(self.proposals.key(p) not in self.seen for p in self.grid)

    def _enqueue_affordable(self) -> bool:
        """The sampler keeps proposing what cannot run (too dear, or trained already): queue
        a random new point that fits (Optuna's ``ask`` takes queued points first), so that
        the budget is spent rather than the search ended early. False if none of 256 does."""
        dims = self.space.dimensions
        for _ in range(256):
            point = {key: dim.at(float(self._rng.random())) for key, dim in dims.items()}
            if self.proposals.cost(point) <= self.budget.left() and self.proposals.key(point) not in self.seen:
                self.study.enqueue_trial(point)
                return True
        return False

    def _queued(self) -> bool:
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _enqueue_replicate(self) -> bool:
        """Queue a frontier config's next seed (``replicates.next_replicate``) where one is due
        and fits: its share of the search (``max_share`` of the FLOPs budget, else of the
        trials) and the budget left. Not before ``explore_first`` configs have finished, nor
        while points are queued (first points, reruns: they go first)."""
        if self.replicates is None or self.grid is not None:
            return False
        groups = self.records.config_groups()  # a new dict: the running seeds are added to it
        if len(groups) < self.explore_first:
            return False
        if self._queued():
            return False
        running = [m for members in self.live.values() for m in members]
        for m in running:  # a seed training now is taken
            cid = replicates.config_id(m.proposal.params())
            if cid in groups:
                groups[cid] = replace(groups[cid], seeds=groups[cid].seeds | {m.proposal.seed})
        spent = sum(g.replicate_flops for g in groups.values()) + sum(m.proposal.cost for m in running if m.replicate)
        count = sum(len(g.seeds) - 1 for g in groups.values())
        started = sum(len(g.seeds) for g in groups.values())
        share, search = self.replicates.max_share, self.space.base.search

        def fits(cost: float) -> bool:
            """Within the share: while the search explores, at most half the share of what it
            started so far (``_PACE``); the rest once what is left of the search is no more
            than what is left of the share (its end: the frontier it will report)."""
            if cost > self.budget.left():
                return False
            if search.budget_flops is not None:
                allowance = share * search.budget_flops - spent
                paced = spent + cost <= _PACE * share * (self.budget.spent + sum(self.budget.reserved.values()) + cost)
                return cost <= allowance and (paced or self.budget.left() <= allowance)
            allowance = math.floor(share * search.trials) - count
            return allowance >= 1 and (count + 1 <= _PACE * share * (started + 1) or self.points_left <= allowance)

        found = replicates.next_replicate(list(groups.values()), self.records.front_configs(), self.replicates,
                                          self.base_seed, fits)
        if found is None:
            return False
        group, seed = found
        self.study.enqueue_trial(dict(group.point), user_attrs={SEED_ATTR: seed})
        log.info("retraining config %s at seed %d (%d seeds so far)", group.config, seed, len(group.seeds))
        return True

    def _skip(self, ot_trial, reason: str) -> None:
        from optuna.trial import TrialState

        ot_trial.set_user_attr(SKIPPED_ATTR, reason)
        self.study.tell(ot_trial, state=TrialState.FAIL)

    # -- outcomes --------------------------------------------------------------------------

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if PROGRESS_KEY in result:
            self.progress[trial_id] = float(result[PROGRESS_KEY])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error:  # Tune's error callback follows at once, with the error's text
            self.errored.add(trial_id)
            return
        self.conclude(trial_id, result, None)

    def conclude(self, trial_id: str, result: Mapping[str, Any] | None, error: str | None) -> list[LedgerEntry]:
        """Ledger first, then Optuna: see the module docstring. Returns the ledger entries."""
        self.errored.discard(trial_id)
        members = self.live.pop(trial_id, [])
        self.budget.release(trial_id)
        spent = self.progress.pop(trial_id, 0.0)
        docs = json.loads(result[RESULT_KEY]) if result and RESULT_KEY in result else None
        if docs is None and (error is None or self.stopping):
            for member in members:  # stopped before it finished: not a result, run it again
                self.requeue(member.ot_trial, reason="stopped before it finished")
                self.seen = {k: t for k, t in self.seen.items() if t != member.trial_id}
                lost = spent / len(members)
                if lost > 0:  # its compute is spent all the same
                    self.records.record_lost(member.trial_id, lost)
            return []
        if docs is None:  # the worker or its node died (after Tune's one retry)
            share = spent / max(1, len(members))
            docs = [{"status": "failed", "error": error or "trial crashed", "train_flops": share}
                    for _ in members]
        entries = []
        for member, doc in zip(members, docs, strict=True):
            entry = self.records.record(member.trial_id, member.proposal, doc)
            faults.kill_at("before_tell")
            self._tell(member.ot_trial, entry)
            entries.append(entry)
        return entries

    def stop_live(self) -> None:
        """Every trial still running when Tune ends is concluded without an outcome (its
        point queued to run again later)."""
        for trial_id in list(self.live):
            self.conclude(trial_id, None, None)

    def _tell(self, ot_trial, entry: LedgerEntry) -> None:
        tell(self.study, ot_trial, entry, self.spec)

    def requeue(self, ot_trial, reason: str) -> None:
        """FAIL (never left RUNNING), and the same point queued to run again."""
        self._skip(ot_trial, reason)
        if ot_trial.params:
            self.study.enqueue_trial(ot_trial.params, user_attrs={RERUN_ATTR: ot_trial.number})

    def stop(self) -> None:
        """Propose nothing more (the search was interrupted)."""
        self.stopping = True

    # The Optuna journal and the ledger are the state; Ray's pickled copy is never used.
    def __getstate__(self) -> dict:
        return {"budget": self.budget}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"spent": self.budget.spent}, f)

    def restore(self, checkpoint_path: str) -> None:
        return None


def known_misses(proposal: Proposal, constraints: Sequence[Constraint]) -> list[str]:
    """The ``constraints`` the ``proposal`` misses before it runs: those on a metric its plan
    fixes (``budget.Plan.known_metrics``: FLOPs, tokens, parameters), which a finished trial
    records as planned. Such a trial is never trained (``_infeasible``)."""
    if not constraints:
        return []
    known = proposal.plan.known_metrics()
    return [f"{c.metric} {known[c.metric]:.4g} misses {c}" for c in constraints
            if c.metric in known and c.violation(known) > 0]


class SignalStopper(Stopper):
    """Ends Tune's loop when ``interrupted()`` says so (a SIGINT or SIGTERM the search
    caught): Tune then stops the running trials, and the searcher queues them again."""

    def __init__(self, interrupted: Callable[[], bool]):
        self.interrupted = interrupted

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.interrupted()

    def __getstate__(self) -> dict:  # Tune pickles its run config; that copy is never used
        return {"interrupted": _never}


def _never() -> bool:
    return False
