"""Bad input ends as one line naming the key: ``SpaceError`` from the loader, ``error: ...`` and
exit status 2 from the CLI. Never a traceback, never another exception type.

The corpus lives in ``data/bad_spaces/``. Each file opens with comment lines:

``# expect: SUBSTRING``
    one or more; every substring must occur in the error message.
``# bug: DESCRIPTION``
    optional: a known loader bug. The case is ``xfail(strict=True)``, so once the bug is
    fixed the case XPASSes and fails the run: then delete the ``# bug:`` line.

The hypothesis fuzzers at the end only demand "loads, or a one-line ``SpaceError``".
"""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from optimix.cli import main as cli_main
from optimix.core.config import (
    ArithmeticTask,
    DatasetTask,
    EvalConfig,
    FactsTask,
    MixtureConfig,
    ModelConfig,
    SearchConfig,
    SequenceTask,
    SpaceError,
    TrainConfig,
    TrialConfig,
)
from optimix.core.space import Dimension, build_space, load_space, parse_override, parse_yaml

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "bad_spaces"
QUICKSTART = HERE.parent / "search_spaces" / "quickstart.yaml"
QUICKSTART_TEXT = QUICKSTART.read_text()
QUICKSTART_TREE = parse_yaml(QUICKSTART_TEXT)

_SECTIONS = set(TrialConfig.model_fields)
_MODELS = (TrialConfig, SequenceTask, FactsTask, ArithmeticTask, DatasetTask, MixtureConfig,
           ModelConfig, TrainConfig, EvalConfig, SearchConfig, Dimension)


# ---------------------------------------------------------------------------------------------
# Helpers


def _header(path: Path) -> tuple[list[str], str | None]:
    """The ``# expect:`` substrings and the ``# bug:`` note of a corpus file."""
    expects, bug = [], None
    for raw in path.read_bytes().splitlines():
        if not raw.startswith(b"#"):
            break
        line = raw.decode("utf-8")
        if line.startswith("# expect: "):
            expects.append(line[len("# expect: "):])
        elif line.startswith("# bug: "):
            bug = line[len("# bug: "):]
    return expects, bug


def _corpus() -> list[Any]:
    cases = []
    for path in sorted(CORPUS.glob("*.yaml")):
        expects, bug = _header(path)
        marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
        cases.append(pytest.param(path, expects, id=path.stem, marks=marks))
    return cases


CASES = _corpus()


def assert_one_line(message: str) -> None:
    assert message, "empty error message"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"


def assert_names_key(message: str, *file_level: str) -> None:
    """One line; either about the file/argument as a whole (starts with one of ``file_level``)
    or ``dotted.key: problem`` whose first part is a section, or an unknown key."""
    assert_one_line(message)
    if file_level and message.startswith(file_level):
        return
    key, sep, problem = message.partition(": ")
    assert sep and key and problem, f"not 'key: problem': {message!r}"
    assert key.split(".")[0] in _SECTIONS or problem == "unknown key", f"names no key: {message!r}"


def run_cli(args: list[str], capsys) -> tuple[int | str | None, str, str]:
    """``optimix ARGS`` in-process: (exit status, stdout, stderr). Any exception other than
    ``SystemExit`` propagates: in a real process it would be a traceback."""
    code: int | str | None = 0
    try:
        cli_main(args)
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_cli_bad_input(code, out: str, err: str, expects: list[str]) -> None:
    assert "Traceback" not in out + err
    assert code == 2, f"exit status {code!r}; stderr {err!r}"
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "\r" not in err, repr(err)
    for expect in expects:
        assert expect in err


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from an empty folder: dataset paths resolve against the cwd first."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# The corpus


def test_corpus_is_complete():
    assert len(CASES) >= 32
    for case in CASES:
        path, expects = case.values
        assert expects, f"{path.name}: no '# expect:' line"
        assert path.read_bytes().startswith(b"# expect: "), f"{path.name}: must open with '# expect:'"


