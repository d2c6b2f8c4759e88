"""``run_search``: a search from start to end (or to an interruption), and ``--resume``.

Flow, all in the driver process except the trainable::

    Space --> OptimixSearcher (Optuna ask/tell, budget) --(points)--> Ray Tune
        --> trainable (a Ray worker: run_trial) --> final result
        --> searcher.conclude: ledger line (fsync) -> Optuna told
        --> Driver (background thread): MLflow child run -> frontier tags

A search ends in one of four ways, written to ``state.json`` and to the parent run:
``finished`` (FINISHED), ``interrupted`` by SIGINT or SIGTERM (KILLED, tag
``optimix.ended``), ``failed`` by an error (FAILED), or killed outright (still RUNNING:
``--resume`` takes it up). Only ``finished`` returns normally.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from optimix.core import faults, metrics, regime
from optimix.core.budget import Budget
from optimix.core.config import Objective, SearchConfig, SpaceError, TrialConfig, flatten
from optimix.core.entry import LedgerEntry
from optimix.core.space import Space
from optimix.records import tracking
from optimix.records.mlflow_client import absolute_uri, same_store
from optimix.search.driver import Driver, Progress
from optimix.search.ledger import RunState, SearchState, slug
from optimix.search.proposals import Proposals, check_budget, grid_size
from optimix.search.ray_session import Interrupt, check_resources, start_ray, stop_ray
from optimix.trial import hub

log = logging.getLogger(__name__)


@dataclass
class SearchOptions:
    address: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    storage_path: str = "optimix_runs"
    resume: bool = False
    seed: int | None = None
    progress: Callable[[Progress], None] | None = None
    shutdown_ray: bool = False
    """Stop the Ray this search started when it ends (the CLI does; a program that runs
    several searches keeps it)."""
    confirm: int | None = None
    """With ``resume``: only retrain the frontier's configs at this many fresh seeds each
    (``optimix.search.confirm``)."""


@dataclass
class SearchSummary:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    state_dir: str
    objectives: list[Objective]
    frontier: list[dict]
    trials: int
    ok: int
    pruned: int
    failed: int
    spent_flops: float
    """FLOPs of the finished trials (as their MLflow runs sum them)."""
    interrupted_flops: float
    """FLOPs of attempts stopped before they finished and run again: spent, with no result."""
    budget_flops: float | None
    wall_s: float
    patience: int | None = None
    """``search.patience``."""
    stalled: int | None = None
    """Set when the search stopped early: the finished trials in a row that had not moved the
    frontier when it stopped proposing (at least ``patience``)."""
    moved_since_stalled: bool = False
    """A trial still running when the search stopped proposing moved the frontier after all."""
    experiment_id: str | None = None
    """The MLflow experiment's id (for a link to its runs in the MLflow UI)."""
    first_failure: str | None = None
    """The first failed or infeasible trial's name and reason (None if none failed)."""
    space: str = "SPACE"
    """The search space's file, as the frontier's retrain lines name it."""
    replicates: int = 0
    """Trials that retrained a config at a new seed (``search.replicates``)."""
    regime: dict | None = None
    """The regime its sizes trained in (``optimix.core.regime.Regime.to_dict``)."""


class SearchInterrupted(RuntimeError):
    """SIGINT or SIGTERM ended the search; finished trials are kept for ``--resume``."""

    def __init__(self, signal_name: str, summary: SearchSummary | None):
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
        self.summary = summary


