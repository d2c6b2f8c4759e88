#!/usr/bin/env python
"""Screenshot the MLflow UI on the trials of an optimix search, and check what it shows.

The script starts ``mlflow ui`` on 127.0.0.1 (a free port, working directory =
the store folder), waits for ``/health`` and drives headless Chromium
(Playwright) through up to three pages:

* ``--landing-out``: the experiment's plain link (``#/experiments/ID``, what
  MLflow's experiment list links to) in a browser that never chose between
  "GenAI" and "Model training"; it reports where MLflow lands (always checked,
  the PNG is optional). MLflow 3.17 decides this by the workflow it remembers
  in the browser (GenAI unless the user picked Model training) and lands a new
  browser on the GenAI overview whatever the experiment's
  ``mlflow.experimentKind`` tag says; ``?workflowType=machine_learning`` in the
  link opens the runs table.
* ``--runs-out``: the experiment's runs table in the "Model training" view,
  sorted by start time (the only order in which MLflow nests child runs), the
  search's run expanded with its trials nested under it, with columns for the
  objectives, the searched parameters and the ``optimix.pareto`` /
  ``optimix.status`` tags. It waits until the search's row and at least
  ``--min-nested`` trial rows (or all trials, if fewer) nested under it are in
  the page, and fails saying what it saw otherwise.
* ``--out``: the compare-runs page of the search's trials, once the
  parallel-coordinates plot and the run table have rendered.

``--link URL`` also reports where that link lands (e.g. the one ``optimix
search`` prints). It prints a JSON report on stdout (``--report FILE`` writes
it too): the landing page (``tab``, ``workflowType``, ``training_runs``), the
link's (``link``, same fields) and, for the runs
table, ``parent_row``, ``parent_expander``, ``nested_trials`` (rows nested
under the search), ``nested_trials_in_view`` and ``trials``. The mlflow
server's process group and the browser are always shut down; log lines go to
stderr. ``tests/test_mlflow_ui.py`` runs it on a small real search.

Requirements (nothing is downloaded at run time, so it works offline):

* Debian's Chromium: ``apt-get install -y chromium`` (``/usr/bin/chromium``;
  another binary can be given with ``--chromium``). Do NOT run
  ``playwright install``; the system Chromium is used.
* The Playwright Python package in the same environment as mlflow:
  ``pip install playwright`` (in the ``test`` extra).

Run it (from the repository root) on the quickstart's store::

    python docs/tools/mlflow_screenshot.py --store-dir /tmp/qs \\
        --runs-out docs/images/mlflow_runs.png --out docs/images/mlflow_compare.png

``--store-dir`` is the folder holding ``mlflow.db`` (and the ``mlruns``
artifact folder); ``--experiment`` names the experiment (default
``quickstart``); ``--parent RUN_ID`` picks the search (default: the latest run
tagged ``optimix.role=search`` in the experiment). When the experiment holds
other top-level runs, the runs table is filtered to the search's trials
(MLflow still shows their parent, expanded). The parallel-coordinates plot
keeps MLflow's default parameter axes and shows the search objectives as
metric axes (read from the parent's ``optimix.objectives`` tag, or given with
``--metrics``); the last metric listed colours the lines, so by default the
first objective (e.g. ``acc/facts``) does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# localStorage entries that keep MLflow's "Assistant" side panel closed.
ASSISTANT_CLOSED = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
}


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[mlflow_screenshot {time.monotonic() - _T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mlflow_exe() -> str:
    here = Path(sys.executable).with_name("mlflow")
    if here.exists():
        return str(here)
    exe = shutil.which("mlflow")
    if not exe:
        raise SystemExit("cannot find the `mlflow` executable")
    return exe


# --------------------------------------------------------------------------- runs


def resolve_runs(store_dir: Path, experiment: str, parent: str | None, metrics: list[str] | None):
    """Return (experiment_id, parent_run_id, child_run_ids, metrics_for_plot)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"experiment {experiment!r} not found in {store_dir / 'mlflow.db'}")
    if parent is None:
        found = client.search_runs(
            [exp.experiment_id],
            "tags.`optimix.role` = 'search'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise SystemExit(f"no run tagged optimix.role=search in experiment {experiment!r}")
        parent = found[0].info.run_id
    parent_run = client.get_run(parent)
    children = client.search_runs(
        [exp.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    if not children:
        raise SystemExit(f"search run {parent} has no child runs")
    if not metrics:
        # "acc/facts:max,train_flops:min" -> colour by the first objective (listed last).
        objectives = parent_run.data.tags.get("optimix.objectives", "")
        names = [o.rsplit(":", 1)[0].strip() for o in objectives.split(",") if o.strip()]
        metrics = names[1:] + names[:1]
    have = set().union(*(c.data.metrics for c in children))
    metrics = [m for m in metrics if m in have]
    return exp.experiment_id, parent, [c.info.run_id for c in children], metrics, children


def other_top_level_runs(store_dir: Path, exp_id: str, parent: str) -> int:
    """Active runs of the experiment other than ``parent`` that have no parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store_dir / 'mlflow.db'}")
    runs = client.search_runs([exp_id], max_results=5000)
    return sum(r.info.run_id != parent and "mlflow.parentRunId" not in r.data.tags for r in runs)


# --------------------------------------------------------------------------- server


def start_server(store_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [
        find_mlflow_exe(), "ui",
        "--backend-store-uri", "sqlite:///mlflow.db",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]
    log(f"starting {' '.join(cmd)} (cwd={store_dir}, log={log_path})")
    logf = open(log_path, "wb")
    try:
        # A process group of its own (stopped as one), in this script's session: whoever runs
        # the script in a session of its own (the test does) can end everything it started.
        group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
        return subprocess.Popen(
            cmd, cwd=store_dir, stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, **group,
        )
    finally:
        logf.close()


def wait_health(proc: subprocess.Popen, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"OK":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow ui did not answer {base}/health within {timeout:.0f}s")


def browser_groups(marker: str) -> set[int]:
    """Process groups of the processes whose command line holds ``marker`` (this run's Chromium
    profile folder). Playwright starts Chromium in a session of its own, so ending this
    script's session does not end the browser; this finds it."""
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            if marker.encode() in cmdline:
                groups.add(os.getpgid(int(entry)))
        except (OSError, ProcessLookupError):
            continue
    return groups


def kill_browser(marker: str, signals=(signal.SIGTERM, signal.SIGKILL)) -> None:
    """End every process group of this run's Chromium (SIGTERM, then SIGKILL)."""
    for sig in signals:
        groups = browser_groups(marker)
        if not groups:
            return
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and browser_groups(marker):
            time.sleep(0.1)


def stop_on_sigterm(proc: subprocess.Popen, marker: str) -> None:
    """On SIGTERM (a test's timeout), stop the server and the browser from the handler itself
    (an exception raised there can be swallowed inside Playwright's event loop), then exit."""
    def handler(signum, frame):
        log(f"signal {signum}: killing mlflow ui and Chromium")
        try:
            kill_browser(marker, (signal.SIGKILL,))
            os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_server)
        except (ProcessLookupError, PermissionError):
            pass
        finally:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def stop_server(proc: subprocess.Popen) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure no worker of the group survives.
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- browser


def init_script(entries: dict[str, str]) -> str:
    body = ";".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)})" for k, v in entries.items())
    return f"try {{ {body}; }} catch (e) {{}}"