@pytest.mark.parametrize(("path", "expects"), CASES)
def test_load_space_rejects(path: Path, expects: list[str], elsewhere):
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert_names_key(message, str(path))
    for expect in expects:
        assert expect in message


@pytest.mark.parametrize(("path", "expects"), CASES)
def test_cli_validate_rejects(path: Path, expects: list[str], elsewhere, capsys):
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert_cli_bad_input(code, out, err, expects)
    assert_names_key(err.removeprefix("error: ").rstrip("\n"), str(path))


def test_not_utf8_written_here(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SpaceError, match=r"latin1\.yaml: not UTF-8 text \(byte 9\)$"):
        load_space(path)


def test_huge_file(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\n" + "# padding\n" * 110_000)
    assert path.stat().st_size > 1 << 20
    with pytest.raises(SpaceError, match=r"huge\.yaml: larger than 1048576 bytes$"):
        load_space(path)


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_unreadable_path(tmp_path, what):
    path = tmp_path / "nothing.yaml"
    if what == "folder":
        path.mkdir()
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value).startswith(f"{path}: cannot read (")
    assert_one_line(str(info.value))


def test_cli_missing_file(tmp_path, capsys):
    code, out, err = run_cli(["validate", str(tmp_path / "nothing.yaml")], capsys)
    assert_cli_bad_input(code, out, err, ["nothing.yaml"])


# ---------------------------------------------------------------------------------------------
# --set overrides (on the quickstart space, whose model.d_model is a search dimension)

OVERRIDES = [
    (["model.d_modle=3"], ["model.d_modle: unknown key"], None),
    (["search.stack=2", "search.prune=dominated"], ["search.stack: stacked trials cannot be pruned"], None),
    (["search.prune=dominated", "search.objectives=[acc/facts:max, wall_s:min]"],
     ["search.prune: 'dominated' needs the objectives train_flops:min"], None),
    (["search.stack=0"], ["search.stack: input should be greater than or equal to 1"], None),
    (["=3"], ["--set =3: expected KEY=VALUE"], None),
    (["nokey"], ["--set nokey: expected KEY=VALUE"], None),
    (["model.d_model=abc"], ["model.d_model: input should be a valid integer", "'abc'"], None),
    (["model.d_model.x=1"], ["model.d_model: not a section, cannot set model.d_model.x"], None),
    (["name.first=x"], ["name: not a section, cannot set name.first"], None),
    (["mixture.rare_freq=2"], ["mixture.rare_freq: input should be less than or equal to 1"], None),
    (["model.n_head=3"], ["model.n_head: d_model=64 is not divisible by n_head=3"], None),
    (["train.flops=1.0e+12"], ["train.tokens: give exactly one of train.tokens or train.flops"], None),
    (["tasks.copy.kind=zzz"], ["tasks.copy.kind: unknown task kind 'zzz'"], None),
    (["tasks.copy.lenght=3"], ["tasks.copy.lenght: unknown key"], None),
    (["search.trials={dist: int, low: 1, high: 9}"], ["search.trials: cannot be a search dimension"], None),
    (["model.d_model=64", "model.d_modle=3"], ["model.d_modle: unknown key"], None),
    (["model.d_model=[1"], ["model.d_model: cannot parse value '[1'"], None),
    (["seed=*a"], ["seed: cannot parse value '*a'"], None),
    (["seed=" + "1" * 5000], ["seed: cannot parse value"], None),
    (["seed=.e5"], ["seed: input should be a valid integer"], None),
    (["no\nequals"], ["--set no\\nequals: expected KEY=VALUE"], None),
    ([".=1"], ["--set .=1: '.' has an empty part"], None),
    (["search.cpus_per_trial=1e300"], ["search.cpus_per_trial: input should be less than or equal to 4096"], None),
    (["search.gpus_per_trial=1e9"], ["search.gpus_per_trial: input should be less than or equal to 64"], None),
    (["seed=4294967296"], ["seed: input should be less than or equal to 4294967295, got 4294967296"], None),
    (["seed=" + "9" * 26], ["seed: input should be less than or equal to 4294967295"], None),
]
OVERRIDE_CASES = [
    pytest.param(overrides, expects, id=repr(overrides)[:40],
                 marks=[pytest.mark.xfail(reason=bug, strict=True)] if bug else [])
    for overrides, expects, bug in OVERRIDES
]