def run_search(space: Space, options: SearchOptions) -> SearchSummary:
    """Run (or resume) a search; see the module docstring."""
    import optuna

    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Everything that can be refused is, before anything is written (an experiment, a state
    # folder, a parent run): objectives and constraints (parsed with the space: ``space.spec``),
    # the storage, the search to resume.
    experiment = options.experiment or space.name
    seed = space.base.seed if options.seed is None else options.seed
    if "://" in options.storage_path:
        raise SpaceError(f"--storage-path: {options.storage_path!r} is a URI; give a file-system "
                         "path (on a cluster, a shared mount such as NFS)")
    storage = Path(options.storage_path).expanduser().resolve()
    # A resume is checked against what the search recorded before anything is written anywhere.
    resumed = SearchState.latest(storage, experiment) if options.resume else None  # none: refused
    recorded = (resumed.load() or RunState()) if resumed is not None else RunState()
    tracking_uri = _resumed_uri(recorded, options.tracking_uri, experiment, resumed) if resumed else options.tracking_uri
    space, pins = _pin_datasets(space, storage, experiment, recorded.datasets)  # before any data is read
    _check_space(space)
    cheapest = check_budget(space)
    state = resumed
    try:
        if resumed is not None:  # still running, a malformed ledger line, another space: refused before Ray
            resumed.acquire()
            resumed.entries()  # (a torn last line is left out)
            if recorded.space is not None:
                _check_same_space(recorded.space, space.tree)
        # From here on SIGINT and SIGTERM are noted, not raised (``Interrupt``): one while Ray
        # starts ends the search before it writes anything; a later one, once its end is recorded.
        with Interrupt() as interrupt:
            start_ray(options.address)
            interrupt.arm()  # again: ray.init installs a SIGTERM handler of its own
            faults.hold_at("ray_started")
            if interrupt.name:
                if options.shutdown_ray:
                    stop_ray()
                raise SearchInterrupted(interrupt.name, None)
            check_resources(space.base.search)  # before the experiment, the state folder, the parent run
            tracker = tracking.Tracker(tracking_uri, experiment)  # fails fast, before training
            if state is None:
                state = SearchState.create(storage, experiment)
                state.acquire()
            run = SearchRun(space, options, state, tracker, seed, interrupt, started)
            run.open(experiment, pins)
            return run.run(cheapest)
    finally:
        if state is not None:
            state.release()


@dataclass
class SearchRun:
    """One attempt of a search, from its state opened to its end recorded: it owns the
    search's state (``RunState``), its budget, its proposals and its driver, and hands each
    part what it needs. ``run_search`` builds one once everything that can be refused has been."""

    space: Space
    options: SearchOptions
    state: SearchState
    tracker: tracking.Tracker
    seed: int
    interrupt: Interrupt
    started: float
    record: RunState = field(default_factory=RunState)
    proposals: Proposals = field(init=False)

    def __post_init__(self) -> None:
        self.proposals = Proposals(self.space)

    def open(self, experiment: str, pins: Mapping[str, Any]) -> None:
        """The state of a new search, or of the one ``--resume`` takes up (``run_search`` has
        refused one whose space differs in anything but what is ``resumable``, or whose ledger
        has a malformed line). ``pins``: its hub datasets' commits
        (``optimix.trial.hub``)."""
        resume, space = self.options.resume, self.space
        saved = self.state.load() if resume else None  # its ledger and space checked by run_search
        if saved is None:
            # A new search, or one killed before it wrote its state: its parent run, if it got
            # that far, is found by the state folder it is tagged with, so there is only ever one.
            parent_id = self.tracker.find_search(str(self.state.path)) if resume else None
            parent_id = parent_id or self._start_parent(pins)
            saved = RunState(parent_run_id=parent_id, experiment=experiment,
                             tracking_uri=tracking.redact_uri(absolute_uri(self.tracker.uri)))
        if resume:
            self.tracker.reopen_search(saved.parent_run_id)
        saved.space, saved.status, saved.attempts, saved.datasets = space.tree, "running", saved.attempts + 1, dict(pins)
        self.state.save(saved)
        self.record = saved

    def _start_parent(self, pins: Mapping[str, Any]) -> str:
        space, spec = self.space, self.space.spec
        return self.tracker.start_search(
            f"{space.name}-search", metrics.objectives_tag(spec.objectives),
            {**flatten({"search": space.base.search.model_dump(mode="json")}), "seed": self.seed,
             **{f"tasks.{name}.revision": pin["commit"] for name, pin in pins.items()}},
            yaml.safe_dump(space.tree, sort_keys=False), space.base.search.budget_flops, str(self.state.path),
            metrics.constraints_tag(spec.constraints),
        )

    def run(self, cheapest: float) -> SearchSummary:
        """This attempt: the ledger's trials taken up, Tune run, the end recorded."""
        self.state.repair()
        entries = self.state.trials()
        self.budget = Budget.from_ledger(self.space.base.search.budget_flops, cheapest, entries,
                                         self.state.lost_flops())
        self.driver = Driver(self.space, self.state, self.tracker, self.record.parent_run_id, self.budget,
                             self.proposals, self.options.progress)
        self.driver.replay(entries)
        ended, reason, interrupt = "failed", "error", self.interrupt
        try:
            self._tune()
            ended, reason = ("interrupted", interrupt.name) if interrupt.name else ("finished", "")
            interrupt.finish()
            rows = self._record_end(ended, reason, self.options.shutdown_ray)
        except KeyboardInterrupt:
            ended, reason = "interrupted", interrupt.name or "SIGINT"
        except SystemExit as err:  # Ray's own SIGTERM handler, while ray.init had it installed
            if err.code != signal.SIGTERM:
                raise
            ended, reason = "interrupted", "SIGTERM"
        except Exception as err:
            reason = tracking.one_line(err)  # one line, no credentials
            raise
        finally:
            if not interrupt.finishing:
                rows = self._record_end(ended, reason, False)
        summary = self._summary(rows)
        if ended == "interrupted":
            raise SearchInterrupted(reason, summary)
        return summary

    def _summary(self, rows: list[dict]) -> SearchSummary:
        search, driver, entries = self.space.base.search, self.driver, self.driver.entries
        n_ok = sum(e.status == metrics.OK for e in entries)
        n_pruned = sum(e.status == metrics.PRUNED for e in entries)
        return SearchSummary(
            experiment=self.record.experiment, parent_run_id=self.record.parent_run_id,
            tracking_uri=tracking.redact_uri(self.tracker.uri), state_dir=str(self.state.path),
            objectives=list(self.space.spec.objectives), frontier=rows, trials=len(entries), ok=n_ok,
            pruned=n_pruned, failed=len(entries) - n_ok - n_pruned, spent_flops=self.budget.spent,
            interrupted_flops=self.budget.lost, budget_flops=search.budget_flops,
            wall_s=time.perf_counter() - self.started, patience=search.patience, stalled=driver.stalled,
            moved_since_stalled=driver.moved_since_stalled(), experiment_id=self.tracker.experiment_id,
            first_failure=_first_failure(entries), space=self.space.source or "SPACE",
            replicates=sum(len(g.seeds) - 1 for g in driver.config_groups().values()),
            regime=regime.of_entries(entries).to_dict())

    def _record_end(self, ended: str, reason: str, shutdown_ray: bool) -> list[dict]:
        """How the search ended, in state.json and on the parent run; the final frontier."""
        self.record.status, self.record.ended = ended, reason
        self.state.save(self.record)
        rows = self.driver.finish() if ended == "finished" else _finish_quietly(self.driver)
        entries = self.driver.entries
        self.tracker.finish_search(self.record.parent_run_id, {
            "trials": len(entries), "trials_ok": sum(e.status == metrics.OK for e in entries),
            "spent_flops": self.budget.spent, "interrupted_flops": self.budget.lost, "frontier_size": len(rows)},
            failed=ended != "finished", ended=reason)
        if shutdown_ray:
            stop_ray()  # here, where a signal is noted, rather than in an exit handler
        return rows

    def _tune(self) -> None:
        """Tune runs what is left of the search (trials, budget, patience), then every trial
        still running is stopped and queued to run again."""
        from optimix.search.proposals import grid_points, startup_points

        search, driver = self.space.base.search, self.driver
        study = self._study()
        grid = grid_points(self.space, self.seed) if search.sampler == "grid" else None
        remaining = search.trials - len(driver.entries)
        if self.options.confirm:
            remaining, grid = self._confirm(study), None
        elif grid is not None:
            remaining = min(remaining, len(grid) - len(driver.entries))
        if remaining <= 0 or self.budget.exhausted() or driver.out_of_patience():  # (patience: on --resume)
            return
        if self.record.attempts == 0 and grid is None and not self.options.confirm:
            for point in startup_points(self.space, self.seed):
                study.enqueue_trial(point)
        searcher = self._searcher(study, grid, remaining)
        start_ray(self.options.address)
        if search.prune == "dominated":
            from optimix.search.trainable import board_class

            driver.attach_board(board_class().remote(self.space.spec.objectives, search.prune_margin,
                                                     search.prune_from))
        tuner = self._tuner(searcher, remaining)
        self.interrupt.watch(searcher)
        try:
            if not self.interrupt.name:  # (a signal while Ray started: nothing more is run)
                tuner.fit()
        finally:
            board = driver.detach_board()
            if board is not None:
                import ray

                ray.kill(board)
            searcher.stop_live()  # stopped without an outcome: run again later

    def _confirm(self, study) -> int:
        """Queue the frontier's confirmations; the budget grows by their cost (and the
        parent run's budget with it). How many trials that is."""
        from optimix.search.confirm import queue

        count, cost = queue(study, self.driver, self.space.base.seed, self.options.confirm)
        if self.budget.limit is not None and count:
            self.budget.limit = max(self.budget.limit, self.budget.spent + self.budget.lost + cost)
            self.tracker.set_budget(self.record.parent_run_id, self.budget.limit)
        return count

    def _study(self):
        """The Optuna study (its journal in the state folder), set right by the ledger."""
        import optuna

        from optimix.search.proposals import attempt_seed, make_sampler
        from optimix.search.study import reconcile

        attempt = self.record.attempts
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(self.state.journal)))
        sampler = make_sampler(self.space, attempt_seed(self.seed, attempt), self.budget.left, self.proposals)
        study = optuna.create_study(study_name=self.record.experiment, storage=storage, sampler=sampler,
                                    directions=self.space.spec.directions, load_if_exists=True)
        reconcile(study, storage, self.driver.entries, self.space.spec)
        return study

    def _searcher(self, study, grid: list[dict[str, Any]] | None, remaining: int):
        from optimix.core import replicates
        from optimix.search.proposals import attempt_seed, startup_trials
        from optimix.search.searcher import OptimixSearcher, SearcherSetup

        known = {self.proposals.key(e.point, e.params.get("seed")): e.trial_id for e in self.driver.entries}
        return OptimixSearcher(SearcherSetup(
            study=study, space=self.space, budget=self.budget, records=self.driver, proposals=self.proposals,
            points_left=remaining, known=known, grid=grid, seed=attempt_seed(self.seed, self.record.attempts),
            replicates=None if self.options.confirm else replicates.settings(self.space.base.search),
            base_seed=self.space.base.seed, explore_first=startup_trials(self.space),
            queued_only=bool(self.options.confirm)))

    def _tuner(self, searcher, remaining: int):
        from ray import tune

        from optimix.search.driver import callback_class
        from optimix.search.searcher import SignalStopper
        from optimix.search.trainable import trainable

        search = self.space.base.search
        models_dir = str(self.state.path / "models") if search.save_models != "none" else None
        return tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, space=self.space, models_dir=models_dir,
                                                     board=self.driver.board, snapshots=self.record.datasets),
                                {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial}),
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                        max_concurrent_trials=search.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"ray-{self.record.attempts}", storage_path=str(self.state.path), verbose=0,
                callbacks=[callback_class()(self.driver, searcher)],
                stop=SignalStopper(self.interrupt.stop_all),
                # A worker or node that dies (a reclaimed spot node) is tried once more.
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )


def _resumed_uri(recorded: RunState, asked: str | None, experiment: str, state: SearchState) -> str | None:
    """The tracking URI a resume writes to: the store the search was recorded in. A search of
    another experiment, or another store asked for (``--tracking-uri`` or
    ``MLFLOW_TRACKING_URI``), is refused in one line. Asked for none, the recorded one (whose
    credentials, if it had any, MLflow then takes from ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``)."""
    was = recorded.experiment
    if was is not None and was != experiment:
        raise SpaceError(f"--experiment: {state.path} holds a search of {was!r}, not {experiment!r}; "
                         "name that experiment to resume it")
    where = recorded.tracking_uri
    wanted = asked or os.environ.get("MLFLOW_TRACKING_URI")
    if where is None:  # killed before it wrote its state: the store asked for, as before
        return asked
    if wanted is None:
        return where.replace("://***@", "://", 1)
    if not same_store(wanted, where):
        raise SpaceError(f"--tracking-uri: the search in {state.path} is recorded in {where}, not in "
                         f"{tracking.redact_uri(wanted)}; resume it with --tracking-uri {where} "
                         "(or drop --resume for a new search)")
    return asked


def _pin_datasets(space: Space, storage: Path, experiment: str, recorded: Mapping[str, Any]) -> tuple[Space, dict]:
    """The space with its hub datasets pinned to commits and saved once under
    ``<storage>/<experiment>/datasets/`` (``optimix.trial.hub``); a resume keeps the recorded commits."""
    return hub.pin_space(space, storage / slug(experiment) / "datasets", dict(recorded))


