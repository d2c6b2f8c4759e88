"""A search's folder on disk: its state, its ledger of finished trials, its lock.

``<storage>/<experiment>/<stamp>/`` holds

- ``state.json``: the parent run, the resolved space, how many attempts ran, how the last
  one ended (``running``, ``finished``, ``interrupted``, ``failed``);
- ``results.jsonl``: the ledger, one line per finished trial (written, flushed and fsynced
  before Optuna or MLflow hear of the trial) and one ``{"logged": trial_id, "run_id": ...}``
  line once its MLflow run is complete;
- ``optuna.journal``: the Optuna study;
- ``lock``: held (``flock``) by the driver while it runs, so that a second driver on the
  same folder (a ``--resume`` while the search still runs) is refused.

``<storage>/<experiment>/latest`` names the newest stamp.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optimix.core import faults
from optimix.core.config import SpaceError
from optimix.core.entry import LedgerEntry, check_count, check_text, shown

log = logging.getLogger(__name__)

LEDGER = "results.jsonl"
_LEDGER_LOCK = threading.Lock()  # ledger lines come from Tune's loop and the MLflow thread


def slug(name: str) -> str:
    """A folder name for an experiment: never ``..``, never a path of several parts; one
    per name (``rt b`` and ``rt_b`` never share a folder).

    A name made of letters, digits and ``-_.`` only (not starting with ``.``) is its own
    folder, as it always was, so a search recorded before still resumes. Any other name
    becomes those characters (others replaced by ``_``) plus ``@`` and a hash of the exact
    name: no name of the first kind has an ``@``, and the hash tells the others apart.
    """
    text = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    if name and text == name and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{text[:_MAX_NAME - 13] or 'search'}@{digest}"


_MAX_NAME = 200
"""Longest folder name kept as the experiment's name (file systems allow 255 bytes)."""


@dataclass
class RunState:
    """``state.json``: the parent run, the resolved space, how many attempts ran and how the
    last one ended. Read and written as this type (``SearchState.load``, ``save``)."""

    parent_run_id: str | None = None
    experiment: str | None = None
    tracking_uri: str | None = None
    attempts: int = -1
    space: dict[str, Any] | None = None
    status: str = "running"
    datasets: dict[str, Any] = field(default_factory=dict)
    """The hub datasets' pinned commits (``optimix.trial.hub``)."""
    ended: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RunState:
        return cls(parent_run_id=doc.get("parent_run_id"), experiment=doc.get("experiment"),
                   tracking_uri=doc.get("tracking_uri"), attempts=int(doc.get("attempts", -1)),
                   space=doc.get("space"), status=doc.get("status", "running"),
                   datasets=dict(doc.get("datasets") or {}), ended=doc.get("ended"))

    def to_json(self) -> dict[str, Any]:
        out = {"parent_run_id": self.parent_run_id, "experiment": self.experiment,
               "tracking_uri": self.tracking_uri, "attempts": self.attempts, "space": self.space,
               "status": self.status, "datasets": self.datasets}
        return out if self.ended is None else {**out, "ended": self.ended}


