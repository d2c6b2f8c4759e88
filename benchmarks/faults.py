"""Faults and load: a search stopped at each exact kill point, by SIGINT and SIGTERM, by a
second driver, by MLflow faults, and loaded with many trials finishing together or a
thousand bookkept trials; every case then judged by ``optimix check``.

Every run drives the real CLI (in-process Ray; MLflow in SQLite, or a real ``mlflow server``
behind ``tests/mlflow_proxy.py``) in a fresh folder under /tmp, each command in a session of
its own that is ended whole afterwards (Ray's daemons outlive a driver killed with SIGKILL).
A stopped search is taken up with ``optimix search ... --resume``; its wall time is the time
to recover. Then ``optimix check --json`` must find no violation (ledger, MLflow and Optuna
agree; every point once; Pareto tags equal a recomputation; no Optuna trial RUNNING; FLOPs
equal everywhere), and the benchmark adds what each case promises: the exit status, no
traceback, every planned trial in the ledger, every ledger line whole, no "database is
locked", and the test suite's independent frontier (``frontier_by_hand``) equal to the tags.

Cases (``--cases``):

- ``kill``: ``OPTIMIX_KILL_AT=POINT:N`` for every point of ``optimix.core.faults.POINTS``, N drawn
  with ``random.Random`` from the visits an uninterrupted search makes (one per trial; the
  frontier-tag point ``mid_tags`` only where two or more runs' tags change at once: 1..2,
  and a search that never got there is killed at it in a ``--resume``, which retags every
  run first);
- ``baseline``: an uninterrupted search, for comparison; the time from its lock to its exit
  is the window the signals and the second driver land in;
- ``signal``: SIGINT to the process group (as Ctrl-C) or SIGTERM to the driver, at a random
  time after the search took its lock (``--signal-from trial``: after its first trial was
  in the ledger); exit 130/143, no traceback, state ``interrupted``, parent run KILLED
  with ``optimix.ended``; a signal that finds the search already ended (state
  ``finished``) may also end the process by the signal or exit 0;
- ``concurrent``: a second ``--resume`` while the search runs: refused with exit 2 ("still
  running"), and the first search finishes;
- ``proxy``: a real ``mlflow server`` behind the fault proxy: once the first trial is in the
  ledger, a few MLflow requests meet ``5xx_after_commit`` (on ``runs/create``), ``429`` or
  ``hang``; the search finishes or exits 3; the proxy back to ok, ``--resume`` (if needed);
- ``load``: 8 trials finishing together, each logging a 5-point learning curve;
- ``bookkeeping``: ``--bookkeeping-trials`` near-instant trials, 8 at a time;
- ``hostile``: what a hostile user tries (``benchmarks/hostile.py``: credentials in the
  tracking URI, colliding experiment names, two searches creating one store, malformed
  ledgers, tampering, bad seeds and unschedulable trials, ...), one run per probe.

    python benchmarks/faults.py [--cases baseline,kill,signal,concurrent,proxy,load,bookkeeping,hostile]
        [--probes credentials,...]
        [--repeats 5] [--proxy-repeats 1] [--seed 0] [--bookkeeping-trials 1000]

Prints one row per case and writes ``docs/reliability_results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import logging
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_workdir import (  # noqa: E402
    ROOT,
    TINY,
    Run,
    Workdir,
    completed,
    interrupted_record,
    last_line,
    no_traceback,
    wait_for,
)

from optimix.core.faults import POINTS  # noqa: E402

from cluster_fixtures import mlflow_server  # noqa: E402
from mlflow_proxy import FaultyProxy  # noqa: E402

CASES = ("baseline", "kill", "signal", "concurrent", "proxy", "load", "bookkeeping", "hostile")
# How often an uninterrupted TINY search reaches each kill point: once per trial, except the
# frontier tags, rewritten for two or more runs at once (what ``mid_tags`` needs) once or twice.
VISITS = {point: TINY["search"]["trials"] for point in POINTS} | {"mid_tags": 2}
# (mode, path, times) of the proxy case
PROXY_FAULTS = (("5xx_after_commit", "runs/create", 3), ("429", "", 3), ("hang", "", 2))
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


# ---------------------------------------------------------------------------------------------
# The cases: each returns its Run (violations included), never raises for a fault it finds


def baseline_run(keep: bool) -> Run:
    """An uninterrupted search: its wall time, the time from its lock to its exit (the window
    the signals and the second driver are drawn in: some land after the end), and from its
    first trial in the ledger to its lock's release (the window of ``--signal-from trial``)."""
    run = Run("baseline", "none")
    w = Workdir(TINY, run)
    try:
        started = w.start(w.search_args())
        taken = released = first_trial = None
        while started.proc.poll() is None:
            state = w.state()
            held = state is not None and state.running()
            if held and taken is None:
                taken = time.monotonic()
            if first_trial is None and state is not None and w.ledger_trials() >= 1:
                first_trial = time.monotonic()
            if not held and taken is not None and released is None:
                released = time.monotonic()
            time.sleep(0.02)
        ended = time.monotonic()
        done = w.finish(started)
        run.exit, run.wall_s = done.returncode, round(done.wall_s, 1)
        if taken is not None:
            run.notes["lock_held_s"] = round((released or ended) - taken, 1)
            run.notes["lock_to_exit_s"] = round(ended - taken, 1)
        if first_trial is not None:
            run.notes["first_trial_to_release_s"] = round((released or ended) - first_trial, 1)
        completed(w, done, "search")
        w.check(TINY["search"]["trials"])
    except Exception as err:
        run.violations.append(f"benchmark: {type(err).__name__}: {err}")
    w.close(keep)
    return run