def _check_space(space: Space) -> None:
    search = space.base.search
    if search.sampler == "grid":
        grid_size(space)  # raises a named SpaceError for a dimension with no grid
    for i, point in enumerate(search.points_to_evaluate):
        try:
            space.resolve(point)
        except SpaceError as err:
            raise SpaceError(f"search.points_to_evaluate.{i}: {err}") from None
        for key, value in point.items():  # Optuna proposes within the dimensions only
            dim = space.dimensions[key]
            inside = value in dim.values if dim.dist == "choice" else dim.low <= value <= dim.high
            if not inside:
                where = dim.values if dim.dist == "choice" else f"[{dim.low:g}, {dim.high:g}]"
                raise SpaceError(f"search.points_to_evaluate.{i}.{key}: {value!r} is outside the "
                                 f"dimension ({dim.dist} {where})")


def _check_same_space(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    before, after = flatten(recorded), flatten(now)
    for key in sorted(set(before) | set(after)):
        if TrialConfig.meaning(key).resumable or before.get(key) == after.get(key):
            continue
        was = "absent" if key not in before else repr(before[key])
        becomes = "absent" if key not in after else repr(after[key])
        raise SpaceError(f"--resume: {key} differs from the recorded search ({was} -> {becomes}); "
                         f"only {', '.join(_resumable())} may change (drop --resume for a new search)")


def _resumable() -> list[str]:
    """The entries ``--resume`` may change (``FieldMeaning.resumable``)."""
    return [f"search.{name}" for name in SearchConfig.model_fields
            if TrialConfig.meaning(f"search.{name}").resumable]


def _first_failure(entries: list[LedgerEntry]) -> str | None:
    failed = [e for e in entries if e.status in (metrics.FAILED, metrics.INFEASIBLE)]
    return f"{failed[0].name}: {failed[0].error or failed[0].status}" if failed else None


def _finish_quietly(driver: Driver) -> list[dict]:
    """On the way out of an interrupted or failed search: record what finished, if MLflow
    lets us; never hide the reason the search ended behind a tracking error."""
    try:
        return driver.finish()
    except Exception as err:
        log.warning("could not record the frontier on the way out (%s); --resume will", err)
        return driver.frontier_rows()
