"""Hub datasets, pinned and read once: a ``dataset`` task whose ``path`` names a hub dataset.

A search's driver resolves each such task's ``revision`` (a branch, a tag, a commit, or
nothing: the default branch) to a commit, loads that commit's ``split`` once through
``datasets`` and writes it to a Parquet snapshot in the experiment's folder
(``<storage>/<experiment>/datasets/``, one file per dataset, commit and split). The space it
runs carries the commit as the task's ``revision``, so every trial's params record it; the
snapshots are registered (``use``) in the driver and in every worker, where
``optimix.trial.tasks`` reads them instead of the hub. ``--resume`` takes the commits recorded in
``state.json``, so it trains on the same rows however the dataset has moved on since.
``optimix train`` pins the same way (``pin_config``) and loads that commit from the hub.

No remote code runs: ``datasets`` 4 and later have no loading scripts, and nothing here
passes ``trust_remote_code``. Without the hub, a commit already in the local Hugging Face
cache is found with ``HF_HUB_OFFLINE=1`` (its ``refs/`` file); every failure is one
``SpaceError`` line naming the task's key and the dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optimix.core.config import DatasetTask, SpaceError, TrialConfig, first_line

log = logging.getLogger(__name__)

_DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SNAPSHOTS: dict[tuple[str, str, str], str] = {}
"""(hub name, commit, split) -> the local Parquet snapshot this process reads (``use``)."""


def is_hub(path: str) -> bool:
    """Whether a dataset task's ``path`` names a hub dataset: not a local file or folder (a
    loaded space makes those absolute) and without a data file's suffix."""
    candidate = Path(path)
    return not (candidate.is_absolute() or candidate.suffix.lower() in _DATA_SUFFIXES or candidate.exists())


def use(pins: Mapping[str, Mapping[str, Any]]) -> None:
    """Read these snapshots (``pin_space``'s record: task -> path, commit, split, file) in
    place of the hub, in this process."""
    for pin in pins.values():
        if pin["file"]:
            _SNAPSHOTS[(pin["path"], pin["commit"], pin["split"])] = pin["file"]


def local_copy(path: str, revision: str | None, split: str) -> str | None:
    """The snapshot registered for a hub dataset's commit and split, if any."""
    return _SNAPSHOTS.get((path, revision or "", split))


def load(path: str, revision: str | None, split: str):
    """A hub dataset's split at ``revision`` (or a local folder's files) through ``datasets``."""
    import datasets

    return datasets.load_dataset(path, revision=revision, split=split)


def pin_space(space, folder: Path | None, recorded: Mapping[str, Mapping[str, Any]] | None = None):
    """(the space with every hub task's ``revision`` set to its commit, the record of the
    pins: task -> path, revision asked for, commit, split, snapshot file). A pin in
    ``recorded`` (an earlier attempt's) is kept when it asked for the same path, revision and
    split; every snapshot is written once and registered here (``use``). Without a ``folder``
    (``optimix validate``, planning before a search) commits only: no snapshot."""
    tree, base, pins = space.tree, space.base, {}
    for name, spec in base.tasks.items():
        if not isinstance(spec, DatasetTask):
            continue
        node = tree["tasks"][name]
        if not isinstance(node.get("path"), str):
            _check_dimension(name, node.get("path"))
            continue
        if not is_hub(spec.path):
            continue
        if isinstance(node.get("split"), dict):
            raise SpaceError(f"tasks.{name}.split: a hub dataset's split cannot be a search dimension "
                             "(a search reads one snapshot)")
        before = dict((recorded or {}).get(name) or {})
        asked = (spec.path, spec.revision, spec.split)
        same = (before.get("path"), before.get("revision"), before.get("split")) == asked
        if same:
            commit = before["commit"]
        elif _is_commit(spec.revision) and folder and snapshot_file(folder, spec.path, spec.revision,
                                                                    spec.split).exists():
            commit = spec.revision  # pinned by the user, and saved by an earlier search
        else:
            commit = resolve(name, spec.path, spec.revision)
        pins[name] = {"path": spec.path, "revision": spec.revision, "commit": commit, "split": spec.split,
                      "file": str(snapshot(name, spec, commit, folder)) if folder else ""}
        _say_pinned(name, spec, commit)
    if not pins:
        return space, pins
    tree = {**tree, "tasks": {**tree["tasks"]}}
    tasks = dict(base.tasks)
    for name, pin in pins.items():
        tree["tasks"][name] = {**tree["tasks"][name], "revision": pin["commit"]}
        tasks[name] = tasks[name].model_copy(update={"revision": pin["commit"]})
    use(pins)
    return dataclasses.replace(space, tree=tree, base=base.model_copy(update={"tasks": tasks})), pins


