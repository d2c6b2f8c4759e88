"""Which search ``optimix frontier`` and ``optimix plan`` read when no experiment is named: the
last one started from this storage path, said on stderr, even when another experiment in the
same store was updated later (a shared server)."""

from __future__ import annotations

import json

import pytest

from optimix.cli import main as cli_main
from optimix.core.space import build_space
from optimix.search import SearchOptions, run_search

from conftest import tiny_space

pytestmark = pytest.mark.slow


def tree(name: str) -> dict:
    return tiny_space(name, tasks={"copy": {}, "facts": {}},
                      mixture={"rare_freq": {"dist": "choice", "values": [0.05, 0.2]}}, model={"d_model": 16},
                      train={"tokens": 4000, "batch_size": 16}, eval={"points": 1, "size": 32},
                      search={"trials": 2, "sampler": "grid", "cpus_per_trial": None})


def test_frontier_without_an_experiment_takes_this_storage_paths_search(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mine = run_search(build_space(tree("mine")), SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "a")))
    theirs = run_search(build_space(tree("theirs")), SearchOptions(tracking_uri=uri, storage_path=str(tmp_path / "b")))
    assert mine.parent_run_id != theirs.parent_run_id
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    cli_main(["frontier", "--tracking-uri", uri, "--storage-path", "a", "--json"])
    out, err = capsys.readouterr()
    assert {r["run_id"] for r in json.loads(out)} == {r["run_id"] for r in mine.frontier}
    assert f"search {mine.parent_run_id} in experiment 'mine': the last search started from a" in err
    cli_main(["frontier", "--tracking-uri", uri, "--storage-path", str(tmp_path / "b"), "--json"])
    out, err = capsys.readouterr()
    assert {r["run_id"] for r in json.loads(out)} == {r["run_id"] for r in theirs.frontier}
    # nothing started from here: the experiment updated last, and it says so
    cli_main(["frontier", "--tracking-uri", uri, "--storage-path", "elsewhere", "--json"])
    out, err = capsys.readouterr()
    assert "no search was started from elsewhere: the experiment updated last" in err
