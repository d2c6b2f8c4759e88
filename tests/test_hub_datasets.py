"""Hub datasets are pinned and read once (``optimix.trial.hub``): a ``dataset`` task naming a hub
dataset gets its ``revision`` resolved to a commit, one Parquet snapshot of that commit, and
every trial (in the driver and in Ray workers) reads the snapshot, never the hub.

Offline and without mocks: the hub is never reached here. A snapshot is written from a real
local folder of Parquet files (the layout of a hub dataset without a script), and a search
over a hub name with a pinned commit finds its snapshot already written and reads only it.
An unreachable hub is a closed loopback port given as ``HF_ENDPOINT``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from optimix.cli import main as cli_main
from optimix.core.config import DatasetTask, SpaceError
from optimix.core.space import build_space, load_space
from optimix.trial import hub
from optimix.trial.tasks import build_tasks

from cluster_fixtures import OPTIMIX, base_env, run_in_session, short_tmp
from conftest import tiny_space

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HUB_NAME = "optimix-tests/sums"


def rows() -> list[dict[str, str]]:
    return [{"prompt": f"{a}+{b}", "answer": str(a + b)} for a in range(8) for b in range(4)]


def tree(path: str, **qa) -> dict:
    return tiny_space("hub", tasks={"copy": {}, "qa": {"kind": "dataset", "path": path, **qa}},
                      mixture={"rare_task": "qa", "rare_freq": {"dist": "uniform", "low": 0.1, "high": 0.3}},
                      model={"d_model": 16}, train={"tokens": 2000, "batch_size": 16, "device": "cpu"},
                      eval={"points": 1, "size": 16},
                      search={"trials": 2, "max_concurrent": 1, "sampler": "random"})


@pytest.fixture
def source(tmp_path) -> Path:
    """A folder of Parquet files, as a hub dataset without a script is laid out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "source" / "data"
    folder.mkdir(parents=True)
    table = rows()
    pq.write_table(pa.Table.from_pylist(table[:16]), folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(table[16:]), folder / "train-00001-of-00002.parquet")
    return folder.parent


def write(root: Path, doc: dict) -> Path:
    file = root / "space.yaml"
    file.write_text(yaml.safe_dump(doc))
    return file


def test_the_snapshot_is_written_once_and_trials_read_it_in_place_of_the_hub(source, tmp_path):
    folder = tmp_path / "datasets"
    spec = DatasetTask(kind="dataset", path=str(source))
    file = hub.snapshot("qa", spec, COMMIT, folder)
    assert file == hub.snapshot_file(folder, str(source), COMMIT, "train") and file.is_file()
    written = file.stat().st_mtime_ns
    shutil.rmtree(source / "data")  # the source is gone: a second call reads nothing
    assert hub.snapshot("qa", spec, COMMIT, folder) == file and file.stat().st_mtime_ns == written

    # A worker: the hub name at that commit reads the registered snapshot (this machine has
    # no hub), and builds the same task as the source did.
    hub.use({"qa": {"path": HUB_NAME, "commit": COMMIT, "split": "train", "file": str(file)}})
    pinned = build_space(tree(HUB_NAME, revision=COMMIT)).base
    original = tmp_path / "rows.json"
    original.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    direct = build_space(tree(str(original))).base
    a, b = build_tasks(pinned), build_tasks(direct)
    assert a.vocab == b.vocab
    assert np.array_equal(a.tasks["qa"].eval_ids, b.tasks["qa"].eval_ids)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert np.array_equal(a.tasks["qa"].sample(rng_a, 64)[0], b.tasks["qa"].sample(rng_b, 64)[0])


