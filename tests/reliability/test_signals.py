"""Stopping under load: SIGTERM drains within its deadline and takes the children along; a
killed child fails the requests in flight with an error and takes the server down, naming it."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from runtime.server_process import ServerProcess

pytestmark = pytest.mark.slow

LONG = {"max_new_tokens": 3000, "ignore_eos": True, "temperature": 0}


def flood(url: str, n: int, results: list) -> list[threading.Thread]:
    def post(i: int) -> None:
        try:
            r = httpx.post(
                f"{url}/generate",
                json={"text": f"Story {i}:", "sampling_params": LONG},
                timeout=120,
            )
            results.append(r.status_code)
        except httpx.HTTPError as e:
            results.append(type(e).__name__)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def wait_running(url: str, n: int) -> None:
    deadline = time.time() + 180  # generous: a loaded 2-core machine, not a slow server
    while httpx.get(f"{url}/get_server_info").json()["num_running_reqs"] < n:
        assert time.time() < deadline
        time.sleep(0.2)


def test_sigterm_under_a_full_queue_drains_within_the_deadline():
    srv = ServerProcess(
        "--max-total-tokens",
        "4096",
        "--max-running-requests",
        "4",
        "--graceful-shutdown-timeout",
        "2",
        "--log-level",
        "warning",
    )
    children = [psutil.Process(p) for p in srv.children()]
    results: list = []
    threads = flood(srv.url, 12, results)  # 4 running, 8 queued
    wait_running(srv.url, 4)
    t0 = time.time()
    code = srv.stop(signal.SIGTERM)
    took = time.time() - t0
    for t in threads:
        t.join(30)
    assert took < 2 + 15, f"took {took:.1f} s"  # the drain deadline, then the children's exit
    assert code in (0, -signal.SIGTERM)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert len(results) == 12  # every client got an answer or a closed connection


@pytest.mark.parametrize("child", ["scheduler", "detokenizer"])
def test_a_killed_child_fails_requests_in_flight(child, tmp_path):
    log = tmp_path / "server.log"
    srv = ServerProcess("--max-total-tokens", "4096", "--log-level", "info", log_path=str(log))
    procs = [psutil.Process(p) for p in srv.children()]
    victim = next(p for p in procs if f"runtime.{child}" in " ".join(p.cmdline()))
    results: list = []
    threads = flood(srv.url, 3, results)
    wait_running(srv.url, 3)
    os.kill(victim.pid, signal.SIGKILL)
    for t in threads:
        t.join(60)
    try:
        srv.proc.wait(timeout=30)
    finally:
        code = srv.stop()
    assert code == 1
    assert all(r == 503 or isinstance(r, str) for r in results), results
    text = log.read_text()
    assert f"{child} process died" in text and "shutting the server down" in text
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
