"""A ledger entry: one finished trial as a search's ledger (``results.jsonl``) records it.

Built once (the search driver, as a trial ends), written and read back here only
(``to_json``, ``from_json``), and handed on as this type: to the budget, the frontier,
MLflow, the plots and ``optimix check``. The JSON of a line is the one every search has
written: ``trial_id``, ``index``, ``name``, ``status``, ``error``, ``point``, ``params``,
``result``, ``node``, then ``missed`` and ``model_dir`` where there are any. Pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optimix.core.metrics import FAILED, INFEASIBLE, OK, PRUNED, final_metrics

STATUSES = (OK, FAILED, INFEASIBLE, PRUNED)
_RESULT_NUMBERS = ("train_flops", "params", "non_embedding_params", "tokens", "wall_s", "train_s",
                   "tokens_per_s")


@dataclass
class LedgerEntry:
    """One finished trial (``ok``, ``failed``, ``infeasible`` or ``pruned``)."""

    trial_id: str
    status: str
    result: dict[str, Any]
    """The trial's result document (``TrialResult.to_dict()``, completed by the driver)."""
    point: dict[str, Any] = field(default_factory=dict)
    """The searched values."""
    params: dict[str, Any] = field(default_factory=dict)
    """The resolved config's dotted keys (the MLflow params)."""
    index: int = 0
    name: str = ""
    error: str | None = None
    node: str | None = None
    missed: list[str] | None = None
    """The constraints an ``ok`` trial missed (written where the search has constraints)."""
    model_dir: str | None = None
    run_id: str | None = None
    """The MLflow run it was logged to: not in its line (a later ``logged`` line says it)."""

    @property
    def train_flops(self) -> float:
        """What the trial spent (what the budget is charged)."""
        return float(self.result["train_flops"])

    def final_metrics(self) -> dict[str, float]:
        return final_metrics(self.result)

    def to_json(self) -> dict[str, Any]:
        """The ledger line, as every search has written it."""
        out = {"trial_id": self.trial_id, "index": self.index, "name": self.name, "status": self.status,
               "error": self.error, "point": self.point, "params": self.params, "result": self.result,
               "node": self.node}
        if self.missed is not None:
            out["missed"] = self.missed
        if self.model_dir:
            out["model_dir"] = self.model_dir
        return out

    @classmethod
    def from_json(cls, line: Mapping[str, Any], run_id: str | None = None) -> LedgerEntry:
        """A trial line read back; ``ValueError`` saying what is wrong with it. Lines of
        older searches (without ``index``, ``name`` or ``node``) read too."""
        check_text(line, "trial_id")
        if line.get("status") not in STATUSES:
            raise ValueError(f"status is {shown(line.get('status'))}, not one of {', '.join(STATUSES)}")
        for key in ("point", "params", "result"):
            if not isinstance(line.get(key), dict):
                raise ValueError(f"{key} is {shown(line.get(key))}, not an object")
        result = line["result"]
        for key in _RESULT_NUMBERS:
            check_count(result, key, "result.")
        for key in ("accuracy", "loss"):
            values = result.get(key, {})
            if not isinstance(values, dict):
                raise ValueError(f"result.{key} is {shown(values)}, not an object")
            for task, value in values.items():
                if not is_number(value):
                    raise ValueError(f"result.{key}.{task} is {shown(value)}, not a number")
        return cls(trial_id=line["trial_id"], status=line["status"], result=dict(result),
                   point=dict(line["point"]), params=dict(line["params"]), index=int(line.get("index", 0)),
                   name=str(line.get("name", "")), error=line.get("error"), node=line.get("node"),
                   missed=line.get("missed"), model_dir=line.get("model_dir"), run_id=run_id)


def check_text(entry: Mapping[str, Any], key: str) -> None:
    if not isinstance(entry.get(key), str) or not entry[key]:
        raise ValueError(f"{key} is {shown(entry.get(key))}, not a non-empty string")


def check_count(entry: Mapping[str, Any], key: str, where: str = "") -> None:
    value = entry.get(key)
    if not is_number(value) or not math.isfinite(value) or value < 0:
        said = "missing" if key not in entry else f"{shown(value)}"
        raise ValueError(f"{where}{key} is {said}, not a finite number >= 0")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
