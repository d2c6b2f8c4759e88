"""The base of every config section, and the one error bad input raises (with the dotted key
it names). A leaf: pydantic only."""

from __future__ import annotations

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
