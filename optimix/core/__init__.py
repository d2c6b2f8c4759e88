"""The pure cores: numbers in, numbers out. Typed configs and the search space
(``config``, ``task_specs``, ``space``, ``data_paths``), metric names and objectives
(``metrics``), what a trial costs before it runs (``budget``, ``flops``, ``hardware``), the
Pareto frontier (``pareto``, ``frontier``), the planning fits (``fit``, ``law``,
``logistic``, ``outlook``), the regime a grow-or-boost answer stands in (``regime``) and the
kill points of the fault benchmark (``faults``).

May import: only each other (and numpy, pydantic, yaml). Never torch, transformers,
datasets, Ray, Optuna or MLflow (``tests/test_house.py`` checks it)."""
