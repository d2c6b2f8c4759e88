"""The records in MLflow: writing a search's runs (``tracking``), reading them back
(``records``), the client and its store (``mlflow_client``, ``mlflow_store``), and saved
models as MLflow pyfunc models (``serving``; ``served_model`` is the model's own code, which
imports nothing of optimix).

May import: ``optimix.core`` and ``optimix.trial`` (and MLflow)."""
