"""A SQLite MLflow store, created and migrated by one process at a time.

MLflow's client creates a new SQLite store's tables, and checks an existing store's schema,
when it opens the store. Two processes opening a new store at once both migrate it and leave
it half-done (``table _alembic_tmp_metrics already exists``, then ``out-of-date database
schema`` for everyone after). Every optimix command opens its SQLite store here, holding
``<db>.lock`` (``flock``) beside it while MLflow does that; a migration another process left
half-done is finished (its leftover copies dropped, then ``mlflow db upgrade``), and a store
MLflow will not open is one ``StoreError`` line saying what to do.

MLflow makes a new store by running every schema migration since its first (about 1 s of a
search's start on an idle 2-core machine, more under load; the same work for every store); a new store here starts instead as a copy of an empty store at
this MLflow's schema, built once per MLflow schema in the user's cache (``template``). The
store's own rows (its default experiment, at its own artifact root) are MLflow's to write
when it opens the copy, as for a store it made.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

TMP_TABLE = "_alembic_tmp_"
"""Alembic's copy of a table while a migration rebuilds it (SQLite alters little in place)."""


class StoreError(RuntimeError):
    """The store cannot be opened; the message is one line and says what to do."""


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (None for another store or an in-memory one)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    name = uri[len(prefix):].split("?", 1)[0]
    return None if name in ("", ":memory:") else Path(name).absolute()


@contextlib.contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """Hold ``<db>.lock`` beside the store until the block ends (the kernel drops the
    ``flock`` of a process that dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does for the store itself
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_sqlite(uri: str) -> MlflowClient:
    """MLflow's client of the SQLite store at ``uri``, opened under the store's lock."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    assert path is not None, uri
    with store_lock(path):
        _copy_template(path)
        interrupted = drop_leftover_copies(path)
        try:
            return MlflowClient(tracking_uri=uri)
        except Exception as err:
            behind = "out-of-date database schema" in str(err)
            if not behind:
                raise StoreError(f"MLflow store {uri} cannot be opened: {_one_line(err)}") from None
            if not interrupted:
                raise StoreError(f"MLflow store {uri} has an older schema (an older MLflow made it): "
                                 f"back it up, then run 'mlflow db upgrade {uri}'") from None
        log.warning("MLflow store %s: finishing a schema migration another process left half-done", uri)
        upgrade = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri], capture_output=True,
                                 text=True, check=False)
        if upgrade.returncode != 0:
            last = (upgrade.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
            raise StoreError(f"MLflow store {uri} is half-migrated and 'mlflow db upgrade {uri}' failed: {last}")
        try:
            return MlflowClient(tracking_uri=uri)
        except Exception as err:
            raise StoreError(f"MLflow store {uri} cannot be opened after 'mlflow db upgrade': "
                             f"{_one_line(err)}") from None


def template() -> Path | None:
    """An empty store at this MLflow's schema (its tables, and no experiment), built on first
    use in ``$XDG_CACHE_HOME/optimix`` (``~/.cache/optimix``) under its own lock and named by
    the schema's head revision; built again if it is not at that revision; None where it
    cannot be built (MLflow then migrates the store itself)."""
    try:
        import mlflow.store
        from alembic.script import ScriptDirectory
        from mlflow.tracking import MlflowClient

        head = ScriptDirectory(str(Path(mlflow.store.__file__).parent / "db_migrations")).get_current_head()
        out = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "optimix" / f"mlflow-{head}-empty.db"
        if _revision(out) == head:
            return out
        with store_lock(out):
            if _revision(out) != head:
                building = out.with_name(f"{out.name}.{uuid.uuid4().hex}.tmp")  # MLflow keeps a URI it opened
                try:
                    MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments()
                    with contextlib.closing(sqlite3.connect(building)) as db:
                        db.execute("DELETE FROM experiments")  # the default one, at the template's own root
                        db.commit()
                    os.replace(building, out)
                finally:
                    building.unlink(missing_ok=True)
        return out
    except Exception as err:  # a shortcut only: without it, MLflow does the same work
        log.debug("no MLflow store template: %s", _one_line(err))
        return None


def _revision(path: Path) -> str | None:
    """The schema revision of the store at ``path`` (None: no store there, or not a store)."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    except (sqlite3.Error, TypeError):
        return None


def _copy_template(path: Path) -> None:
    """Start a new store at ``path`` as a copy of the template (``template``), if there is one."""
    if path.exists() and path.stat().st_size > 0:
        return
    source = template()
    if source is not None:
        copy = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, copy)
        os.replace(copy, path)


def drop_leftover_copies(path: Path) -> bool:
    """Drop the ``_alembic_tmp_*`` copies an interrupted migration left beside their tables;
    True if there were any. A copy whose table is gone holds that table's rows: one line."""
    if not path.exists():
        return False
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        leftovers = sorted(t for t in tables if t.startswith(TMP_TABLE))
        for table in leftovers:
            if table[len(TMP_TABLE):] not in tables:
                raise StoreError(f"MLflow store {path} is half-migrated: table {table[len(TMP_TABLE):]} is "
                                 f"missing and {table} holds its rows; restore a backup, then run "
                                 f"'mlflow db upgrade sqlite:///{path}'")
        for table in leftovers:
            log.info("MLflow store %s: dropping %s, left by an interrupted migration", path, table)
            db.execute(f'DROP TABLE "{table}"')
        db.commit()
    return bool(leftovers)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
