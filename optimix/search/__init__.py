"""``optimix search``: Ray Tune runs the trials, Optuna proposes them, MLflow records them.

The package holds everything that imports Ray or Optuna:

- ``run``: ``run_search`` from start to end or interruption, and ``--resume``;
- ``searcher``: optimix's Tune searcher on Optuna's ask/tell (budget, every point once,
  the ledger written before Optuna is told);
- ``proposals``: dimensions as Optuna distributions, grid points, first points, samplers;
- ``frontier_sampler``: the sampler that proposes the most expected frontier gain per FLOP;
- ``trainable``: what runs in a Ray worker;
- ``driver``: the ledger and MLflow as trials finish, the frontier tags, progress;
- ``ledger``: the search's folder (state, ledger, journal, lock);
- ``reaper``: nothing of the in-process Ray outlives a driver killed outright;
- ``check`` and ``check_record``: ``optimix check``, the invariants of a recorded search and
  what it reads (the ledger, MLflow runs through ``optimix.records.records``, the Optuna journal).

Importing this package imports neither Ray nor Optuna; its modules do.
"""

from optimix.search.ledger import SearchState
from optimix.search.proposals import (
    cheapest_flops,
    check_budget,
    distributions,
    effective_key,
    grid_size,
    grid_values,
    make_sampler,
    trial_flops,
)
from optimix.search.run import SearchInterrupted, SearchOptions, SearchSummary, run_search

__all__ = ["SearchInterrupted", "SearchOptions", "SearchState", "SearchSummary", "cheapest_flops",
           "check_budget", "distributions", "effective_key", "grid_size", "grid_values", "make_sampler", "run_search",
           "trial_flops"]
