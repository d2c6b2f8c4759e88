"""One trial, without Ray or MLflow: its tasks and their data (``tasks``, ``text_task``,
``hub``), the training mixture (``mixture``), the model (``model``), the training loop and
its monitor (``train``, ``stacked``, ``monitor``), evaluation (``evaluate``) and the card a
saved model carries (``card``). ``train.run_trial(config) -> TrialResult`` runs anywhere.

May import: ``optimix.core`` (and torch, transformers, datasets)."""
