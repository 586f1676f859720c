"""Grammar compilation in a child process, so a spec that overruns its deadline can be stopped.

A Python thread cannot be stopped, and xgrammar or outlines-core compile inside native code: a
hostile spec (a large schema of string patterns takes seconds to minutes) would keep the
compile thread busy and every grammar request behind it waiting. So one long-lived child
process compiles, and the caller waits on its pipe with the deadline; past it the child is
killed, a fresh one started, and the spec refused. The child's start (imports: 2-3 s) is not
counted in a spec's deadline.

What comes back depends on what crossing processes costs. An outlines-core index pickles in a
millisecond, so it is loaded in the caller, where the matchers run. An xgrammar grammar's only
serial form is JSON of its token-mask tables (~2 MB for a dozen-field schema), about ten times
the compile to write and read back; so the child only proves the spec compiles in time, and the
caller compiles it again (a second compile of the same spec, no longer than the first: the
caller's thread is busy at most about a deadline per spec, never unboundedly). Either way it is
paid once per distinct spec (see benchmarks/README.md): the cache above keeps the result.

Run as `python -m runtime.constrained.compile_worker <read fd> <write fd>`: it reads the
pickled backend first (which pickles to what compiling needs: no tokenizer, so the child never
imports transformers), then (kind, spec) requests.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
from multiprocessing.connection import Connection

from runtime.constrained.base import GrammarBackend, GrammarCompileTimeout
from runtime.processes import die_with_parent, spawn

logger = logging.getLogger(__name__)

START_TIMEOUT = 300.0  # seconds a child may take to import and build its backend


class CompileWorker:
    """The caller's end: `compile(kind, spec)` returns the compiled grammar or raises
    ValueError (bad spec, deadline passed, compiler crashed). One call at a time."""

    def __init__(self, backend: GrammarBackend, timeout: float) -> None:
        self.backend = backend
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.conn: PipePair | None = None
        self.ready = False
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        """Starts a child without waiting for it: it imports while the scheduler carries on.
        Called from threads that outlive the child (the child dies with the thread that started
        it, see `_die_with_parent`)."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = spawn(
                "runtime.constrained.compile_worker",
                str(to_child_r),
                str(from_child_w),
                pass_fds=(to_child_r, from_child_w),
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.conn = PipePair(from_child_r, to_child_w)
        self.ready = False

    def _wait_ready(self) -> None:
        """Hands the child its backend's makings (here, not in `_start`: the child reads them
        only once its imports are done) and waits until it has built the backend."""
        try:
            self.conn.send_bytes(pickle.dumps(self.backend))  # what compiling needs, see __reduce__
            if not self.conn.poll(START_TIMEOUT):
                raise RuntimeError(f"did not start in {START_TIMEOUT:g} s")
            status, payload = pickle.loads(self.conn.recv_bytes())
            if status != "ready":
                raise RuntimeError(f"failed to start: {payload}")
        except (EOFError, OSError):
            self._stop()
            raise RuntimeError("the grammar compile process exited while starting") from None
        except RuntimeError as e:
            self._stop()
            raise RuntimeError(f"the grammar compile process {e}") from None
        self.ready = True

    def compile(self, kind: str, spec: str):
        if self.proc is None or self.proc.poll() is not None:
            self._restart()
        if not self.ready:
            self._wait_ready()
        try:
            self.conn.send_bytes(pickle.dumps((kind, spec)))
        except OSError:  # it died since the check above; the next request starts a new one
            self._stop()
            raise RuntimeError(
                "the grammar compile process exited; send the request again"
            ) from None
        if not self.conn.poll(self.timeout):
            logger.warning(
                "a %s overran its %g s to compile; restarting the compile process",
                kind,
                self.timeout,
            )
            self._restart()
            raise GrammarCompileTimeout(
                f"{kind}: grammar did not compile within {self.timeout:g} s"
            )
        try:
            status, payload = pickle.loads(self.conn.recv_bytes())
        except EOFError:
            code = self.proc.wait()
            self._restart()
            raise ValueError(
                f"{kind}: the grammar compiler exited (code {code}) on this spec"
            ) from None
        if status == "error":
            raise ValueError(payload)
        if payload is None:  # it compiled in time: here it takes about as long again
            return self.backend.compile(kind, spec)
        return self.backend.deserialize(payload)

    def _restart(self) -> None:
        self._stop()
        self.restarts += 1
        self._start()

    def _stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        self.ready = False

    def close(self) -> None:
        self._stop()


class PipePair:
    """Messages both ways over two pipes: reads from one end, writes to the other."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.reader = Connection(read_fd, writable=False)
        self.writer = Connection(write_fd, readable=False)

    def poll(self, timeout: float) -> bool:
        return self.reader.poll(timeout)

    def recv_bytes(self) -> bytes:
        return self.reader.recv_bytes()

    def send_bytes(self, data: bytes) -> None:
        self.writer.send_bytes(data)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def serve(read_fd: int, write_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    die_with_parent()  # even mid-compile; otherwise the closed pipe ends it between compiles
    conn = PipePair(read_fd, write_fd)
    try:
        backend: GrammarBackend = pickle.loads(conn.recv_bytes())
    except EOFError:
        return
    except Exception as e:  # reported to the parent, which raises it
        conn.send_bytes(pickle.dumps(("failed", repr(e))))
        return
    conn.send_bytes(pickle.dumps(("ready", None)))
    while True:
        try:
            kind, spec = pickle.loads(conn.recv_bytes())
        except EOFError:  # the parent closed its end or is gone
            return
        try:
            reply = ("ok", backend.serialize(backend.compile(kind, spec)))
        except ValueError as e:
            reply = ("error", str(e))
        except Exception as e:  # a library's own error on an odd spec is still the spec's fault
            reply = ("error", f"{kind}: {e!r}")
        conn.send_bytes(pickle.dumps(reply))


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