@pytest.mark.parametrize(("overrides", "expects"), OVERRIDE_CASES)
def test_override_rejected(overrides: list[str], expects: list[str]):
    with pytest.raises(SpaceError) as info:
        load_space(QUICKSTART, overrides)
    message = str(info.value)
    assert_names_key(message, "--set ")
    for expect in expects:
        assert expect in message


@pytest.mark.parametrize(("overrides", "expects"), OVERRIDE_CASES)
def test_cli_override_rejected(overrides: list[str], expects: list[str], capsys):
    args = ["validate", str(QUICKSTART)]
    for override in overrides:
        args += ["--set", override]
    code, out, err = run_cli(args, capsys)
    assert_cli_bad_input(code, out, err, expects)
    assert_names_key(err.removeprefix("error: ").rstrip("\n"), "--set ")


# Spaces the loader accepts, but which `optimix validate` cannot plan: the CLI must still end
# with one line and exit 2.
CLI_AFTER_LOAD = [
    pytest.param(["tasks.facts={kind: facts, n_facts: 100, alphabet: 2, key_len: 1}"],
                 ["tasks.facts.n_facts"], id="facts-do-not-fit"),
    pytest.param(["train.tokens=null", "train.flops=.inf"], ["train.flops"], id="flops-inf"),
]


@pytest.mark.parametrize(("overrides", "expects"), CLI_AFTER_LOAD)
def test_cli_validate_after_load(overrides: list[str], expects: list[str], capsys):
    args = ["validate", str(QUICKSTART)]
    for override in overrides:
        args += ["--set", override]
    code, out, err = run_cli(args, capsys)
    assert_cli_bad_input(code, out, err, expects)


@pytest.mark.parametrize("command", [["validate"], ["train"], ["train", "--seed", "9" * 26],
                                     ["search", "--seed", "4294967296"]])
