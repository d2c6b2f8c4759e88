"""The base of every config section, and the one error bad input raises (with the dotted key
it names), and what a field means to a search (``FieldMeaning``). A leaf: pydantic only."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict

# ---------------------------------------------------------------------------------------------
# Errors


class SpaceError(ValueError):
    """A search space that cannot be used; the message is one line naming the key."""

    def __init__(self, message: str):
        # Keys and values can hold line breaks: keep the message on one line.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class KeyedError(ValueError):
    """A cross-field check that knows which dotted key is at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class StrictModel(BaseModel):
    """A config section: unknown keys and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# What a field means to a search: declared on the field, looked up by dotted key


@dataclass(frozen=True)
class FieldMeaning:
    """What a config field means beyond its value. Declared beside the field
    (``Field(..., json_schema_extra=PER_MODEL)``); a section's meaning holds for every entry
    in it unless an entry says otherwise. A new field needs no decision elsewhere."""

    trains: bool = True
    """Part of what a trial trains (``budget.effective_key``); a field that does not (how the
    search runs, the cost profile, the name) cannot be a search dimension either."""
    as_shape: bool = False
    """Enters what a trial trains as the model shape it builds (two ``model.params`` that
    round to one shape are one model)."""
    bursts_only: bool = False
    """Changes what is trained only when the rare task is delivered in bursts."""
    length: bool = False
    """Sets how long the trial trains: a stacked group shares it as the steps it buys
    (``Plan.steps``), not as its value."""
    per_model: bool = False
    """May differ between the models of one stacked group (``optimix.trial.stacked``)."""
    resumable: bool = False
    """May change on ``--resume`` (how much the search may still spend, how it runs); any
    other change would mix two searches under one parent run."""


_META = "optimix"


def means(**flags: bool) -> dict[str, Any]:
    """A field's ``json_schema_extra`` declaring ``FieldMeaning`` flags."""
    unknown = set(flags) - {f.name for f in fields(FieldMeaning)}
    if unknown:
        raise TypeError(f"not a field meaning: {', '.join(sorted(unknown))}")
    return {_META: flags}


NOT_TRAINED = means(trains=False)
AS_SHAPE = means(as_shape=True)
BURSTS_ONLY = means(bursts_only=True)
LENGTH = means(length=True)
PER_MODEL = means(per_model=True)
RESUMABLE = means(resumable=True)


def field_meaning(model: type[BaseModel], key: str) -> FieldMeaning:
    """The meaning of dotted ``key`` in ``model``: its field's flags over its sections'. Inside
    a mapping (``tasks.<name>...``) the mapping's field decides."""
    flags: dict[str, bool] = {}
    node: Any = model
    for part in key.split("."):
        info = node.model_fields.get(part) if node is not None else None
        if info is None:
            break
        extra = info.json_schema_extra
        flags.update(extra.get(_META, {}) if isinstance(extra, dict) else {})
        node = _section(info.annotation)
    return FieldMeaning(**flags)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds (``X`` or ``X | None``), or None for a value."""
    for kind in (annotation, *get_args(annotation)):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None