def kill_run(point: str, nth: int, keep: bool) -> Run:
    run = Run(f"kill:{point}", f"OPTIMIX_KILL_AT={point}:{nth}")
    w = Workdir(TINY, run)
    try:
        first = w.call(w.search_args(), env={"OPTIMIX_KILL_AT": f"{point}:{nth}"})
        if first.returncode == 0 and point == "mid_tags":
            # This search never rewrote two runs' tags at once N times. A --resume retags
            # every run first (it cannot know what a killed driver left): one visit.
            run.notes["not_reached"] = f"{point}:{nth} not reached in the search; killed in a --resume"
            run.fault += f" (not reached; then {point}:1 in a --resume)"
            completed(w, first, "search")
            first = w.call(w.search_args("--resume"), env={"OPTIMIX_KILL_AT": f"{point}:1"})
        run.exit, run.wall_s, run.before = first.returncode, round(first.wall_s, 1), w.ledger_trials()
        run.landed = first.returncode == -signal.SIGKILL
        if run.landed:
            done = w.resume()
            run.recover_s = round(done.wall_s, 1)
            completed(w, done, "--resume")
        else:  # the N-th visit never came: an uninterrupted search
            run.notes.setdefault("not_reached", True)
            completed(w, first, "search")
        w.check(TINY["search"]["trials"])
    except Exception as err:  # the benchmark's own failure: a violation to look at, not a crash
        run.violations.append(f"benchmark: {type(err).__name__}: {err}")
    w.close(keep)
    return run


def signal_run(sig: signal.Signals, delay_s: float, start: str, keep: bool) -> Run:
    """``start``: ``lock`` (the delay counts from the driver's lock: start-up included) or
    ``trial`` (from the first trial in the ledger: mid-search and the end)."""
    since = "the search took its lock" if start == "lock" else "the first trial was in the ledger"
    case = f"signal:{sig.name}" + ("" if start == "lock" else " after a trial")
    run = Run(case, f"{sig.name} {delay_s:.1f} s after {since}")
    w = Workdir(TINY, run)
    try:
        first = w.start(w.search_args())
        proc = first.proc
        started = ((lambda: (s := w.state()) is not None and s.running()) if start == "lock"
                   else (lambda: w.ledger_trials() >= 1))
        if wait_for(started, first, 180):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=delay_s)
        sent = proc.poll() is None
        if sent:
            run.before = w.ledger_trials()
            if sig == signal.SIGINT:
                os.killpg(proc.pid, sig)  # Ctrl-C reaches the terminal's whole process group
            else:
                proc.send_signal(sig)
        first = w.finish(first)
        run.exit, run.wall_s = first.returncode, round(first.wall_s, 1)
        saved = (w.state().read() if w.state() else None) or {}
        run.notes["status"] = saved.get("status")
        if not sent:
            run.notes["ended_first"] = True
            completed(w, first, "search")
        elif saved.get("status") == "finished":
            # The search had ended (its records complete) when the signal came: the process
            # may exit 0, as interrupted, or by the signal; nothing is left to resume.
            run.notes["after_the_end"] = True
            no_traceback(w, first, f"the search ended before {sig.name}")
            if first.returncode not in (0, EXIT_SIGNAL[sig], -sig):
                run.violations.append(f"exit {first.returncode} after {sig.name} at the end: "
                                      f"{last_line(first.stderr)}")
        else:
            run.landed = True
            no_traceback(w, first, f"the search interrupted by {sig.name}")
            if first.returncode != EXIT_SIGNAL[sig]:
                run.violations.append(f"exit {first.returncode} after {sig.name}, not {EXIT_SIGNAL[sig]}: "
                                      f"{last_line(first.stderr)}")
            elif f"interrupted by {sig.name}" not in first.stderr or "resume with:" not in first.stderr:
                run.violations.append(f"no 'interrupted by {sig.name}' and 'resume with:' lines: "
                                      f"{first.stderr[-300:]!r}")
            else:
                run.violations += interrupted_record(w, saved, sig)
            done = w.resume()
            run.recover_s = round(done.wall_s, 1)
            completed(w, done, "--resume")
        w.check(TINY["search"]["trials"])
    except Exception as err:
        run.violations.append(f"benchmark: {type(err).__name__}: {err}")
    w.close(keep)
    return run


