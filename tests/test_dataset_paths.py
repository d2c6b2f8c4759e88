"""Dataset paths are made absolute when a space is loaded: every local path a space can take
(a fixed value, a path dimension's values, grid and default, ``--set``), whatever its suffix,
so that a trial finds its data from any working directory (a Ray worker runs in its own).

The space lives in ``space/`` with its data in ``space/data/``; the tests run from ``elsewhere/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from optimix.cli import main as cli_main
from optimix.core.config import SpaceError
from optimix.core.space import load_space
from optimix.trial.tasks import build_tasks

from conftest import tiny_space

PATH = "tasks.qa.path"


def rows(offset: int) -> list[dict[str, str]]:
    """Prompt/answer rows (``DatasetTask``'s default columns): ``a+b`` and its sum."""
    return [{"prompt": f"{a}+{offset}", "answer": str(a + offset)} for a in range(30)]


def write_json_lines(path: Path, table: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in table))


def space_tree(path) -> dict:
    return tiny_space("paths", tasks={"copy": {}, "qa": {"kind": "dataset", "path": path}},
                      mixture={"rare_task": "qa", "rare_freq": 0.2}, model={"d_model": 16},
                      train={"tokens": 2000, "batch_size": 16, "device": "cpu"}, eval={"points": 1, "size": 16},
                      search=None)


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """``space/data/`` with a.json, b.json, b_rows (b.json without a suffix) and pq/ (a folder
    of parquet files); the working directory is ``elsewhere/``."""
    data = tmp_path / "space" / "data"
    data.mkdir(parents=True)
    write_json_lines(data / "a.json", rows(1))
    write_json_lines(data / "b.json", rows(2))
    write_json_lines(data / "b_rows", rows(2))
    import pyarrow as pa
    import pyarrow.parquet as pq

    (data / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist(rows(3)[:15]), data / "pq" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows(3)[15:]), data / "pq" / "part-1.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path / "space"


def write_space(root: Path, path) -> Path:
    file = root / "space.yaml"
    file.write_text(yaml.safe_dump(space_tree(path)))
    return file


def test_every_value_of_a_path_dimension_is_absolute(layout, tmp_path, monkeypatch):
    choice = {"dist": "choice", "values": ["data/a.json", "data/b.json"], "grid": ["data/b.json"],
              "default": "data/a.json"}
    space = load_space(write_space(layout, choice))
    a, b = str(layout / "data" / "a.json"), str(layout / "data" / "b.json")
    dim = space.dimensions[PATH]
    assert (dim.values, dim.grid, dim.default) == ([a, b], [b], a)
    assert space.tree["tasks"]["qa"]["path"] == {**choice, "values": [a, b], "grid": [b], "default": a}
    assert space.base.tasks["qa"].path == a
    monkeypatch.chdir(tmp_path)  # where a trial runs is not where the space was loaded
    for value in dim.values:
        path = space.resolve({PATH: value}).tasks["qa"].path
        assert path == value and Path(path).is_absolute() and Path(path).is_file()
        qa = build_tasks(space.resolve({PATH: value})).tasks["qa"]  # the data loads from here
        assert qa.eval_ids.shape[0] > 0


@pytest.mark.parametrize("path, key, missing", [
    ({"dist": "choice", "values": ["data/a.json", "data/nope.json"]}, f"{PATH}.values.1", "data/nope.json"),
    ({"dist": "choice", "values": ["data/a.json", "data/b.json"], "grid": ["data/a.json", "gone.csv"]},
     f"{PATH}.grid.1", "gone.csv"),
    ("./no_such_folder", PATH, "./no_such_folder"),
])
def test_a_missing_local_path_is_named_by_its_key(layout, path, key, missing):
    with pytest.raises(SpaceError) as info:
        load_space(write_space(layout, path))
    assert str(info.value) == f"{key}: no such file {missing!r}"


def test_a_missing_point_to_evaluate_path_is_named_and_an_existing_one_made_absolute(layout):
    tree = space_tree({"dist": "choice", "values": ["data/a.json", "data/b.json"]})
    tree["search"] = {"points_to_evaluate": [{PATH: "data/b.json"}, {PATH: "data/c.json"}]}
    (layout / "space.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(SpaceError, match=rf"^search\.points_to_evaluate\.1\.{PATH}: no such file"):
        load_space(layout / "space.yaml")
    del tree["search"]["points_to_evaluate"][1]
    (layout / "space.yaml").write_text(yaml.safe_dump(tree))
    space = load_space(layout / "space.yaml")
    assert space.base.search.points_to_evaluate == [{PATH: str(layout / "data" / "b.json")}]


@pytest.mark.parametrize("name", ["b_rows", "pq"])
def test_a_local_path_without_a_data_suffix_is_local(layout, name):
    """A JSON-lines file without a suffix and a folder of parquet files: they exist, so they
    are local, not hub dataset names."""
    space = load_space(write_space(layout, f"data/{name}"))
    path = space.base.tasks["qa"].path
    assert path == str(layout / "data" / name)
    qa = build_tasks(space.base).tasks["qa"]
    assert qa.eval_ids.shape[0] > 0


@pytest.mark.parametrize("override", ["data/b.json", "data/b_rows"])
def test_train_with_a_set_path_from_another_working_directory(layout, override, capsys):
    """``optimix train --set tasks.qa.path=<the second file, relative to the space>``, run
    from elsewhere: the trial loads that file and trains."""
    space = write_space(layout, {"dist": "choice", "values": ["data/a.json", "data/b.json"]})
    try:
        cli_main(["train", str(space), "--set", f"{PATH}={override}", "--json"])
    except SystemExit as done:
        pytest.fail(f"exit {done.code}: {capsys.readouterr().err}")
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "ok" and 0 <= doc["accuracy"]["qa"] <= 1
    assert doc["config"]["tasks"]["qa"]["path"] == str(layout / override)


@pytest.mark.slow
def test_a_search_over_two_data_files_runs_every_trial_from_another_working_directory(layout, tmp_path):
    """The real search (Ray workers have working directories of their own): each path the
    dimension takes reaches its trial as an absolute path, and every trial finishes."""
    import shutil

    from optimix.records.records import load_search

    from cluster_fixtures import OPTIMIX, base_env, run_in_session, short_tmp

    tree = space_tree({"dist": "choice", "values": ["data/a.json", "data/b.json"]})
    tree["search"] = {"trials": 2, "max_concurrent": 2, "cpus_per_trial": 1, "sampler": "random",
                      "points_to_evaluate": [{PATH: "data/a.json"}, {PATH: "data/b.json"}]}
    (layout / "space.yaml").write_text(yaml.safe_dump(tree))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray_tmp = short_tmp("dp")
    try:
        done = run_in_session([OPTIMIX, "search", str(layout / "space.yaml"), "--tracking-uri", uri,
                               "--storage-path", str(tmp_path / "runs")],
                              env=base_env(RAY_TMPDIR=str(ray_tmp)), cwd=Path.cwd(), timeout=240)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.describe()
    trials = load_search(uri, "paths").trials
    assert sorted(t.status for t in trials) == ["ok", "ok"], [t.params.get("optimix.error") for t in trials]
    assert sorted(t.params[PATH] for t in trials) == [str(layout / "data" / n) for n in ("a.json", "b.json")]
