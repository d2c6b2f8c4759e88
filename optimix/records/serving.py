"""Saved models as MLflow models: served by ``mlflow models serve``, kept in the model registry.

A trial's model is a ``save_pretrained`` folder (weights and tokenizer) with ``optimix.json``,
which says how each task's prompts are written (``optimix.trial.card``). ``pyfunc_model`` wraps the
folder as an MLflow pyfunc whose code is ``optimix/records/served_model.py`` (MLflow's "models from
code": the model carries it, so loading it needs no optimix); the tracker logs it as the run's
``model`` artifact, and ``register`` adds a run's model to the registry under a name.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from optimix.trial.card import CARD

SERVED = Path(__file__).with_name("served_model.py")


def pyfunc_model(model_dir: str | Path, out: str | Path) -> Path:
    """An MLflow pyfunc model at ``out`` (a new folder) that answers prompts with ``model_dir``."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    signature = ModelSignature(inputs=Schema([ColSpec("string", "task"), ColSpec("string", "prompt")]),
                               outputs=Schema([ColSpec("string")]))
    card = json.loads((Path(model_dir) / CARD).read_text())["tasks"]
    example = [{"task": name, "prompt": spec["example"]["prompt"]}
               for name, spec in card.items() if "example" in spec][:1]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.pyfunc.save_model(str(out), python_model=str(SERVED), artifacts={"hf": str(model_dir)},
                             signature=signature, input_example=example or None,
                             pip_requirements=_requirements())
    return out


def _requirements() -> list[str]:
    """What the served code imports, at the versions that saved it (no inference: that would
    load the model in a subprocess for every save)."""
    return [f"{name}=={metadata.version(name)}" for name in ("mlflow", "torch", "transformers", "pandas")]


def register(client, run_id: str, name: str) -> Any:
    """A new version of registered model ``name`` from run ``run_id``'s ``model``; MLflow's
    refusal (a name it does not take, say) as a one-line ``ValueError``."""
    from mlflow.exceptions import MlflowException

    try:
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(err):
                raise
        source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/model"
        return client.create_model_version(name, source, run_id=run_id)
    except MlflowException as err:
        raise ValueError(f"--register: {str(err).splitlines()[0]}") from None


def pick_trial(client, record, run: str | None):
    """The trial whose model to register: ``run`` (a trial's run id or trial id), else the
    frontier's final result best in the first objective that kept a model. Raises
    ``ValueError`` with a one-line reason."""
    trials = record.trials
    if run is not None:
        found = [t for t in trials if run in (t.run_id, t.trial_id)]
        if not found:
            raise ValueError(f"--run: {run!r} is not a trial of search {record.run_id}")
        if not has_model(client, found[0].run_id):
            raise ValueError(f"--run: run {found[0].run_id} kept no MLflow model (search.save_models: "
                             "frontier keeps the frontier's, all keeps every trial's)")
        return found[0]
    metric, direction = record.objectives[0].metric, record.objectives[0].mode
    on = [t for t in trials if t.status == "ok" and t.pareto and metric in t.metrics]
    on.sort(key=lambda t: t.metrics[metric], reverse=direction == "max")
    for trial in on:
        if has_model(client, trial.run_id):
            return trial
    if not on:
        curve = [f"{t.trial_id} at step {step}" for t in trials for step in t.pareto_steps]
        if curve:  # save_models keeps what a trial ends with; a curve point is a trial mid-way
            raise ValueError(f"--register: the frontier of search {record.run_id} is learning-curve "
                             f"points only ({', '.join(curve[:3])}{', ...' if len(curve) > 3 else ''}), "
                             "and a curve point's weights are not kept; give --run ID to register a "
                             "finished trial's model (search.save_models: all keeps every trial's)")
        raise ValueError(f"--register: search {record.run_id} has no finished trial on its frontier")
    raise ValueError(f"--register: no frontier trial of search {record.run_id} kept an MLflow model "
                     "(set search.save_models: frontier and search again)")


def has_model(client, run_id: str) -> bool:
    """Whether the run's ``model`` artifact is an MLflow model (older searches kept a bare
    ``save_pretrained`` folder there)."""
    return any(a.path == "model/MLmodel" for a in client.list_artifacts(run_id, "model"))