def select_metrics(page, wanted: list[str], timeout_ms: int) -> None:
    """Make the parallel-coordinates 'Metrics:' select hold exactly `wanted`, in order."""
    label = page.get_by_text("Metrics:", exact=True)
    select = label.locator("xpath=following-sibling::div[contains(@class,'select')][1]")
    remove = select.locator("[class$='selection-item-remove']")
    while remove.count():
        remove.first.click()
        page.wait_for_timeout(200)
    for name in wanted:
        select.click()
        select.locator("input").fill(name)
        option = page.locator(f"[class*='select-item-option'][title={json.dumps(name)}]")
        option.first.wait_for(state="visible", timeout=timeout_ms)
        option.first.click()
        page.wait_for_timeout(300)
    page.keyboard.press("Escape")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    # Axis titles of the plotly parcoords plot are SVG text.
    for name in wanted:
        page.locator(".js-plotly-plot text", has_text=name).first.wait_for(timeout=timeout_ms)


def shoot_compare(ctx, base, exp_id, run_ids, metrics, out: Path, timeout_ms: int) -> None:
    url = (
        f"{base}/#/compare-runs?runs={json.dumps(run_ids, separators=(',', ':'))}"
        f"&experiments={json.dumps([exp_id])}&workflowType=machine_learning"
    )
    log(f"opening {url}")
    page = ctx.new_page()
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    page.get_by_text(f"Comparing {len(run_ids)} Runs").first.wait_for(timeout=timeout_ms)
    page.wait_for_selector(".js-plotly-plot", timeout=timeout_ms)
    page.get_by_text("Run details").first.wait_for(timeout=timeout_ms)
    if metrics:
        try:
            select_metrics(page, metrics, timeout_ms)
        except Exception as e:  # keep MLflow's default selection rather than fail
            log(f"warning: could not select metrics {metrics}: {e!r}")
    page.mouse.move(0, 0)
    page.wait_for_timeout(1500)  # let plotly finish its transitions
    page.screenshot(path=str(out))
    log(f"wrote {out}")
    page.close()


