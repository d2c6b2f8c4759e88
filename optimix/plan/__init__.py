"""The answers and pictures built on recorded trials: planning queries (``plan``,
``plan_table``), their validation (``validate``) and verification by training (``verify``),
and the frontier plots (``plots``).

May import: ``optimix.core``, ``optimix.trial`` and ``optimix.records.records``; never Ray or
Optuna (``optimix.search`` is above it)."""
