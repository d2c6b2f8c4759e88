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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import optimix.search.reaper as reaper
from optimix.core import faults, metrics
from optimix.core.config import SearchConfig, SpaceError, TrialConfig, flatten
from optimix.core.metrics import parse_objectives
from optimix.core.space import Space
from optimix.records import tracking
from optimix.records.mlflow_client import absolute_uri, same_store
from optimix.search.driver import Driver, Progress
from optimix.search.ledger import SearchState, slug
from optimix.search.proposals import check_budget, grid_size
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


@dataclass
class SearchSummary:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    state_dir: str
    objectives: list[tuple[str, str]]
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
    # folder, a parent run): objectives, constraints, the storage, the search to resume.
    objectives = [(o.metric, o.mode) for o in parse_objectives(space.base)]
    constraints = metrics.parse_constraints(space.base)
    experiment = options.experiment or space.name
    seed = space.base.seed if options.seed is None else options.seed
    if "://" in options.storage_path:
        raise SpaceError(f"--storage-path: {options.storage_path!r} is a URI; give a file-system "
                         "path (on a cluster, a shared mount such as NFS)")
    storage = Path(options.storage_path).expanduser().resolve()
    # A resume is checked against what the search recorded before anything is written anywhere.
    resumed = SearchState.latest(storage, experiment) if options.resume else None  # none: refused
    recorded = (resumed.read() or {}) if resumed is not None else {}
    tracking_uri = _resumed_uri(recorded, options.tracking_uri, experiment, resumed) if resumed else options.tracking_uri
    space, pins = _pin_datasets(space, storage, experiment, recorded.get("datasets", {}))  # before any data is read
    _check_space(space)
    cheapest = check_budget(space)

    _tune_environment()
    # From here on SIGINT and SIGTERM are noted, not raised (``_Interrupt``): one while Ray
    # starts ends the search before it writes anything; a later one, once its end is recorded.
    with _Interrupt() as interrupt:
        _start_ray(options)
        interrupt.arm()  # again: ray.init installs a SIGTERM handler of its own
        faults.hold_at("ray_started")
        if interrupt.name:
            if options.shutdown_ray:
                import ray

                ray.shutdown()
            raise SearchInterrupted(interrupt.name, None)
        _check_resources(space.base.search)  # before the experiment, the state folder, the parent run
        tracker = tracking.Tracker(tracking_uri, experiment)  # fails fast, before training
        state = resumed or SearchState.create(storage, experiment)
        state.acquire()
        try:
            saved = _open_state(space, state, tracker, objectives, constraints, seed, experiment,
                                options.resume, pins)
            return _run_attempt(space, options, state, tracker, saved, objectives, seed, cheapest, started,
                                interrupt)
        finally:
            state.release()


def _resumed_uri(recorded: Mapping[str, Any], asked: str | None, experiment: str, state: SearchState) -> str | None:
    """The tracking URI a resume writes to: the store the search was recorded in. A search of
    another experiment, or another store asked for (``--tracking-uri`` or
    ``MLFLOW_TRACKING_URI``), is refused in one line. Asked for none, the recorded one (whose
    credentials, if it had any, MLflow then takes from ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``)."""
    was = recorded.get("experiment")
    if was is not None and was != experiment:
        raise SpaceError(f"--experiment: {state.path} holds a search of {was!r}, not {experiment!r}; "
                         "name that experiment to resume it")
    where = recorded.get("tracking_uri")
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


def _open_state(space, state, tracker, objectives, constraints, seed, experiment, resume, pins) -> dict:
    """The state of a new search, or of the one ``--resume`` takes up (refused if its space
    differs in anything but ``RESUMABLE``). ``pins``: its hub datasets' commits (``optimix.trial.hub``)."""
    if resume:
        state.entries()  # a malformed ledger line is refused (LedgerError) before anything is written
    saved = state.read() if resume else None
    if saved is not None and "space" in saved:
        _check_same_space(saved["space"], space.tree)
    if saved is None:
        # A new search, or one killed before it wrote its state: its parent run, if it got
        # that far, is found by the state folder it is tagged with, so there is only ever one.
        parent_id = tracker.find_search(str(state.path)) if resume else None
        parent_id = parent_id or tracker.start_search(
            f"{space.name}-search", metrics.objectives_tag(objectives),
            {**flatten({"search": space.base.search.model_dump(mode="json")}), "seed": seed,
             **{f"tasks.{name}.revision": pin["commit"] for name, pin in pins.items()}},
            yaml.safe_dump(space.tree, sort_keys=False), space.base.search.budget_flops, str(state.path),
            metrics.constraints_tag(constraints),
        )
        saved = {"parent_run_id": parent_id, "experiment": experiment,
                 "tracking_uri": tracking.redact_uri(absolute_uri(tracker.uri)), "attempts": -1}
    if resume:
        tracker.reopen_search(saved["parent_run_id"])
    saved.update(space=space.tree, status="running", attempts=saved["attempts"] + 1, datasets=pins)
    state.write(saved)
    return saved


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