def concurrent_run(delay_s: float, keep: bool) -> Run:
    run = Run("concurrent", f"a second --resume {delay_s:.1f} s after the first took its lock")
    w = Workdir(TINY, run)
    try:
        first = w.start(w.search_args())
        if wait_for(lambda: (s := w.state()) is not None and s.running(), first, 180):
            with contextlib.suppress(subprocess.TimeoutExpired):
                first.proc.wait(timeout=delay_s)
        run.before = w.ledger_trials()
        # While the second runs, watch who holds the lock (the file holds the holder's pid):
        # the first releases it when its search ends, a few seconds before its process exits.
        second_started = w.start(w.search_args("--resume"))
        first_released = False
        deadline = time.monotonic() + 180
        while second_started.proc.poll() is None and time.monotonic() < deadline:
            state = w.state()
            if state is not None and (not state.running()
                                      or (state.path / "lock").read_text().strip() != str(first.proc.pid)):
                first_released = True
            time.sleep(0.02)
        second = w.finish(second_started, timeout=180)
        run.exit = second.returncode
        first_done = w.finish(first)
        run.wall_s = round(first_done.wall_s, 1)
        completed(w, first_done, "the first search")
        if second.returncode == 2:
            run.landed = True
            if "still running" not in second.stderr:
                run.violations.append(f"the refusal does not say 'still running': {second.stderr[-300:]!r}")
            if len(second.stderr.strip().splitlines()) != 1:
                run.violations.append(f"the refusal is not one line: {second.stderr[-300:]!r}")
        elif second.returncode == 0 and first_released:
            run.notes["first_ended_first"] = "the first search had ended (lock released) before the second took it"
        else:
            run.violations.append(f"the second driver: exit {second.returncode}, not 2 (the first "
                                  f"{'had released' if first_released else 'held'} the lock): "
                                  f"{last_line(second.stderr)}")
        no_traceback(w, second, "the second driver")
        w.check(TINY["search"]["trials"])
    except Exception as err:
        run.violations.append(f"benchmark: {type(err).__name__}: {err}")
    w.close(keep)
    return run


def proxy_run(mode: str, path: str, times: int, keep: bool) -> Run:
    where = f" on {path}" if path else ""
    run = Run(f"proxy:{mode}", f"{mode}{where}, {times} requests, from the first trial in the ledger")
    w = Workdir(TINY, run)
    try:
        with mlflow_server(w.root / "server") as server, FaultyProxy(server.uri) as proxy:
            w.uri, w.hand_uri = proxy.url, server.uri
            started = w.start(w.search_args())
            wait_for(lambda: w.ledger_trials() >= 1, started, 180)
            proxy.set(mode, path, times)
            run.before = w.ledger_trials()
            first = w.finish(started)
            run.exit, run.wall_s, run.landed = first.returncode, round(first.wall_s, 1), proxy.faulted > 0
            run.notes["faulted_requests"] = proxy.faulted
            proxy.set("ok")
            no_traceback(w, first, "the search")
            saved = (w.state().read() if w.state() else None) or {}
            run.notes["status"] = saved.get("status")
            if first.returncode == 3:
                if "--resume" not in last_line(first.stderr) or "kept" not in first.stderr:
                    run.violations.append(f"exit 3 without the kept/--resume lines: {first.stderr[-300:]!r}")
                if saved.get("status") == "finished":  # MLflow lacks trials: not a finished search
                    run.violations.append("state.json: status 'finished' after exit 3 (MLflow unreachable "
                                          "at the end)")
                done = w.resume()
                run.recover_s = round(done.wall_s, 1)
                completed(w, done, "--resume")
            elif first.returncode != 0:
                run.violations.append(f"the search: exit {first.returncode}, not 0 or 3: "
                                      f"{last_line(first.stderr)}")
            w.check(TINY["search"]["trials"])
    except Exception as err:
        run.violations.append(f"benchmark: {type(err).__name__}: {err}")
    w.close(keep)
    return run