RUN_NAME_COL = "attributes.`Run Name`"

# Each rendered row of the runs table: its run id, index, the run-name link's text and left edge
# (a nested row's link is indented), whether its name cell holds an expand/collapse button, and
# whether it lies within the window (what the screenshot shows).
ROWS_JS = """() => {
  const seen = {};
  for (const r of document.querySelectorAll('.ag-row[row-id]')) {
    const cell = r.querySelector('[col-id="attributes.`Run Name`"]');
    if (!cell) continue;  // the row's other half (the grid splits pinned and scrolling columns)
    const a = cell.querySelector('a[href*="/runs/"]');
    const box = r.getBoundingClientRect();
    seen[r.getAttribute('row-id')] = {
      id: r.getAttribute('row-id'), index: Number(r.getAttribute('row-index')),
      name: a ? a.innerText.trim() : null, x: a ? a.getBoundingClientRect().left : null,
      expander: !!cell.querySelector('button'),
      in_view: box.top >= 0 && box.bottom <= window.innerHeight,
    };
  }
  return Object.values(seen).sort((p, q) => p.index - q.index);
}"""


def nesting(rows: list[dict], parent: str, child_ids: set[str]) -> dict:
    """What the rendered rows show of the search: its row, and its trials' rows nested under it
    (after it, link indented further than the parent's)."""
    top = next((r for r in rows if r["id"] == parent), None)
    nested = [
        r for r in rows
        if top is not None and r["id"] in child_ids and r["index"] > top["index"]
        and r["x"] is not None and top["x"] is not None and r["x"] > top["x"] + 4
    ]
    return {
        "rows": len(rows),
        "parent_row": top is not None,
        "parent_name": top["name"] if top else None,
        "parent_expander": bool(top and top["expander"]),
        "nested_trials": len(nested),
        "nested_trials_in_view": sum(r["in_view"] for r in nested),
        "indent_px": round(nested[0]["x"] - top["x"], 1) if nested else None,
        "trials": len(child_ids),
        "first_nested": [r["name"] for r in nested[:3]],
    }