def _run_attempt(space, options, state, tracker, saved, objectives, seed, cheapest, started,
                 interrupt: _Interrupt) -> SearchSummary:
    search = space.base.search
    parent_id = saved["parent_run_id"]
    state.repair()
    entries = state.trials()
    driver = Driver(space, state, tracker, parent_id, objectives, options.progress)
    driver.replay(entries)
    ended, reason = "failed", "error"
    try:
        _run_tuner(space, options, state, driver, saved, objectives, seed, cheapest, interrupt)
        ended, reason = ("interrupted", interrupt.name) if interrupt.name else ("finished", "")
        interrupt.finishing = True  # from here on a signal is noted: the end is recorded whole
        _record_end(driver, tracker, state, saved, ended, reason, options.shutdown_ray)
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
            _record_end(driver, tracker, state, saved, ended, reason, False)
    rows, total = driver.rows, driver.spent_flops()
    n_ok = sum(e["status"] == metrics.OK for e in driver.entries)
    n_pruned = sum(e["status"] == metrics.PRUNED for e in driver.entries)
    summary = SearchSummary(
        experiment=saved["experiment"], parent_run_id=parent_id, tracking_uri=tracking.redact_uri(tracker.uri),
        state_dir=str(state.path), objectives=objectives, frontier=rows, trials=len(driver.entries), ok=n_ok,
        pruned=n_pruned, failed=len(driver.entries) - n_ok - n_pruned, spent_flops=total,
        interrupted_flops=driver.lost_flops, budget_flops=search.budget_flops, wall_s=time.perf_counter() - started,
        patience=search.patience, stalled=driver.stalled, moved_since_stalled=driver.moved_since_stalled(),
        experiment_id=tracker.experiment_id, first_failure=_first_failure(driver.entries))
    if ended == "interrupted":
        raise SearchInterrupted(reason, summary)
    return summary


def _first_failure(entries: list[dict]) -> str | None:
    failed = [e for e in entries if e["status"] in (metrics.FAILED, metrics.INFEASIBLE)]
    return f"{failed[0]['name']}: {failed[0].get('error') or failed[0]['status']}" if failed else None


def _record_end(driver: Driver, tracker, state: SearchState, saved: dict, ended: str, reason: str,
                shutdown_ray: bool) -> None:
    """How the search ended, in state.json and on the parent run, with the final frontier."""
    saved.update(status=ended, ended=reason)
    state.write(saved)
    driver.rows = driver.finish() if ended == "finished" else _finish_quietly(driver)
    n_ok = sum(e["status"] == metrics.OK for e in driver.entries)
    tracker.finish_search(saved["parent_run_id"], {
        "trials": len(driver.entries), "trials_ok": n_ok, "spent_flops": driver.spent_flops(),
        "interrupted_flops": driver.lost_flops, "frontier_size": len(driver.rows)},
        failed=ended != "finished", ended=reason)
    if shutdown_ray:
        import ray

        ray.shutdown()  # here, where a signal is noted, rather than in an exit handler


def _finish_quietly(driver: Driver) -> list[dict]:
    """On the way out of an interrupted or failed search: record what finished, if MLflow
    lets us; never hide the reason the search ended behind a tracking error."""
    try:
        return driver.finish()
    except Exception as err:
        log.warning("could not record the frontier on the way out (%s); --resume will", err)
        return driver.frontier_rows()


class _Interrupt:
    """SIGINT and SIGTERM while the search runs: the first stops it gracefully (no new trial;
    running trials stopped and queued again; what finished recorded), a second at once."""

    def __init__(self):
        self.name: str | None = None
        self.searcher = None
        self.finishing = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the handlers: Ray's core worker installs its own for SIGTERM when it
        starts in this process, which would end the driver without a word."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(sig, self._handle)
                self._previous.setdefault(sig, previous)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.finishing:  # the trials are over; what is left is writing their end down
            log.warning("%s while the end of the search is recorded: finishing that first",
                        signal.Signals(signum).name)
            return
        if self.name is not None:  # a second signal: stop at once
            raise KeyboardInterrupt
        # The first is only noted (an exception raised at an arbitrary point could land in a
        # library's clean-up): Tune's stopper (``stop_all``) ends its loop, the searcher
        # proposes nothing more, and a search that has not started Tune yet does not.
        self.name = signal.Signals(signum).name
        if self.searcher is not None:
            self.searcher.stop()

    def stop_all(self) -> bool:
        return self.name is not None