def test_pin_space_keeps_a_recorded_commit_and_records_it_in_the_space(tmp_path, caplog):
    """A space naming a hub dataset at a branch, resumed: the recorded commit (its snapshot
    already written) is taken without asking the hub, and the space carries it."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = hub.snapshot_file(folder, HUB_NAME, COMMIT, "train")
    pq.write_table(pa.Table.from_pylist(rows()), file)
    space = build_space(tree(HUB_NAME, revision="main"))
    recorded = {"qa": {"path": HUB_NAME, "revision": "main", "commit": COMMIT, "split": "train",
                       "file": str(file)}}
    pinned, pins = hub.pin_space(space, folder, recorded)
    assert pins == recorded
    assert pinned.base.tasks["qa"].revision == COMMIT and pinned.tree["tasks"]["qa"]["revision"] == COMMIT
    assert pinned.resolve({}).tasks["qa"].revision == COMMIT
    assert space.tree["tasks"]["qa"]["revision"] == "main"  # the space given is left as it was
    assert [r.getMessage() for r in caplog.records if r.name == "optimix.trial.hub"] == [
        f"tasks.qa.revision: '{HUB_NAME}' pinned to commit {COMMIT} (revision 'main')"]


@pytest.mark.parametrize("qa, message", [
    ({"path": "data/rows.json", "revision": "main"},
     "tasks.qa.revision: only a hub dataset has a revision; '{data}/rows.json' is a local path"),
    ({"path": HUB_NAME, "revision": {"dist": "choice", "values": ["main", "v2"]}},
     "tasks.qa.revision: cannot be a search dimension (a search reads one snapshot)"),
    ({"path": {"dist": "choice", "values": ["data/rows.json", HUB_NAME]}, "revision": "main"},
     "tasks.qa.revision: needs a fixed hub dataset in tasks.qa.path, not a search dimension"),
])
def test_a_revision_without_one_hub_dataset_is_refused_by_its_key(tmp_path, capsys, qa, message):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.json").write_text(json.dumps(rows()[0]) + "\n")
    doc = tree("")
    doc["tasks"]["qa"] = {"kind": "dataset", **qa}
    file = write(tmp_path, doc)
    expected = message.format(data=tmp_path / "data")
    with pytest.raises(SpaceError) as info:
        load_space(file)
    assert str(info.value) == expected
    with pytest.raises(SystemExit) as done:
        cli_main(["validate", str(file)])
    assert done.value.code == 2
    assert capsys.readouterr().err == f"error: {expected}\n"


def test_a_path_dimension_cannot_choose_a_hub_dataset_in_a_search(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(rows()[0]) + "\n")
    space = build_space(tree({"dist": "choice", "values": [str(tmp_path / "rows.json"), HUB_NAME]}))
    with pytest.raises(SpaceError, match=rf"^tasks\.qa\.path: a search dimension cannot choose the hub "
                                         rf"dataset '{HUB_NAME}'"):
        hub.pin_space(space, tmp_path / "datasets")


@pytest.mark.parametrize("command, env, message", [
    ("search", {"HF_ENDPOINT": "http://127.0.0.1:9"},
     f"error: tasks.qa.path: cannot reach the hub for '{HUB_NAME}' ("),
    ("validate", {"HF_ENDPOINT": "http://127.0.0.1:9"},
     f"error: tasks.qa.path: cannot reach the hub for '{HUB_NAME}' ("),
    ("train", {"HF_HUB_OFFLINE": "1"},
     f"error: tasks.qa.path: HF_HUB_OFFLINE is set and the cache has no copy of '{HUB_NAME}' at 'main'; "
     "unset it, or use a local file\n"),
])
def test_an_unreachable_hub_is_one_line_naming_the_task_and_the_dataset(tmp_path, command, env, message):
    """Through the CLI, as a user runs it: exit 2, one line, no traceback, nothing started."""
    file = write(tmp_path, tree(HUB_NAME))
    args = [OPTIMIX, command, str(file)]
    if command == "search":
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "runs")]
    done = run_in_session(args, env=base_env(HF_HOME=str(tmp_path / "hf"), **{"HF_HUB_OFFLINE": "0", **env}),
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.describe()
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_search_over_a_hub_dataset_reads_its_snapshot_and_records_the_commit(tmp_path):
    """The real search, its workers without a hub: the snapshot under ``<storage>/<experiment>/
    datasets/`` is what every trial reads; the parent run, every trial and the state record
    the commit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optimix.records.records import load_search

    storage = tmp_path / "runs"
    folder = storage / "hub" / "datasets"
    folder.mkdir(parents=True)
    file = hub.snapshot_file(folder, HUB_NAME, COMMIT, "train")
    pq.write_table(pa.Table.from_pylist(rows()), file)
    written = file.stat().st_mtime_ns
    space = write(tmp_path, tree(HUB_NAME, revision=COMMIT))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray_tmp = short_tmp("hub")
    env = base_env(RAY_TMPDIR=str(ray_tmp), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    try:
        done = run_in_session([OPTIMIX, "search", str(space), "--tracking-uri", uri, "--storage-path",
                               str(storage)], env=env, cwd=tmp_path, timeout=240)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.describe()
    search = load_search(uri, "hub")
    assert sorted(t.status for t in search.trials) == ["ok", "ok"], [t.params.get("optimix.error")
                                                                     for t in search.trials]
    assert {t.params["tasks.qa.revision"] for t in search.trials} == {COMMIT}
    assert {t.params["tasks.qa.path"] for t in search.trials} == {HUB_NAME}
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_run(search.run_id).data.params["tasks.qa.revision"] == COMMIT
    state = json.loads(next(storage.glob("hub/*/state.json")).read_text())
    assert state["datasets"]["qa"] == {"path": HUB_NAME, "revision": COMMIT, "commit": COMMIT,
                                       "split": "train", "file": str(file)}
    assert file.stat().st_mtime_ns == written