@dataclass
class SearchState:
    """A search's directory: ``state.json``, ``results.jsonl`` (ledger), ``optuna.journal``."""

    path: Path
    _lock_fd: int | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, storage: Path, experiment: str) -> SearchState:
        root = _root(storage, experiment)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = root / stamp
        path.mkdir(parents=True)
        tmp = root / "latest.tmp"
        tmp.write_text(stamp)
        os.replace(tmp, root / "latest")
        return cls(path)

    @classmethod
    def latest(cls, storage: Path, experiment: str) -> SearchState:
        root = _root(storage, experiment)
        try:
            stamp = (root / "latest").read_text().strip()
        except OSError:
            raise SpaceError(f"--resume: no search of {experiment!r} under {storage}") from None
        if not stamp or not (root / stamp).is_dir():
            raise SpaceError(f"--resume: the latest search of {experiment!r} ({root / stamp}) is gone; "
                             "drop --resume for a new search")
        return cls(root / stamp)

    @property
    def journal(self) -> Path:
        return self.path / "optuna.journal"

    @property
    def ledger(self) -> Path:
        return self.path / LEDGER

    # -- the lock ----------------------------------------------------------------------------

    def acquire(self) -> None:
        """Hold the folder's lock until ``release`` (or the process ends: the kernel drops a
        ``flock`` of a dead process, so a killed driver never leaves the folder locked)."""
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SpaceError(f"--resume: the search in {self.path} is still running (pid {holder}); "
                             "wait for it to end or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def running(self) -> bool:
        """Whether a driver holds the lock now (for readers such as ``optimix check``)."""
        try:
            fd = os.open(self.path / "lock", os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # -- state.json --------------------------------------------------------------------------

    def read(self) -> dict | None:
        """The saved state, or None if the search was stopped before writing it."""
        try:
            return json.loads((self.path / "state.json").read_text())
        except FileNotFoundError:
            return None

    def load(self) -> RunState | None:
        """``state.json`` as a ``RunState``, or None if the search stopped before writing it."""
        doc = self.read()
        return None if doc is None else RunState.from_json(doc)

    def save(self, state: RunState) -> None:
        self.write(state.to_json())

    def write(self, state: Mapping[str, Any]) -> None:
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.path / "state.json")

    # -- the ledger --------------------------------------------------------------------------

    def append(self, entry: LedgerEntry) -> None:
        """A finished trial's line, fsynced before anyone else hears of the trial."""
        self._write(entry.to_json())

    def append_logged(self, trial_id: str, run_id: str) -> None:
        """The trial's MLflow run is complete."""
        self._write({"logged": trial_id, "run_id": run_id})

    def append_interrupted(self, trial_id: str, train_flops: float) -> None:
        """An attempt stopped before it finished: no result, but its compute is spent."""
        self._write({"interrupted": trial_id, "train_flops": train_flops})

    def _write(self, entry: Mapping[str, Any]) -> None:
        line = (json.dumps(entry) + "\n").encode()
        with _LEDGER_LOCK, open(self.ledger, "ab") as f:
            if f.tell() and not _ends_with_newline(self.ledger):
                self._cut_torn_tail(f)  # never glue this line onto a torn one
            if "trial_id" in entry and faults.armed("torn_ledger"):
                f.write(line[: len(line) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def repair(self) -> int:
        """Cut a torn last line (a driver killed while writing it); returns the bytes cut.

        The trial it described was never told to Optuna (the ledger is written first), so
        the resumed search runs it again."""
        if not self.ledger.exists():
            return 0
        with _LEDGER_LOCK, open(self.ledger, "ab") as f:
            return self._cut_torn_tail(f)

    def _cut_torn_tail(self, f) -> int:
        data = self.ledger.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        log.warning("cut a torn last line (%d bytes) from %s", len(data) - keep, self.ledger)
        return len(data) - keep

    def entries(self) -> list[dict]:
        """Ledger lines as written (JSON objects, for readers such as ``optimix check``; the
        search reads ``trials``), each checked: a malformed one raises ``LedgerError`` (the file, the
        line and what is wrong); a torn last line (killed mid-write) is left out."""
        lines, errors = self.read_lines()
        if errors:
            raise errors[0]
        return lines

    def read_lines(self) -> tuple[list[dict], list[LedgerError]]:
        """The well-formed ledger lines, and a ``LedgerError`` for each malformed one (for
        readers such as ``optimix check``, which report them all and go on with the rest)."""
        if not self.ledger.exists():
            return [], []
        data = self.ledger.read_bytes()
        raw = data.split(b"\n")
        torn = raw.pop()  # after the last newline: empty, or a line cut mid-write
        out, errors = [], []
        for number, line in enumerate(raw, start=1):
            try:
                out.append(parse_line(line))
            except ValueError as err:
                errors.append(LedgerError(f"{self.ledger}: line {number}: {err}"))
        if torn:
            try:
                out.append(parse_line(torn))  # whole but unterminated: a line like any other
            except ValueError:
                log.warning("ignoring a torn last line (%d bytes) in %s", len(torn), self.ledger)
        return out, errors

    def lost_flops(self) -> float:
        """FLOPs of attempts stopped before they finished (rerun later; no result)."""
        return sum(float(e["train_flops"]) for e in self.entries() if "interrupted" in e)

    def trials(self) -> list[LedgerEntry]:
        """The finished trials in the ledger, each with the MLflow run it was logged to
        (``run_id``, None until then); a trial written twice counts once."""
        lines = self.entries()
        logged = {e["logged"]: e["run_id"] for e in lines if "logged" in e}
        out, seen = [], set()
        for e in lines:
            if "trial_id" in e and e["trial_id"] not in seen:
                seen.add(e["trial_id"])
                out.append(LedgerEntry.from_json(e, run_id=logged.get(e["trial_id"])))
        return out


class LedgerError(SpaceError):
    """A ledger line that optimix did not write: one line naming the file, the line number
    and what is wrong (``--resume`` refuses the search; ``optimix check`` reports it)."""


def parse_line(line: bytes) -> dict:
    """One ledger line as written by ``SearchState``: a trial (``LedgerEntry.from_json`` checks
    it), ``logged`` or ``interrupted`` line. Raises ``ValueError`` saying what is wrong with it."""
    try:
        entry = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{shown(entry)} is not a ledger line (a JSON object)")
    if "trial_id" in entry:
        LedgerEntry.from_json(entry)
    elif "logged" in entry:
        check_text(entry, "logged")
        check_text(entry, "run_id")
    elif "interrupted" in entry:
        check_text(entry, "interrupted")
        check_count(entry, "train_flops")
    else:
        raise ValueError("an object with none of trial_id, logged, interrupted: not a ledger line")
    return entry


def _root(storage: Path, experiment: str) -> Path:
    root = (storage / slug(experiment)).resolve()
    if storage.resolve() not in root.parents:
        raise SpaceError(f"--experiment: {experiment!r} does not name a folder under {storage}")
    return root


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