def wait_nested(page, parent: str, child_ids: set[str], want: int, timeout_ms: int) -> dict:
    """Poll the DOM until the parent row and ``want`` nested trial rows are there; fail clearly."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        seen = nesting(page.evaluate(ROWS_JS), parent, child_ids)
        if seen["parent_row"] and seen["parent_expander"] and seen["nested_trials"] >= want:
            return seen
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"runs table: expected the search run {parent} with at least {want} of its "
                f"{len(child_ids)} trials nested under it, saw {json.dumps(seen)}")
        page.wait_for_timeout(500)


def shoot_runs(ctx, base, exp_id, parent, children, metrics, out: Path, timeout_ms: int,
               min_nested: int, others: int) -> dict:
    """The experiment's runs table ("Model training" view), sorted by start time so that MLflow
    nests each trial under its search, with the search expanded. ``others``: the number of
    other top-level runs in the experiment; when there are some, the table is filtered to the
    search's trials (MLflow then fetches their parent and still nests them)."""
    varying = sorted(  # the searched params (shape.* are the shapes they built)
        k for k in set().union(*(c.data.params for c in children))
        if len({c.data.params.get(k) for c in children}) > 1 and not k.startswith("shape.")
    )
    objectives = list(reversed(metrics))  # primary objective first
    columns = (
        [f"metrics.`{m}`" for m in objectives]
        + [f"params.`{p}`" for p in varying]
        + ["tags.`optimix.pareto`", "tags.`optimix.status`"]
    )
    # MLflow nests child runs under their parent only when the table is sorted by start time.
    search_filter = f"tags.mlflow.parentRunId = '{parent}'" if others else ""
    order_key = "attributes.start_time"
    state = {
        "searchFilter": search_filter,
        "orderByKey": order_key,
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        "columnOrder": [],
        "columnWidths": {},
        "runsExpanded": {parent: True},
        "runsPinned": [],
        "runsHidden": [],
        "runsVisibilityMap": {},
        "runsHiddenMode": "SHOW_ALL",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "autoRefreshEnabled": False,
    }
    key = f"MLflowLocalStorage-1.1-ExperimentPage-{json.dumps([exp_id])}-ReactComponentState"
    page = ctx.new_page()
    # Seed the experiment page's persisted UI state once per tab (a reload keeps later edits).
    page.add_init_script(
        "if (!sessionStorage.getItem('optimix-shot-seeded')) {"
        f"{init_script({key: json.dumps(state)})};"
        "sessionStorage.setItem('optimix-shot-seeded', '1'); }"
    )
    query = urllib.parse.urlencode(
        {
            "workflowType": "machine_learning",  # the "Model training" sidebar
            "searchFilter": search_filter,
            "orderByKey": order_key,
            "orderByAsc": "true",
        },
        quote_via=urllib.parse.quote,
    )
    url = f"{base}/#/experiments/{exp_id}/runs?{query}"
    child_ids = {c.info.run_id for c in children}
    want = min(min_nested, len(children))

    def wait_rows() -> dict:
        page.get_by_text("matching runs").first.wait_for(timeout=timeout_ms)
        seen = wait_nested(page, parent, child_ids, want, timeout_ms)
        page.wait_for_timeout(1000)
        return seen

    log(f"opening {url}")
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    wait_rows()
    # Widen the columns whose values get cut off. MLflow only applies stored widths
    # together with a stored column order, keyed by the grid's column ids.
    try:
        col_ids = page.evaluate(
            "[...document.querySelectorAll('.ag-header-row-column .ag-header-cell[col-id]')]"
            ".map(e => e.getAttribute('col-id'))"
        )
        log(f"runs table columns: {col_ids}")
        names = [c.data.tags.get("mlflow.runName", "") for c in children]
        widths = {}
        for cid in col_ids:
            if cid == RUN_NAME_COL:  # the trials' names, indented one level
                widths[cid] = max(200, min(380, 7 * max(map(len, names)) + 84))
            elif cid.startswith("params."):  # long floats may be cut: the run names carry them
                longest = max(len(str(c.data.params.get(cid[8:-1], ""))) for c in children)
                widths[cid] = max(120, min(130, 8 * longest + 24))
            elif cid.startswith("metrics."):
                shown = [f"{v:.12g}" for c in children if (v := c.data.metrics.get(cid[9:-1])) is not None]
                widths[cid] = max(95, min(130, 8 * max(map(len, shown), default=0) + 30))
            elif cid.startswith("tags."):
                widths[cid] = 112
        if widths:
            page.evaluate(
                "([k, order, widths]) => { const s = JSON.parse(localStorage.getItem(k) || '{}');"
                " s.columnOrder = order; s.columnWidths = widths; localStorage.setItem(k, JSON.stringify(s)); }",
                [key, col_ids, widths],
            )
            page.reload(wait_until="domcontentloaded", timeout=timeout_ms)
    except Exception as e:  # keep the default widths rather than fail
        log(f"warning: could not widen columns: {e!r}")
    seen = wait_rows()
    heading = page.locator("h2, h1").first.inner_text(timeout=timeout_ms).strip()
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)
    seen = wait_nested(page, parent, child_ids, want, timeout_ms)  # as screenshotted
    page.screenshot(path=str(out))
    log(f"wrote {out}: search {seen['parent_name']!r} with {seen['nested_trials']} of "
        f"{len(children)} trials nested under it ({seen['nested_trials_in_view']} in view)")
    page.close()
    return {"url": url[len(base):], "heading": heading, "file": str(out), **seen}