def burst_run(case: str, trials: int, concurrent: int, points: int, keep: bool) -> Run:
    """Many trials finishing at once, each logging a learning curve; no fault."""
    tree = json.loads(json.dumps(TINY))
    tree["train"]["tokens"] = 2_000
    tree["eval"]["points"] = points
    tree["search"].update(trials=trials, max_concurrent=concurrent, cpus_per_trial=2 / concurrent)
    run = Run(case, f"{trials} trials, {concurrent} at a time, {points}-point curves")
    w = Workdir(tree, run)
    try:
        done = w.call(w.search_args(), timeout=3600)
        run.exit, run.wall_s = done.returncode, round(done.wall_s, 1)
        completed(w, done, "search")
        w.check(trials, curve_points=points if trials <= 50 else None)
    except Exception as err:
        run.violations.append(f"benchmark: {type(err).__name__}: {err}")
    w.close(keep)
    return run


# ---------------------------------------------------------------------------------------------
# Summary


def rows(runs: list[Run]) -> list[dict]:
    """One row per case: runs, faults landed, first exits, violations, time to recover."""
    out = []
    for case in dict.fromkeys(r.case for r in runs):
        mine = [r for r in runs if r.case == case]
        recover = [r.recover_s for r in mine if r.recover_s is not None]
        walls = [r.wall_s for r in mine if r.wall_s is not None]
        exits = Counter(r.exit for r in mine if r.exit is not None)  # (a probe runs many commands)
        out.append({
            "case": case, "runs": len(mine), "landed": sum(r.landed for r in mine),
            "exits": ", ".join(f"{code}x{n}" for code, n in sorted(exits.items(), key=lambda kv: str(kv[0])))
            or "-",
            "violations": sum(len(r.violations) for r in mine),
            "runs_with_violations": sum(bool(r.violations) for r in mine),
            "recover_median_s": round(statistics.median(recover), 1) if recover else None,
            "recover_max_s": max(recover) if recover else None,
            "wall_median_s": round(statistics.median(walls), 1) if walls else None,
        })
    return out


def table(summary: list[dict]) -> str:
    head = (f"{'case':<34}{'runs':>5}{'landed':>8}  {'first exits':<16}{'violations':>11}"
            f"{'recover med':>13}{'recover max':>13}{'wall med':>10}")
    lines = [head, "-" * len(head)]
    for r in summary:
        med = "-" if r["recover_median_s"] is None else f"{r['recover_median_s']:.1f} s"
        top = "-" if r["recover_max_s"] is None else f"{r['recover_max_s']:.1f} s"
        wall = "-" if r["wall_median_s"] is None else f"{r['wall_median_s']:.1f} s"
        lines.append(f"{r['case']:<34}{r['runs']:>5}{r['landed']:>8}  {r['exits']:<16}{r['violations']:>11}"
                     f"{med:>13}{top:>13}{wall:>10}")
    return "\n".join(lines)


