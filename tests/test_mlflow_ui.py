"""The MLflow UI on a real search, in a real headless browser: ``docs/tools/mlflow_screenshot.py``
(``mlflow ui`` on loopback, Debian's Chromium driven by Playwright) against the store of a tiny
quickstart search run through the command line (real Ray, real MLflow in SQLite:
``quickstart_search`` in conftest.py, which plan's tests read too).

The browser tests (slow) need ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` package
(``pip install playwright``; never ``playwright install``). Without them the tests skip, except
where ``CI`` is set (``.ci/run`` installs both), where they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from optimix import report
from optimix.core.metrics import parse_objectives_tag
from optimix.search.run import SearchSummary

from cluster_fixtures import (
    ROOT,
    base_env,
    kill_sessions,
    run_in_session,
)

SCRIPT = ROOT / "docs" / "tools" / "mlflow_screenshot.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH, HEIGHT = 1680, 900


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser() -> str:
    """Chromium's path, once Chromium and Playwright are known to be there."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium ({CHROMIUM}; apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright; no `playwright install`)")
    if missing:
        reason = "the MLflow UI test needs " + " and ".join(missing)
        if in_ci():
            pytest.fail(reason + "; CI is set, where .ci/run installs them")
        pytest.skip(reason)
    return CHROMIUM


@dataclass
class Shot:
    report: dict
    runs_png: Path
    stderr: str
    wall_s: float
    trials: int
    link: str


@pytest.fixture(scope="module")
def shot(browser, quickstart_search, tmp_path_factory) -> Shot:
    """The screenshot script on the store of ``quickstart_search`` (conftest.py: six trials
    recorded through the command line), its files in a folder of its own."""
    store, root = quickstart_search, tmp_path_factory.mktemp("ui")
    # "  then http://127.0.0.1:5000/#/experiments/ID/runs?workflowType=machine_learning -> ..."
    then = [line.split()[1] for line in store.stdout.splitlines() if line.startswith("  then ")]
    assert len(then) == 1, store.stdout

    runs_png, report_json = root / "runs.png", root / "report.json"
    args = [sys.executable, str(SCRIPT), "--store-dir", str(store.root), "--experiment", store.experiment,
            "--runs-out", str(runs_png), "--report", str(report_json), "--chromium", browser,
            "--width", str(WIDTH), "--height", str(HEIGHT), "--timeout", "90", "--link", then[0]]
    sessions: list[int] = []
    scratch = root / "tmp"  # the script's temp folder, Chromium's profile in it
    scratch.mkdir()
    try:
        ran = run_in_session(args, env=base_env(TMPDIR=str(scratch)), cwd=root, timeout=240,
                             sessions=sessions)
    finally:
        # The script stops mlflow ui and Chromium itself, also on SIGTERM. Whatever is left
        # (of its session, or Chromium, which Playwright starts in a session of its own) is
        # ended here, and must not have been left.
        left = kill_sessions(sessions, grace_s=5.0) + kill_mentioning(root) + kill_mentioning(store.root)
    assert ran.returncode == 0, ran.describe()
    assert not left, f"processes of the screenshot script outlived it: {left}\n{ran.describe()}"
    return Shot(json.loads(report_json.read_text()), runs_png, ran.stderr, ran.wall_s, store.trials, then[0])


def kill_mentioning(folder: Path) -> list[int]:
    """SIGKILL the processes whose command line names ``folder`` or that run in it; their pids."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if str(folder) in cmdline or Path(cwd).is_relative_to(folder):
            found.append(int(entry))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
    return found


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.slow
def test_runs_table_shows_the_trials_nested_under_the_search(shot):
    runs = shot.report["runs"]
    assert shot.report["trials"] == shot.trials
    # The "Model training" runs table, not a GenAI page.
    assert runs["heading"] == "Runs" and "workflowType=machine_learning" in runs["url"], runs
    assert runs["parent_row"] and runs["parent_expander"], runs
    assert runs["parent_name"] == "quickstart-search", runs  # the space's name
    # Every trial in a row of its own, indented under the search, on screen.
    assert runs["nested_trials"] == runs["nested_trials_in_view"] == shot.trials, runs
    assert runs["indent_px"] > 0
    assert all(name.startswith("trial-") for name in runs["first_nested"]), runs
    assert f"search {runs['parent_name']!r} with {shot.trials} of {shot.trials} trials nested" in shot.stderr


@pytest.mark.slow
def test_screenshot_is_a_real_page(shot):
    assert png_size(shot.runs_png) == (WIDTH, HEIGHT)
    # A blank or error page compresses to a few KB; the table with its text is far larger.
    assert shot.runs_png.stat().st_size > 40_000, shot.runs_png.stat().st_size


@pytest.mark.slow
def test_the_link_optimix_prints_opens_the_training_runs(shot):
    link = shot.report["link"]
    assert shot.link == (f"http://127.0.0.1:5000/#/experiments/{shot.report['experiment_id']}"
                         "/runs?workflowType=machine_learning")
    assert link["training_runs"] and link["heading"] == "Runs", link
    assert link["workflowType"] == "machine_learning", link


@pytest.mark.slow
def test_experiment_link_lands_on_the_training_runs(shot):
    """The issue's ask: the experiment opens on its runs, not on an empty GenAI page. optimix
    tags its experiments ``mlflow.experimentKind=custom_model_development``, but MLflow 3.17's
    UI ignores the tag: a browser that never chose "Model training" lands on the GenAI
    overview (the choice is the browser's, kept in its localStorage)."""
    import mlflow

    landing = shot.report["landing"]
    assert landing["url"].startswith(f"/#/experiments/{shot.report['experiment_id']}/"), landing
    if not landing["training_runs"]:
        pytest.xfail(f"MLflow {mlflow.__version__} opens a new browser on {landing['url']} "
                     f"({landing['heading']!r}), whatever the experiment's kind tag")
    assert landing["tab"] == "runs", landing


def summary(**fields) -> SearchSummary:
    base = dict(experiment="x", parent_run_id="p", tracking_uri="sqlite:///m.db", state_dir="/s",
                objectives=parse_objectives_tag("acc/facts:max,train_flops:min"), frontier=[], trials=1,
                ok=1, pruned=0, failed=0, spent_flops=1.0, interrupted_flops=0.0, budget_flops=None,
                wall_s=1.0)
    return SearchSummary(**{**base, **fields})


def test_the_summary_links_the_runs_table_not_the_genai_pages():
    assert report.ui_runs_link(summary(experiment_id="7")) == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning")
    assert report.ui_runs_link(summary(experiment_id="7", tracking_uri="https://mlflow.example:8443/")) == (
        "https://mlflow.example:8443/#/experiments/7/runs?workflowType=machine_learning")
    assert report.ui_runs_link(summary()) == "http://127.0.0.1:5000 -> Model training -> x"
