"""The server's processes: a clean stop on Ctrl-C or SIGTERM, a clear exit when a child dies."""

from __future__ import annotations

import glob
import os
import signal
import tempfile
import time

import httpx
import pytest

from runtime.server_process import ServerProcess as Server

pytestmark = pytest.mark.slow


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def socket_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "radixserve-*")))


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stop_leaves_no_process_and_no_socket(how):
    before = socket_dirs()
    srv = Server("--max-total-tokens", "1024", "--log-level", "warning")
    children = srv.children()
    assert len(children) == 3  # scheduler, detokenizer, the scheduler's grammar compile process
    assert len(socket_dirs() - before) == 1
    r = httpx.post(
        f"{srv.url}/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2}}
    )
    assert r.status_code == 200
    if how == "ctrl-c":  # the terminal signals the whole foreground group
        os.killpg(srv.proc.pid, signal.SIGINT)
        code = srv.stop(signal.SIGINT)
    else:
        code = srv.stop(signal.SIGTERM)
    assert code in (0, -signal.SIGINT, -signal.SIGTERM)
    deadline = time.time() + 10
    while not all(gone(p) for p in children):
        assert time.time() < deadline, "a child process outlived the server"
        time.sleep(0.1)
    assert socket_dirs() - before == set()


def test_a_dead_child_takes_the_server_down_with_a_clear_log(tmp_path):
    log = tmp_path / "server.log"
    srv = Server("--max-total-tokens", "1024", "--log-level", "info", log_path=str(log))
    import psutil

    children = srv.children()
    scheduler = next(
        p for p in children if "runtime.scheduler.process" in psutil.Process(p).cmdline()
    )
    os.kill(scheduler, signal.SIGKILL)
    try:
        srv.proc.wait(timeout=30)
    finally:
        code = srv.stop()
    assert code == 1
    text = log.read_text()
    assert "scheduler process died" in text and "shutting the server down" in text
    assert all(gone(p) for p in children)