def check_landing(ctx, base, exp_id, timeout_ms: int, out: Path | None, link: str | None = None) -> dict:
    """Open the experiment the way its link in MLflow's experiment list does (``#/experiments/ID``,
    in a browser that never chose GenAI or Model training), or by ``link`` (a URL or its
    ``/#/...`` part), and report where MLflow lands."""
    page = ctx.new_page()
    if link:
        url = base + "/#" + link.split("#", 1)[1]
    else:
        url = f"{base}/#/experiments/{exp_id}"
    log(f"opening {url}")
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    prefix = f"#/experiments/{exp_id}/"
    page.wait_for_function(f"location.hash.startsWith({json.dumps(prefix)})", timeout=timeout_ms)
    heading = page.locator("h2, h1").first.inner_text(timeout=timeout_ms).strip()
    page.wait_for_timeout(1500)
    hash_ = page.evaluate("location.hash")
    path, _, query = hash_[len(prefix):].partition("?")
    tab = path.split("/")[0]
    workflow = urllib.parse.parse_qs(query).get("workflowType", [None])[0]
    if out is not None:
        page.mouse.move(0, 0)
        page.screenshot(path=str(out))
        log(f"wrote {out}")
    page.close()
    result = {"url": "/" + hash_, "tab": tab, "workflowType": workflow, "heading": heading,
              "training_runs": tab == "runs"}
    log(f"landing page of the experiment: {json.dumps(result)}")
    return result


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store-dir", required=True, type=Path, help="folder holding mlflow.db and mlruns/")
    ap.add_argument("--experiment", default="quickstart", help="experiment name (default: quickstart)")
    ap.add_argument("--out", type=Path, help="PNG for the compare-runs page")
    ap.add_argument("--parent", help="search (parent) run id; default: latest run tagged optimix.role=search")
    ap.add_argument("--runs-out", type=Path,
                    help="PNG of the experiment's runs table with the search's trials nested under it")
    ap.add_argument("--landing-out", type=Path,
                    help="PNG of the page the experiment's plain link (#/experiments/ID) lands on")
    ap.add_argument("--link", help="also report where this link (e.g. the one `optimix search` prints; "
                    "only its #/... part is used) lands, in the same fresh browser")
    ap.add_argument("--min-nested", type=int, default=10,
                    help="fail unless at least this many trial rows (or all trials, if fewer) are "
                         "nested under the search in the runs table (default: 10)")
    ap.add_argument("--report", type=Path, help="also write the JSON report (printed on stdout) here")
    ap.add_argument("--metrics", help="comma-separated metrics for the parallel-coordinates plot (last one colours it); "
                    "default: the search objectives, first objective last")
    ap.add_argument("--width", type=int, default=1680)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--port", type=int, default=0, help="port for mlflow ui (default: a free one)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium",
                    help="Chromium binary (default: Debian's /usr/bin/chromium)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for the server / each page")
    args = ap.parse_args(argv)
    if not (args.out or args.runs_out or args.landing_out):
        ap.error("nothing to do: give --runs-out, --out and/or --landing-out")

    store_dir = args.store_dir.resolve()
    if not (store_dir / "mlflow.db").exists():
        raise SystemExit(f"{store_dir / 'mlflow.db'} not found")
    if not Path(args.chromium).exists():
        raise SystemExit(f"Chromium not found at {args.chromium}; install it with `apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("needs Playwright: pip install playwright (no `playwright install` needed)") from None

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    exp_id, parent, run_ids, metrics, children = resolve_runs(store_dir, args.experiment, args.parent, metrics)
    others = other_top_level_runs(store_dir, exp_id, parent)
    log(f"experiment {args.experiment} ({exp_id}), search {parent}, {len(run_ids)} trials, metrics {metrics}, "
        f"{others} other top-level runs")

    outs = [o for o in (args.out, args.runs_out, args.landing_out) if o]
    for o in outs:
        o.parent.mkdir(parents=True, exist_ok=True)

    report: dict = {"experiment": args.experiment, "experiment_id": exp_id, "parent": parent,
                    "trials": len(run_ids)}
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    timeout_ms = int(args.timeout * 1000)
    with tempfile.TemporaryDirectory(prefix="mlflow-shot-") as tmp:
        profile = str(Path(tmp) / "profile")
        proc = start_server(store_dir, port, Path(tmp) / "mlflow-ui.log")
        stop_on_sigterm(proc, profile)
        try:
            wait_health(proc, base, args.timeout)
            log(f"mlflow ui is up at {base}")
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    profile,  # fresh, empty user-data-dir
                    executable_path=args.chromium,
                    headless=True,
                    args=CHROMIUM_ARGS,
                    viewport={"width": args.width, "height": args.height},
                    timeout=timeout_ms,
                )
                try:
                    ctx.add_init_script(init_script(ASSISTANT_CLOSED))
                    # First, while the browser has stored nothing else about the experiment.
                    report["landing"] = check_landing(ctx, base, exp_id, timeout_ms, args.landing_out)
                    if args.link:
                        report["link"] = check_landing(ctx, base, exp_id, timeout_ms, None, args.link)
                    if args.runs_out:
                        report["runs"] = shoot_runs(ctx, base, exp_id, parent, children, metrics,
                                                    args.runs_out, timeout_ms, args.min_nested, others)
                    if args.out:
                        shoot_compare(ctx, base, exp_id, run_ids, metrics, args.out, timeout_ms)
                        report["compare"] = {"file": str(args.out)}
                finally:
                    ctx.close()
        except Exception:
            log_path = Path(tmp) / "mlflow-ui.log"
            if log_path.exists():
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                log("mlflow ui log tail:\n" + "\n".join(tail))
            raise
        finally:
            kill_browser(profile)  # whatever of Chromium outlived ctx.close()
            stop_server(proc)
            log("mlflow ui and Chromium stopped")
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
