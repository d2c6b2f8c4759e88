#!/usr/bin/env python
"""Screenshot the MLflow UI's "compare runs" page for the trials of an optimix search.

The script starts ``mlflow ui`` on 127.0.0.1 (a free port, working directory =
the store folder), waits for ``/health``, opens the compare-runs page for the
child runs of one optimix search in headless Chromium (driven by Playwright),
waits until the parallel-coordinates plot and the run table have rendered, and
saves a screenshot. Optionally it also saves a screenshot of the experiment's
runs table, filtered to the search's trials, with columns for the objectives,
the searched parameters and the ``optimix.pareto`` / ``optimix.status`` tags.
The mlflow server's process group and the browser are always shut down.

Requirements (nothing is downloaded at run time, so it works offline):

* Debian's Chromium: ``apt-get install -y chromium`` (``/usr/bin/chromium``;
  another binary can be given with ``--chromium``). Do NOT run
  ``playwright install``; the system Chromium is used.
* The Playwright Python package in the same environment as mlflow:
  ``/work/venv/bin/pip install playwright``.

Run it (from the repository root)::

    /work/venv/bin/python docs/tools/mlflow_screenshot.py \\
        --store-dir /tmp/qs --experiment quickstart \\
        --parent f83e5c3edb0f4e9588482f60f3158c9f \\
        --out docs/images/mlflow_compare.png \\
        --runs-out docs/images/mlflow_runs.png

``--store-dir`` is the folder holding ``mlflow.db`` (and the ``mlruns``
artifact folder); ``--parent RUN_ID`` picks the search (default: the latest
run tagged ``optimix.role=search`` in the experiment, whatever its size, so
pass ``--parent`` when the store holds several searches). The
parallel-coordinates plot keeps MLflow's default parameter axes and shows the
search objectives as metric axes (read from the parent's ``optimix.objectives``
tag, or given with ``--metrics``); the last metric listed colours the lines,
so by default the first objective (e.g. ``acc/facts``) does.
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
        return subprocess.Popen(
            cmd, cwd=store_dir, stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
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


def shoot_runs(ctx, base, exp_id, parent, children, metrics, out: Path, timeout_ms: int) -> None:
    varying = sorted(
        k for k in set().union(*(c.data.params for c in children))
        if len({c.data.params.get(k) for c in children}) > 1
    )
    objectives = list(reversed(metrics))  # primary objective first
    columns = (
        [f"metrics.`{m}`" for m in objectives]
        + [f"params.`{p}`" for p in varying]
        + ["tags.`optimix.pareto`", "tags.`optimix.status`"]
    )
    search_filter = f"tags.mlflow.parentRunId = '{parent}'"
    order_key = f"metrics.`{objectives[0]}`" if objectives else "attributes.start_time"
    state = {
        "searchFilter": search_filter,
        "orderByKey": order_key,
        "orderByAsc": False,
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
            "searchFilter": search_filter,
            "orderByKey": order_key,
            "orderByAsc": "false",
            "workflowType": "machine_learning",  # the "Model training" sidebar
        },
        quote_via=urllib.parse.quote,
    )
    url = f"{base}/#/experiments/{exp_id}/runs?{query}"
    name = children[-1].data.tags.get("mlflow.runName", children[-1].info.run_id)

    def wait_rows() -> None:
        page.get_by_text("matching runs").first.wait_for(timeout=timeout_ms)
        page.get_by_text(name, exact=False).first.wait_for(timeout=timeout_ms)
        page.wait_for_timeout(1000)

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
        widths = {}
        for cid in col_ids:
            if "Run Name" in cid:
                widths[cid] = 270
            elif cid.startswith("params."):
                longest = max(len(str(c.data.params.get(cid[8:-1], ""))) for c in children)
                widths[cid] = max(110, min(175, 8 * longest + 24))
            elif cid.startswith("metrics."):
                widths[cid] = 120
        if widths:
            page.evaluate(
                "([k, order, widths]) => { const s = JSON.parse(localStorage.getItem(k) || '{}');"
                " s.columnOrder = order; s.columnWidths = widths; localStorage.setItem(k, JSON.stringify(s)); }",
                [key, col_ids, widths],
            )
            page.reload(wait_until="domcontentloaded", timeout=timeout_ms)
            wait_rows()
    except Exception as e:  # keep the default widths rather than fail
        log(f"warning: could not widen columns: {e!r}")
    page.mouse.move(0, 0)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(out))
    log(f"wrote {out}")
    page.close()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store-dir", required=True, type=Path, help="folder holding mlflow.db and mlruns/")
    ap.add_argument("--experiment", default="quickstart", help="experiment name (default: quickstart)")
    ap.add_argument("--out", required=True, type=Path, help="PNG for the compare-runs page")
    ap.add_argument("--parent", help="search (parent) run id; default: latest run tagged optimix.role=search")
    ap.add_argument("--runs-out", type=Path, help="optional PNG of the experiment's runs table, filtered to the trials")
    ap.add_argument("--metrics", help="comma-separated metrics for the parallel-coordinates plot (last one colours it); "
                    "default: the search objectives, first objective last")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--port", type=int, default=0, help="port for mlflow ui (default: a free one)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium",
                    help="Chromium binary (default: Debian's /usr/bin/chromium)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for the server / each page")
    args = ap.parse_args(argv)

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
    log(f"experiment {args.experiment} ({exp_id}), search {parent}, {len(run_ids)} trials, metrics {metrics}")

    outs = [args.out] + ([args.runs_out] if args.runs_out else [])
    for o in outs:
        o.parent.mkdir(parents=True, exist_ok=True)

    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    timeout_ms = int(args.timeout * 1000)
    with tempfile.TemporaryDirectory(prefix="mlflow-shot-") as tmp:
        proc = start_server(store_dir, port, Path(tmp) / "mlflow-ui.log")
        try:
            wait_health(proc, base, args.timeout)
            log(f"mlflow ui is up at {base}")
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"),  # fresh, empty user-data-dir
                    executable_path=args.chromium,
                    headless=True,
                    args=CHROMIUM_ARGS,
                    viewport={"width": args.width, "height": args.height},
                    timeout=timeout_ms,
                )
                try:
                    ctx.add_init_script(init_script(ASSISTANT_CLOSED))
                    shoot_compare(ctx, base, exp_id, run_ids, metrics, args.out, timeout_ms)
                    if args.runs_out:
                        shoot_runs(ctx, base, exp_id, parent, children, metrics, args.runs_out, timeout_ms)
                finally:
                    ctx.close()
        except Exception:
            log_path = Path(tmp) / "mlflow-ui.log"
            if log_path.exists():
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                log("mlflow ui log tail:\n" + "\n".join(tail))
            raise
        finally:
            stop_server(proc)
            log("mlflow ui stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
