"""Starts `python -m runtime.launch` as a child process and waits until it serves.

For callers that want a real server beside them: tests, benchmarks, `frontend_lang.Runtime`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from runtime.processes import die_with_parent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_with_caller():
    """A server started from the main thread gets SIGTERM (and shuts its children down) when its
    caller dies without stopping it, as a killed test run does. From another thread it does not:
    the signal follows the starting thread, which may end long before the caller."""
    if threading.current_thread() is threading.main_thread():
        return lambda: die_with_parent(signal.SIGTERM)
    return None


class ServerProcess:
    """`ServerProcess("--max-total-tokens", "8192")`: a server on a free port, ready on return."""

    def __init__(
        self,
        *flags: str,
        log_path: str | None = None,
        timeout: float = 300,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path or os.devnull, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.launch", "--port", str(self.port), *flags],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a signal to its group reaches it and its children only
            preexec_fn=_stop_with_caller(),
        )
        deadline = time.time() + timeout
        while not self._healthy():
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(
                    f"server exited with code {self.proc.returncode} while starting"
                    + (f" (log: {log_path})" if log_path else "")
                )
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"server did not come up in {timeout:.0f} s")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signals the server, waits for it (killing its group after 30 s); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
