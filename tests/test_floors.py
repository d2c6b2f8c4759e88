"""pyproject.toml's floors are the releases .ci/floors tests: each library in .ci/floors.txt
has its floor in pyproject equal to the pinned release, and every library optimix builds on
has one there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = {"optuna", "transformers", "mlflow", "ray", "datasets"}


def _pins() -> dict[str, str]:
    lines = (ROOT / ".ci" / "floors.txt").read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines]
    return dict(pin.split("==") for pin in pins if pin)


def _floors() -> dict[str, str]:
    """``name>=version`` of pyproject's dependencies (extras dropped: ``ray[tune]`` is ray)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    found = re.findall(r'^\s*"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([^,;"]+)', block, re.M)
    return {name.lower(): version for name, version in found}


def test_pyproject_floors_are_the_releases_the_floors_step_installs():
    pins, floors = _pins(), _floors()
    assert set(pins) == CHECKED
    assert {name: floors.get(name) for name in pins} == pins


def test_the_ci_runs_the_floors_step():
    """Its install beside the main install and done before the main suite (no install shares
    the cores with it), its tests after the main suite."""
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash \.ci/floors install .*&$", run, re.M)
    assert re.search(r"^bash \.ci/floors test$", run, re.M)
    assert run.index('wait "$floors_install"') < run.index("python -m pytest -q") < run.index("bash .ci/floors test")
    assert "-c .ci/floors.txt" in (ROOT / ".ci" / "floors").read_text()


def test_the_ray_tune_calls_optimix_makes_exist_in_the_installed_ray():
    """The fast suite starts no Ray, so what the search calls on ``ray.tune`` is checked by
    name here (Ray 2.40 has no ``tune.RunConfig``, ``tune.report`` or ``tune.get_context``)."""
    from ray import tune

    called = set()
    for path in (ROOT / "optimix").rglob("*.py"):
        text = path.read_text()
        if "from ray import tune" in text:
            called |= set(re.findall(r"(?<![\w.])tune\.([A-Za-z_]\w*)", text))
    assert {"RunConfig", "FailureConfig", "report", "get_context", "Tuner"} <= called
    assert sorted(name for name in called if not hasattr(tune, name)) == []