def _check_dimension(name: str, node: Any) -> None:
    """A path dimension may choose among local files only: a hub dataset among its values
    could not be pinned to one snapshot."""
    values = [*(node.get("values") or []), *(node.get("grid") or []), node.get("default")]
    for value in values:
        if isinstance(value, str) and is_hub(value):
            raise SpaceError(f"tasks.{name}.path: a search dimension cannot choose the hub dataset {value!r} "
                             "(it could not be pinned); fix the path, or choose among local files")


def pin_config(config: TrialConfig) -> TrialConfig:
    """``config`` with every hub task's ``revision`` resolved to a commit (``optimix train``:
    it loads that commit from the hub, and its ``--json`` config records it)."""
    tasks = dict(config.tasks)
    for name, spec in config.tasks.items():
        if isinstance(spec, DatasetTask) and is_hub(spec.path):
            commit = resolve(name, spec.path, spec.revision)
            _say_pinned(name, spec, commit)
            tasks[name] = spec.model_copy(update={"revision": commit})
    return config.model_copy(update={"tasks": tasks})


def _say_pinned(name: str, spec: DatasetTask, commit: str) -> None:
    """One line on stderr (a warning) when the commit read is not the revision written."""
    if spec.revision != commit:
        asked = f"revision {spec.revision!r}" if spec.revision else "the default branch"
        log.warning("tasks.%s.revision: %r pinned to commit %s (%s)", name, spec.path, commit, asked)


def resolve(name: str, path: str, revision: str | None) -> str:
    """The commit a hub dataset's ``revision`` names (the default branch's when None), asked
    of the hub even for a full commit id (so that an unreachable hub fails here, at once, not
    after ``datasets``' retries). With ``HF_HUB_OFFLINE=1``: the local cache's ``refs/``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return HfApi().dataset_info(path, revision=revision).sha
    except OfflineModeIsEnabled:
        return revision if _is_commit(revision) else _cached_commit(name, path, revision)
    except RevisionNotFoundError:
        raise SpaceError(f"tasks.{name}.revision: {path!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise SpaceError(f"tasks.{name}.path: no hub dataset {path!r} (nor a local file of that name)") from None
    except Exception as err:  # no network, a proxy, the hub down: one line, no traceback
        raise SpaceError(f"tasks.{name}.path: cannot reach the hub for {path!r} ({type(err).__name__}: "
                         f"{first_line(err)[:160]}); use a local file, or set HF_HUB_OFFLINE=1 with a cached "
                         "copy") from None


def _is_commit(revision: str | None) -> bool:
    return bool(revision and _COMMIT.fullmatch(revision))


def _cached_commit(name: str, path: str, revision: str | None) -> str:
    """The commit the local Hugging Face cache records for ``revision`` (offline mode)."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{path.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        commit = ref.read_text().strip()
    except OSError:
        commit = ""
    if not _COMMIT.fullmatch(commit):
        raise SpaceError(f"tasks.{name}.path: HF_HUB_OFFLINE is set and the cache has no copy of {path!r} "
                         f"at {revision or 'main'!r}; unset it, or use a local file")
    return commit


def snapshot(name: str, spec: DatasetTask, commit: str, folder: Path) -> Path:
    """The Parquet snapshot of ``spec``'s split at ``commit``: written once (atomically),
    then reused by every trial and every resume."""
    file = snapshot_file(folder, spec.path, commit, spec.split)
    if file.exists():
        return file
    try:
        table = load(spec.path, commit, spec.split)
    except Exception as err:  # gone from the hub, no such split, a network failure mid-way
        raise SpaceError(f"tasks.{name}.path: cannot load {spec.path!r} at {commit[:12]} "
                         f"(split {spec.split!r}): {type(err).__name__}: {first_line(err)[:200]}") from None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    table.to_parquet(str(tmp))
    os.replace(tmp, file)
    log.info("tasks.%s: %s at %s saved to %s", name, spec.path, commit[:12], file)
    return file


def snapshot_file(folder: Path, path: str, commit: str, split: str) -> Path:
    """Where the snapshot of a hub dataset's split at a commit lives: one name per content."""
    return folder / f"{_slug(path)}@{commit}.{_slug(split)}.parquet"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("/", "--")).lstrip(".") or "_"
