"""Ray for a search: the interruption it notes (SIGINT, SIGTERM), how Tune runs, the Ray it
joins or starts (token-authenticated), and the resources it checks before any trial."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import optimix.search.reaper as reaper
from optimix.core.config import SpaceError

log = logging.getLogger(__name__)


class Interrupt:
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

    def watch(self, searcher) -> None:
        """The searcher a first signal stops proposing; the handlers installed again (Tune
        and Ray may have installed theirs)."""
        self.searcher = searcher
        self.arm()

    def finish(self) -> None:
        """The trials are over: from here on a signal is noted, and the end recorded whole."""
        self.finishing = True


def tune_environment() -> None:
    """How Tune runs for optimix, set before Ray starts (its processes inherit it)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no console tables: the CLI shows progress
    # A failed trial reports no objective values (never a made-up score): Tune must accept that.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # the interruption is ours: see Interrupt
    # Every result is recorded by optimix (the ledger, MLflow): no per-trial CSV, JSON and
    # TensorBoard files from Tune, and no import of torch in the driver for TensorBoard's writer
    # (about 1.5 s of a search's start). Tune then says at the end that it found no metric files.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    logging.getLogger("ray.tune.analysis.experiment_analysis").addFilter(_not_missing_metric_files)


def _not_missing_metric_files(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Failed to fetch metrics")


def check_resources(search) -> None:
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


def start_ray(address: str | None) -> None:
    """Ray for the search, ``tune_environment`` set first: the one already started in this
    process, the cluster ``--address`` (or ``RAY_ADDRESS``) names, else a fresh local one, never
    a `ray start` cluster found by chance. (Its gRPC servers listen on every interface,
    token-authenticated: README, "Running safely on shared machines". Ray turns a node IP of
    127.0.0.1 into the machine's address, so that cannot confine them.) Each worker imports
    what a trial needs as it starts (``optimix.search.warm``).

    A local Ray prestarts no default workers: Tune gives each trial actor a runtime env of
    its own, so none of them could ever run a trial, and on a small machine they took CPU
    from the driver's start (about 1 CPU-s a search) and from the trials while idle."""
    import ray
    from ray.exceptions import AuthenticationError

    tune_environment()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        _token_auth_on()
        os.environ.setdefault("RAY_prestart_worker_first_driver", "0")  # the raylet reads it
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


def stop_ray() -> None:
    """Shut down the Ray this process started or joined."""
    import ray

    ray.shutdown()


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