def test_a_seed_out_of_range_is_refused_by_every_command_before_anything_runs(command, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [command[0], str(QUICKSTART), *command[1:], "--set", "train.tokens=2000"]
    if "--seed" not in command:
        args += ["--set", "seed=4294967296"]
    code, out, err = run_cli(args, capsys)
    assert_cli_bad_input(code, out, err, ["seed: input should be less than or equal to 4294967295"])
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no state folder


DATASET_ROWS = [
    ([{"prompt": "a", "answer": "x"}, {"prompt": "b", "answer": None}],
     "tasks.rows.answer_column: {path} row 2 has no answer (null)"),
    ([{"prompt": "a", "answer": "x"}, {"prompt": None, "answer": "y"}],
     "tasks.rows.prompt_column: {path} row 2 has no prompt (null)"),
    ([{"prompt": "", "answer": "x"}, {"prompt": "b", "answer": "y"}],
     "tasks.rows.prompt_column: {path} row 1 has no prompt ('')"),
    ([{"prompt": "a", "answer": "x"}, {"prompt": "b", "answer": ["y"]}],
     ("tasks.rows.answer_column: {path} row 2 has no answer (['y'])",
      "tasks.rows.path: cannot load '{path}'")),  # datasets 2 reads no column of mixed types
    ([{"prompt": "a" * 70, "answer": "x"}, {"prompt": "b" * 80, "answer": "y"}, {"prompt": "c", "answer": "z"}],
     "tasks.rows.max_chars: 64 leaves 1 of 3 rows of {path} (1 distinct prompts); a dataset task needs "
     "2 or more: raise max_chars"),
]


@pytest.mark.parametrize(("rows", "expect"), DATASET_ROWS, ids=["null-answer", "null-prompt", "empty-prompt",
                                                                  "list-answer", "max-chars"])
def test_a_dataset_row_without_a_prompt_or_answer_is_refused_naming_file_and_row(rows, expect, tmp_path,
                                                                                   capsys):
    import json

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    space = tmp_path / "s.yaml"
    tree = yaml.safe_load(QUICKSTART.read_text())
    tree["tasks"]["rows"] = {"kind": "dataset", "path": str(data), "eval": "train"}
    space.write_text(yaml.safe_dump(tree))
    for command in ("validate", "train"):
        code, out, err = run_cli([command, str(space), "--set", "train.tokens=2000"], capsys)
        assert_cli_bad_input(code, out, err, [])
        assert any(e.format(path=data) in err for e in (expect if isinstance(expect, tuple) else (expect,))), err


def test_a_csv_with_an_empty_answer_cell_is_refused(tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text("prompt,answer\na,1\nb,\nc,3\n")
    tree = yaml.safe_load(QUICKSTART.read_text())
    tree["tasks"]["rows"] = {"kind": "dataset", "path": str(data)}
    from optimix.trial.tasks import build_tasks

    with pytest.raises(SpaceError, match=r"^tasks\.rows\.answer_column: .*rows\.csv row 2 has no answer"):
        build_tasks(build_space(tree).base)


def test_task_named_dist_is_a_task():
    tree = copy.deepcopy(QUICKSTART_TREE)
    tree["tasks"]["dist"] = tree["tasks"].pop("copy")
    assert "dist" in build_space(tree).base.tasks


# ---------------------------------------------------------------------------------------------
# The real command, in a real process: stderr is exactly one line, nothing else leaks


def _optimix_command() -> list[str]:
    script = Path(sys.executable).with_name("optimix")
    if script.exists():
        return [str(script)]
    found = shutil.which("optimix")
    return [found] if found else [sys.executable, "-m", "optimix.cli"]


SUBPROCESS_CASES = [
    (["validate", str(CORPUS / "unknown_section_key.yaml")], "model.d_modle: unknown key"),
    (["validate", str(CORPUS / "yaml_bomb.yaml")], "YAML aliases are not allowed"),
    (["validate", str(CORPUS / "not_utf8.yaml")], "not UTF-8 text"),
    (["validate", str(QUICKSTART), "--set", "nokey"], "--set nokey: expected KEY=VALUE"),
]


def test_subprocess_cli():
    for args, expect in SUBPROCESS_CASES:
        done = subprocess.run([*_optimix_command(), *args], capture_output=True, text=True,
                              timeout=120, cwd=tempfile.gettempdir())
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        assert done.returncode == 2, (args, done.returncode, done.stderr)
        assert done.stdout == ""
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert expect in done.stderr


# ---------------------------------------------------------------------------------------------
# Property-based fuzzing
#
# Known bugs (each also a strict-xfail case above) would fail every fuzz run; they are
# recognised here by their signature and let through, counted as hypothesis events.
# Delete an entry once its bug is fixed.


def _frames(err: BaseException) -> list[str]:
    return [f"{Path(frame.filename).name}:{frame.name}" for frame in traceback.extract_tb(err.__traceback__)]


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [k for k in node if isinstance(k, str)] + [k for v in node.values() for k in _keys(v)]
    if isinstance(node, list):
        return [k for v in node for k in _keys(v)]
    return []


def _known_bug(err: BaseException, tree: Any = None, overrides: list[str] = ()) -> str | None:
    """No loader bug is known today: any non-SpaceError is a failure."""
    return None


def check(fn, *args, tree: Any = None, overrides: list[str] = ()) -> Any:
    """``fn(*args)``: a result, or a one-line SpaceError (returns None). Anything else fails."""
    try:
        return fn(*args)
    except SpaceError as err:
        bug = _known_bug(err, tree, overrides)
        if bug:
            event(f"known bug: {bug}")
            return None
        assert_one_line(str(err))
        event("SpaceError")
        return None
    except Exception as err:
        bug = _known_bug(err, tree, overrides)
        if bug:
            event(f"known bug: {bug}")
            return None
        raise


FIELDS = sorted(
    {name for model in _MODELS for name in model.model_fields} | set(QUICKSTART_TREE["tasks"])
)
KINDS = ["copy", "reverse", "sort", "facts", "modadd", "compare", "dataset", "uniform",
         "loguniform", "int", "choice", "even", "bursts"]

keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
numbers = st.one_of(
    st.sampled_from([0, 1, 2, -1, 0.5, 1e-300, 1e308, -1e308, math.inf, -math.inf, math.nan]),
    st.integers(-10, 100_000),
    st.integers(),
    st.floats(-1e3, 1e3),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(
    st.none(), st.booleans(), numbers, st.text(max_size=16), st.sampled_from(KINDS)
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=16,
)
dimensions = st.builds(
    lambda fixed, extra: {**fixed, **extra},
    st.fixed_dictionaries(
        {"dist": st.one_of(st.sampled_from(["uniform", "loguniform", "int", "choice"]), scalars)},
        optional={
            "low": numbers, "high": numbers, "step": numbers, "log": st.booleans() | scalars,
            "values": st.lists(scalars, max_size=4), "default": scalars,
            "grid": st.lists(numbers, max_size=3),
        },
    ),
    st.dictionaries(keys, scalars, max_size=1) | st.just({}),
)


@st.composite
def plausible_dimensions(draw) -> dict[str, Any]:
    """Dimensions that get past the first checks (a real dist, ordered ends), so the later
    ones (whole numbers, steps, log scales, defaults, the middle) see many examples."""
    dist = draw(st.sampled_from(["uniform", "loguniform", "int", "choice"]))
    if dist == "choice":
        dim: dict[str, Any] = {"dist": dist, "values": draw(st.lists(scalars, min_size=1, max_size=4))}
    else:
        not_nan = numbers.filter(lambda x: x == x)
        low, high = sorted([draw(not_nan), draw(not_nan)])
        dim = {"dist": dist, "low": low, "high": high}
    for name, values in [("step", numbers), ("default", numbers), ("log", st.booleans()),
                         ("grid", st.lists(numbers, max_size=3))]:
        if draw(st.booleans()):
            dim[name] = draw(values)
    return dim


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(st.dictionaries(keys, trees, max_size=8))
def test_fuzz_random_trees(tree):
    check(build_space, tree, tree=tree)


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every entry of a tree, as a path of dict keys and list indices."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for key, child in items:
        out.append((*path, key))
        out.extend(_paths(child, (*path, key)))
    return out


def _at(tree: Any, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


@FUZZ
@given(st.data())
def test_fuzz_mutated_quickstart(data):
    tree = copy.deepcopy(QUICKSTART_TREE)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = _paths(tree)
        op = data.draw(st.sampled_from(["delete", "retype", "insert", "dimension"]), label="op")
        if op == "insert" or not paths:
            sections = [p for p in [(), *paths] if isinstance(_at(tree, p), dict)]
            where = _at(tree, data.draw(st.sampled_from(sections), label="section"))
            where[data.draw(keys, label="key")] = data.draw(trees, label="value")
            continue
        path = data.draw(st.sampled_from(paths), label="path")
        parent, last = _at(tree, path[:-1]), path[-1]
        if op == "delete":
            del parent[last]
        elif op == "retype":
            old = parent[last]
            others = scalars if isinstance(old, dict | list) else trees
            parent[last] = data.draw(others.filter(lambda v, old=old: type(v) is not type(old)),
                                     label="value")
        else:
            parent[last] = data.draw(dimensions, label="dimension")
    check(build_space, tree, tree=tree)


@FUZZ
@given(dimensions | plausible_dimensions(),
       st.sampled_from(["mixture.rare_freq", "model.d_model", "model.n_layer", "train.lr",
                        "tasks.copy.length", "eval.points"]))
def test_fuzz_dimensions(dimension, key):
    """Random ``{dist: ...}`` mappings at real keys: valid or a one-line error, and a
    dimension that loads gives a middle inside its own range."""
    tree = copy.deepcopy(QUICKSTART_TREE)
    section, _, name = key.rpartition(".")
    _at(tree, tuple(section.split(".")))[name] = dimension
    space = check(build_space, tree, tree=tree)
    if space is not None:
        dim: Dimension = space.dimensions[key]
        middle = dim.middle()
        if dim.dist == "choice":
            assert middle in dim.values
        elif math.isfinite(middle):
            assert dim.low <= middle <= dim.high


override_values = st.one_of(
    st.text(max_size=12),
    scalars.map(lambda v: "null" if v is None else str(v)),
    st.sampled_from(["[1", "{a: 1}", "*a", "&a 1", "{dist: int, low: 1, high: 4}", ".inf", "~"]),
)
dotted = st.one_of(
    st.sampled_from(sorted({".".join(map(str, p)) for p in _paths(QUICKSTART_TREE)})),
    st.lists(keys, min_size=1, max_size=3).map(".".join),
)
overrides_st = st.lists(
    st.one_of(st.text(max_size=20), st.builds(lambda k, v: f"{k}={v}", dotted, override_values)),
    max_size=3,
)


@FUZZ
@given(overrides_st)
def test_fuzz_overrides(overrides):
    for override in overrides:
        check(parse_override, override, overrides=overrides)
    check(build_space, QUICKSTART_TREE, overrides, tree=QUICKSTART_TREE, overrides=overrides)


def _mutated_text(data) -> str:
    text = QUICKSTART_TEXT
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="at")
        cut = data.draw(st.integers(0, 8), label="cut")
        text = text[:at] + data.draw(st.text(max_size=6), label="insert") + text[at + cut:]
    return text


def _load_text(text: str) -> None:
    tree = parse_yaml(text)
    check(build_space, tree, tree=tree)


@FUZZ
@given(st.data())
def test_fuzz_yaml_text(data):
    """Random text, and the quickstart file with a few random edits."""
    text = data.draw(st.text() | st.none(), label="text")
    if text is None:
        text = _mutated_text(data)
    check(_load_text, text)


@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.binary(max_size=8).map(lambda b: QUICKSTART_TEXT.encode()[:700] + b
                                           + QUICKSTART_TEXT.encode()[700:])))
def test_fuzz_bytes_through_load_space(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(raw)
        check(load_space, path)


def test_train_takes_a_share_bursts_could_not_carry_when_it_delivers_evenly(tmp_path, capsys):
    """A search over delivery checks every choice; optimix train checks only what it trains."""
    space = tmp_path / "s.yaml"
    tree = yaml.safe_load(QUICKSTART.read_text())
    tree["mixture"].update(rare_freq=0.2, delivery={"dist": "choice", "values": ["even", "bursts"]},
                           burst_duty=0.1)
    tree["train"]["tokens"] = 2000
    space.write_text(yaml.safe_dump(tree))
    code, out, err = run_cli(["train", str(space), "--json"], capsys)
    assert code == 0, err
    import json

    assert json.loads(out)["config"]["mixture"]["delivery"] == "even"
    code, out, err = run_cli(["validate", str(space)], capsys)
    assert code == 2 and "mixture.burst_duty: 0.1 is below rare_freq=0.2" in err


def test_validate_warns_of_corners_of_the_space_that_cannot_be_built(tmp_path, capsys):
    """Valid one by one, not together: loaded (a search records such points infeasible), and
    ``optimix validate`` says so in one warning line."""
    space = tmp_path / "s.yaml"
    tree = yaml.safe_load(QUICKSTART.read_text())
    tree["mixture"].update(rare_freq={"dist": "uniform", "low": 0.01, "high": 0.2, "default": 0.05},
                           delivery={"dist": "choice", "values": ["even", "bursts"]}, burst_duty=0.1)
    space.write_text(yaml.safe_dump(tree))
    code, out, err = run_cli(["validate", str(space)], capsys)
    assert code == 0 and ": ok (quickstart)" in out
    assert err.count("\n") == 1 and err.startswith("warning: 3 of 12 corners of the space cannot be built")
    assert "mixture.burst_duty: 0.1 is below rare_freq=0.2" in err
    code, out, err = run_cli(["validate", str(QUICKSTART)], capsys)
    assert code == 0 and err == ""
