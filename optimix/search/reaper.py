"""Nothing of the in-process Ray outlives a driver killed outright (``kill -9``, the OOM killer).

Ray ties its GCS and raylet to the driver's life, and the raylet's agents to the raylet's
(``RuntimeEnvAgent``, ``DashboardAgent``). But an agent whose raylet died unexpectedly first
reports that to the driver through the GCS, which died too: Ray 2.60 waits out that call's
60 s timeout (``ray._private.process_watcher.report_raylet_error_logs``), listening all the
while. So ``watch`` starts a small process that reads a pipe from the driver: when the
driver is gone (the pipe ends), it kills what is left of the processes Ray had started
under the driver, each checked by its start time so that a reused pid is never touched.
Linux only (it reads ``/proc``); elsewhere it does nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# The watchdog: ignores Ctrl-C (it reaches the terminal's whole process group), waits for the
# driver's end of the pipe to close, gives Ray's processes a moment to end on their own, then
# kills what is left of them.
_WATCH = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
procs = [tuple(map(int, arg.split(":"))) for arg in sys.argv[1:]]
def started(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])
sys.stdin.buffer.read()
deadline = time.monotonic() + 2.0
while True:
    left = [pid for pid, start in procs if started(pid) == start]
    if not left or time.monotonic() > deadline:
        break
    time.sleep(0.1)
for pid in left:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


_watchdogs: list[subprocess.Popen] = []  # held: were one collected, its pipe would end early


def children() -> set[tuple[int, int]]:
    """(pid, start time) of the processes now under this one (empty where there is no /proc)."""
    return set(_descendants(os.getpid())) if Path("/proc/self/stat").exists() else set()


def watch(before: set[tuple[int, int]]) -> None:
    """Start the watchdog over the processes under this one that ``before`` (``children()``
    just before ``ray.init``) did not have: the daemons and agents of the Ray it started."""
    procs = sorted(children() - before)
    if not procs:
        return
    # The pipe's write end stays in this process alone (Python's pipes are not inherited).
    _watchdogs.append(subprocess.Popen(
        [sys.executable, "-c", _WATCH, *(f"{pid}:{start}" for pid, start in procs)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    log.debug("watching Ray's processes %s", [pid for pid, _ in procs])


def _descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live process below ``root``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid ... starttime is the 20th
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        starts[int(entry)] = int(fields[19])
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append((pid, starts[pid]))
        todo += children.get(pid, [])
    return out
