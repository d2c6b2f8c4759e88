"""Dataset paths: a local file or folder made absolute, else a hub name (``space._check_files``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimix.core.config import SpaceError, first_line


def local_path(value: Any, key: str, base_dir: Path) -> Any:
    """A dataset path made absolute when it is local: it exists (a file or a folder, whatever
    its suffix) or looks like a file path (then it must exist). Else a hub name, unchanged."""
    if not isinstance(value, str):
        return value  # the config's validation names a path that is not text
    try:
        resolved = resolve_data_path(value, base_dir)
        exists = resolved.exists()
    except (OSError, RuntimeError, ValueError) as err:
        raise SpaceError(f"{key}: unusable path ({first_line(err)})") from None
    if exists:
        return str(resolved)
    if _looks_local(value):
        raise SpaceError(f"{key}: no such file {value!r}")
    return value


def check_revision(name: str, task: dict) -> None:
    """A dataset task's ``revision`` belongs to one fixed hub name (after ``local_path``)."""
    if task.get("kind") != "dataset" or task.get("revision") is None:
        return
    key, path = f"tasks.{name}.revision", task.get("path")
    if isinstance(task["revision"], dict):
        raise SpaceError(f"{key}: cannot be a search dimension (a search reads one snapshot)")
    if isinstance(path, dict):
        raise SpaceError(f"{key}: needs a fixed hub dataset in tasks.{name}.path, not a search dimension")
    if isinstance(path, str) and Path(path).is_absolute():
        raise SpaceError(f"{key}: only a hub dataset has a revision; {path!r} is a local path")


def _looks_local(path: str) -> bool:
    """Whether a path that does not exist still names a file (a data suffix, or ``/``, ``.``,
    ``~`` in front) rather than a hub dataset."""
    return Path(path).suffix.lower() in _DATA_SUFFIXES or path.startswith(("/", ".", "~"))


_DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet"}


def resolve_data_path(path: str, base_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        here = (Path.cwd() / candidate).resolve()
        candidate = here if here.exists() else (base_dir / candidate).resolve()
    return candidate.resolve()


def sniff_builder(path: Path) -> str:
    """The ``datasets`` builder for a file without a known suffix, from its first bytes."""
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    return "json" if head.lstrip()[:1] in (b"{", b"[") else "csv"