def source_digest() -> str:
    """A digest of optimix/ (the code under test may be edited while the benchmark runs)."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "optimix").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def machine() -> dict:
    def out(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()
        except OSError:
            return ""

    return {"uname": out("uname", "-a"), "nproc": os.cpu_count(), "python": platform.python_version(),
            "commit": out("git", "rev-parse", "HEAD"),
            "optimix_changes_since_commit": out("git", "diff", "--shortstat", "HEAD", "--", "optimix")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--points", default=",".join(POINTS), help="kill points to run (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per kill point, per signal, of concurrent")
    parser.add_argument("--proxy-repeats", type=int, default=1, help="runs per MLflow fault")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--signal-window", type=float, default=None,
                        help="signals and the second driver land uniformly in [0, this] s after the "
                             "search took its lock (default: the baseline search's lock to its exit; "
                             "with --signal-from trial, its first trial to its lock's release)")
    parser.add_argument("--signal-from", choices=("lock", "trial"), default="lock",
                        help="signals count their delay from the driver's lock, or from the first "
                             "trial in the ledger")
    parser.add_argument("--probes", default="", help="hostile probes to run (default: all)")
    parser.add_argument("--load-trials", type=int, default=8)
    parser.add_argument("--bookkeeping-trials", type=int, default=1000)
    parser.add_argument("--keep", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the folder of a run that found a violation")
    parser.add_argument("--out", default=str(ROOT / "docs" / "reliability_results.json"))
    args = parser.parse_args()
    logging.getLogger("optimix").setLevel(logging.ERROR)  # a torn ledger line read here is expected
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES)) + sorted(set(args.points.split(",")) - set(POINTS))
    if unknown:
        parser.error(f"unknown case or point: {', '.join(unknown)}")

    command = "python benchmarks/faults.py " + shlex.join(sys.argv[1:])
    started = time.monotonic()
    digest = source_digest()
    print(f"{command}\noptimix/ digest {digest}", flush=True)
    runs: list[Run] = []
    window = args.signal_window

    def document(window: float | None, complete: bool) -> dict:
        return {
            "command": command,
            "complete": complete,
            "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "wall_s": round(time.monotonic() - started, 1),
            "optimix_digest": {"start": digest, "end": source_digest()},
            "space": TINY,
            "kill_visits": VISITS,
            "signal_window_s": window,
            "proxy_faults": [{"mode": m, "path": p, "times": t} for m, p, t in PROXY_FAULTS],
            "cases": rows(runs),
            "runs": [asdict(r) for r in runs],
        }

    def add(run: Run) -> None:
        runs.append(run)
        Path(args.out).write_text(json.dumps(document(window, False), indent=2) + "\n")  # so far
        verdict = "ok" if not run.violations else f"{len(run.violations)} VIOLATIONS"
        recover = f", --resume {run.recover_s:.1f} s" if run.recover_s is not None else ""
        print(f"[{time.monotonic() - started:6.0f} s] {run.case:<24} {run.fault}: exit {run.exit}, "
              f"landed {run.landed}, {run.before} trials before{recover}, {run.trials} trials: {verdict}",
              flush=True)
        for v in run.violations:
            print(f"    {v}", flush=True)
        if run.kept:
            print(f"    kept {run.kept}", flush=True)

    # Each case draws from its own generator, so choosing cases does not move the others' draws.
    if "baseline" in cases or (window is None and {"signal", "concurrent"} & set(cases)):
        add(baseline_run(args.keep))
        key = "lock_to_exit_s" if args.signal_from == "lock" else "first_trial_to_release_s"
        window = window or runs[-1].notes.get(key) or 20.0
    if "kill" in cases:
        rng = random.Random(f"kill-{args.seed}")
        draws = {p: [rng.randint(1, VISITS[p]) for _ in range(args.repeats)] for p in POINTS}
        for point in args.points.split(","):
            for nth in draws[point]:
                add(kill_run(point, nth, args.keep))
    if "signal" in cases:
        rng = random.Random(f"signal-{args.seed}")
        for sig in (signal.SIGINT, signal.SIGTERM):
            for _ in range(args.repeats):
                add(signal_run(sig, rng.uniform(0, window), args.signal_from, args.keep))
    if "concurrent" in cases:
        rng = random.Random(f"concurrent-{args.seed}")
        for _ in range(args.repeats):
            add(concurrent_run(rng.uniform(0, window), args.keep))
    if "proxy" in cases:
        for mode, path, times in PROXY_FAULTS:
            for _ in range(args.proxy_repeats):
                add(proxy_run(mode, path, times, args.keep))
    if "load" in cases:
        add(burst_run(f"load ({args.load_trials} together)", args.load_trials, args.load_trials, 5, args.keep))
    if "bookkeeping" in cases and args.bookkeeping_trials:
        add(burst_run(f"bookkeeping ({args.bookkeeping_trials})", args.bookkeeping_trials, 8, 1, args.keep))
    if "hostile" in cases:
        from hostile import PROBES  # benchmarks/hostile.py: one run per probe

        for run in PROBES:
            if not args.probes or run.__name__ in args.probes.split(","):
                add(run(args.keep))

    doc = document(window, True)
    summary, after = doc["cases"], doc["optimix_digest"]["end"]
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("\n" + table(summary))
    total = sum(r["violations"] for r in summary)
    print(f"\n{len(runs)} runs, {total} violations, {doc['wall_s'] / 60:.1f} min; wrote {args.out}")
    if after != digest:
        print(f"note: optimix/ changed while the benchmark ran ({digest} -> {after})")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
