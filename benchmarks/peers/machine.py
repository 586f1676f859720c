"""How busy the rest of the machine is while a workload runs.

On 2 cores, another process's torch threads slow a server far more than its share (threads of
both spin for the same cores), so each record carries the CPU that processes outside the run
used during it, and a workload may wait a while for the machine to go quiet first.
"""

from __future__ import annotations

import os
import time

import psutil


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _tree_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes and their descendants, each process counted once."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    total = 0.0
    for p in procs.values():
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


class ForeignLoad:
    """CPU cores used on average by processes other than `pids` (and this one) since `start()`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self.start()

    def start(self) -> None:
        self.t0, self.busy0, self.own0 = time.time(), _busy_seconds(), _tree_seconds(self.pids)

    def cores(self) -> float:
        wall = max(time.time() - self.t0, 1e-6)
        busy = _busy_seconds() - self.busy0
        own = _tree_seconds(self.pids) - self.own0  # a process that exited meanwhile is missed
        return max(busy - own, 0.0) / wall


def wait_quiet(pids: list[int], max_wait: float, below: float = 0.3, window: float = 2.0) -> float:
    """Waits (up to `max_wait` s) until others use under `below` cores over `window` s; returns
    the seconds waited."""
    t0 = time.time()
    while time.time() - t0 < max_wait:
        load = ForeignLoad(pids)
        time.sleep(window)
        if load.cores() < below:
            break
    return time.time() - t0
