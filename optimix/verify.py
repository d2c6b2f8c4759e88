"""``optimix plan --verify``: the recommended config trained as a trial, its accuracy
predicted against achieved.

The trial is the recorded trial nearest in size, moved to the recommendation: its params
(the config keys it logged) make the tree, the recommended frequency, tokens and size replace
its own (``verify_tree``). Training runs ``optimix.train.run_trial``, with no Ray or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from optimix.fit import PlanError, TrialTable
from optimix.plan import Config


def verify(doc: Mapping[str, Any], table: TrialTable, trials: list[Any]) -> dict[str, Any]:
    """Train ``doc``'s predicted config (an ``optimix.plan.answer`` document with ``task`` and
    ``metric``); ``trials`` are the table's records (``records.TrialRecord``), row for row."""
    from optimix.space import build_space
    from optimix.train import plan_trial, run_trial

    predicted = doc.get("predicted")
    if not predicted:
        raise PlanError("--verify: there is no predicted config to train "
                        + (f"({doc['predicted_error']})" if doc.get("predicted_error") else
                           "(give --budget-flops or --target-acc)"))
    config = Config(**{k: float(v) for k, v in predicted["config"].items()})
    row = nearest_size(table, config.params)
    base = trials[row]
    recorded = float(table.params[row])
    trial = build_space(verify_tree(base.params, config, recorded)).base
    built = plan_trial(trial).shape.params
    if same_size(config.params, recorded) and built != round(recorded):
        raise PlanError(f"--verify: run {base.run_id}'s recorded config builds {built:,} params, "
                        f"the run recorded {recorded:,.0f} (its data or code changed since)")
    result = run_trial(trial)
    achieved = result.accuracy.get(doc["task"]) if result.status == "ok" else None
    lo, hi = predicted["interval"] or (None, None)
    return {"status": result.status, "error": result.error, "shape_from": base.run_id,
            "params": result.params, "tokens": result.tokens, "train_flops": result.train_flops,
            "predicted": predicted[doc["metric"]], "interval": predicted["interval"],
            "achieved": achieved, "wall_s": result.wall_s,
            "within_interval": None if achieved is None or lo is None else bool(lo <= achieved <= hi)}


def verify_tree(params: Mapping[str, str], config: Config, recorded_params: float) -> dict[str, Any]:
    """A trial config tree from a recorded trial's params (dotted key -> text), moved to ``config``.

    The recorded trial should be the one nearest in size. Params that are not config keys
    (``shape.*``: the shape the trial built) stay out of the tree. When the recommended size is
    the trial's own, its recorded shape is pinned (``model.d_model`` etc., no ``model.params``),
    so the tree builds the model that trained; else ``model.params`` sets the size by
    optimix's shape rule. Tokens are fixed (``train.tokens``), never derived from ``train.flops``.
    """
    from optimix.config import TrialConfig

    tree: dict[str, Any] = {}
    for key, text in params.items():
        if key.split(".")[0] not in TrialConfig.model_fields:
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _param_value(text)
    tree.setdefault("mixture", {})["rare_freq"] = config.rare_freq
    train = tree.setdefault("train", {})
    train["tokens"], train["flops"] = max(1, round(config.tokens)), None
    model = tree.setdefault("model", {})
    if not same_size(config.params, recorded_params):
        model["params"] = max(1000, round(config.params))
    elif all(f"shape.{name}" in params for name in _SHAPE_KEYS):
        model.update({name: int(params[f"shape.{name}"]) for name in _SHAPE_KEYS}, params=None)
    tree.pop("search", None)
    return tree


_SHAPE_KEYS = ("d_model", "n_layer", "n_head", "d_ff")


def same_size(params: float, recorded_params: float) -> bool:
    """Whether a recommended size is the recorded trial's own (to 0.1%): verify keeps its shape."""
    return abs(math.log(params / recorded_params)) <= 1e-3


def _param_value(text: str) -> Any:
    """A logged param's value: ``None``, a list or mapping (JSON, or YAML flow as in
    ``['facts']``), else the text itself.

    The typed config reads the text (``"64"`` as 64, ``"False"`` as False where those are the
    field's types), so a string field keeps its text whatever it looks like (``"on"``, ``"1"``).
    """
    from optimix.config import SpaceError
    from optimix.space import parse_override

    if text == "None":
        return None
    if text.startswith(("[", "{")):
        try:
            value = parse_override(f"value={text}")[1]
        except SpaceError:
            return text
        return value if isinstance(value, list | dict) else text
    return text


def nearest_size(table: TrialTable, params: float) -> int:
    """Row of the usable trial whose size is nearest (in log) to ``params``."""
    rows = table.usable_rows()
    return int(rows[np.argmin(np.abs(np.log(table.params[rows]) - math.log(params)))])