def _run_tuner(space, options, state, driver, saved, objectives, seed, cheapest, interrupt) -> None:
    import optuna
    import ray
    from ray import tune

    from optimix.search.driver import callback_class
    from optimix.search.proposals import attempt_seed, grid_points, make_sampler, startup_points
    from optimix.search.searcher import Budget, OptimixSearcher, SignalStopper, point_key, reconcile
    from optimix.search.trainable import board_class, trainable

    search = space.base.search
    attempt = saved["attempts"]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(state.journal)))
    sampler = make_sampler(space, attempt_seed(seed, attempt))
    study = optuna.create_study(study_name=saved["experiment"], storage=storage, sampler=sampler,
                                directions=["maximize" if d == "max" else "minimize" for _, d in objectives],
                                load_if_exists=True)
    reconcile(study, storage, driver.entries, objectives, driver.constraints)
    done = len(driver.entries)
    remaining = search.trials - done
    grid = grid_points(space, seed) if search.sampler == "grid" else None
    if grid is not None:
        remaining = min(remaining, len(grid) - done)
    budget = Budget(search.budget_flops, driver.spent_flops() + driver.lost_flops, cheapest)
    if remaining <= 0 or budget.left() < cheapest or driver.out_of_patience():  # (patience: on --resume)
        return
    if attempt == 0 and grid is None:
        for point in startup_points(space, seed):
            study.enqueue_trial(point)
    known = {}
    for e in driver.entries:
        known[point_key(space, e["point"])] = e["trial_id"]
    searcher = OptimixSearcher(study, space, objectives, budget, driver.record, remaining, known,
                               grid=grid, seed=attempt_seed(seed, attempt), record_lost=driver.record_lost,
                               out_of_patience=driver.out_of_patience, record_infeasible=driver.record_infeasible)
    if hasattr(sampler, "budget_left"):  # the frontier sampler prices its proposals
        sampler.budget_left = budget.left
    _start_ray(options)
    if search.prune == "dominated":
        from optimix.core import frontier

        driver.board = board_class().remote(objectives, search.prune_margin, search.prune_from)
        driver.board.update.remote(frontier.front(driver.candidates(), objectives))
    models_dir = str(state.path / "models") if search.save_models != "none" else None
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, space=space, models_dir=models_dir,
                                                 board=driver.board, snapshots=saved.get("datasets")),
                            {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                    max_concurrent_trials=search.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"ray-{attempt}", storage_path=str(state.path), verbose=0,
            callbacks=[callback_class()(driver, searcher)],
            stop=SignalStopper(interrupt.stop_all),
            # A worker or node that dies (a reclaimed spot node) is tried once more.
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    interrupt.searcher = searcher
    interrupt.arm()
    try:
        if not interrupt.name:  # (a signal while Ray started: nothing more is run)
            tuner.fit()
    finally:
        if driver.board is not None:
            ray.kill(driver.board)
            driver.board = None
        for trial_id in list(searcher.live):  # stopped without an outcome: run again later
            searcher.conclude(trial_id, None, None)


def _tune_environment() -> None:
    """How Tune runs for optimix, set before Ray starts (its processes inherit it)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no console tables: the CLI shows progress
    # A failed trial reports no objective values (never a made-up score): Tune must accept that.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # the interruption is ours: see _Interrupt


def _check_resources(search) -> None:
    """Refuse per-trial CPUs or GPUs that no live node of the Ray cluster has: Tune would wait
    for them forever. (An autoscaling cluster's nodes count once they are up.)"""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for key, resource, asked in (("search.cpus_per_trial", "CPU", search.cpus_per_trial),
                                 ("search.gpus_per_trial", "GPU", search.gpus_per_trial)):
        most = max((float(node.get(resource, 0.0)) for node in nodes), default=0.0)
        if asked > most + 1e-9:
            raise SpaceError(f"{key}: {asked:g} per trial, but the largest node of the Ray cluster has "
                             f"{most:g} {resource}s ({len(nodes)} live nodes): no trial could ever start")


def _start_ray(options: SearchOptions) -> None:
    """Ray for the search: the one already started in this process, the cluster ``--address``
    (or ``RAY_ADDRESS``) names, else a fresh local one, never a `ray start` cluster found by
    chance. (Its gRPC servers listen on every interface, token-authenticated: README, "Running
    safely on shared machines". Ray turns a node IP of 127.0.0.1 into the machine's address,
    so that cannot confine them.) Each worker imports what a trial needs as it starts
    (``optimix.search.warm``), while the driver is still setting up."""
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return
    address = options.address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        _token_auth_on()
    before = reaper.children() if address == "local" else None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False,
                 runtime_env={"worker_process_setup_hook": "optimix.search.warm.preload"})
        if before is not None:  # nothing of it outlives this process, even killed outright
            reaper.watch(before)
    except AuthenticationError as err:  # joining a cluster: the client's mode and token are the user's
        raise SpaceError(f"--address {address}: the Ray cluster refused this client ("
                         f"{str(err).strip().splitlines()[0][:160]}); set RAY_AUTH_MODE=token and "
                         "the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from None


def _token_auth_on() -> None:
    """Token authentication for the Ray this process starts, whatever the Ray release's default
    (off before 2.59) or ``RAY_AUTH_MODE`` say: Ray's servers listen on every interface. Ray
    creates ``~/.ray/auth_token`` if there is none. Ray reads its config once per process, so it
    is read again (as Ray 2.60 does itself when it turns token auth on by default)."""
    from ray._raylet import Config

    mode = os.environ.get("RAY_AUTH_MODE")
    if mode == "token":
        return
    if mode is not None:
        log.warning("RAY_AUTH_MODE=%s: the Ray this search starts uses token authentication all "
                    "the same (its servers listen on every interface)", mode)
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
