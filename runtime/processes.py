"""Child processes of a runtime: how they are started and how they notice their parent is gone.

Children are fresh interpreters (`python -m module ...`): the caller's main module is never
re-imported, so user scripts need no `__main__` guard. They ignore SIGINT, so a Ctrl-C in the
terminal reaches only the parent, which then shuts them down in order; they exit on their own
when the parent disappears without doing so (SIGKILL), and remove its socket folder.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: the kernel sends `sig` to the calling process when its parent (strictly, the
    parent's thread that started it) dies. Elsewhere nothing: those callers have other ways to
    notice (a closed pipe, a polled parent pid)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def spawn(module: str, *argv: str, **popen_kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *argv], **popen_kwargs)


def configure_child_logging(log_level: str) -> None:
    """Our child processes are our own programs, so they set up their logging themselves."""
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)


def child_setup(in_addr: str, out_addr: str, bind_in: bool):
    """Signals and the two sockets of a pipeline stage (PULL from `in_addr`, PUSH to
    `out_addr`); returns (parent pid to watch, zmq context, receive socket, send socket)."""
    import zmq

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = zmq.Context()
    recv = ctx.socket(zmq.PULL)
    recv.bind(in_addr) if bind_in else recv.connect(in_addr)
    send = ctx.socket(zmq.PUSH)
    send.connect(out_addr)
    return os.getppid(), ctx, recv, send


def parent_gone(parent: int, socket_dir: str | None = None) -> bool:
    """True once the parent has died; the first child to notice removes its socket folder."""
    if os.getppid() == parent:
        return False
    logging.getLogger(__name__).warning("parent process %d is gone; exiting", parent)
    if socket_dir:
        shutil.rmtree(socket_dir, ignore_errors=True)
    return True


def ipc_dir(addr: str) -> str:
    """The folder of an `ipc://folder/name` address."""
    return os.path.dirname(addr.removeprefix("ipc://"))
