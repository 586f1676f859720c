"""`--dp-size N`: N full servers on internal ports, SGLang's router in front on the public one.

Each replica is its own `python -m runtime.launch` (scheduler, detokenizer, HTTP) on
127.0.0.1 and a free port; `sglang-router` (the optional `[dp]` extra) routes with its
cache-aware policy, so requests that share a prefix land where that prefix is cached.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from runtime.server_args import ServerArgs
from runtime.server_process import free_port

logger = logging.getLogger(__name__)

ROUTER_MODULE = "sglang_router"
INSTALL_HINT = "pip install 'radixserve[dp]' (or: pip install sglang-router)"
START_TIMEOUT_S = 600


def router_missing() -> str | None:
    """Why `--dp-size` > 1 cannot run here, or None when it can."""
    if importlib.util.find_spec(ROUTER_MODULE) is None:
        return f"--dp-size: needs sglang-router in front of the replicas; {INSTALL_HINT}"
    return None


def replica_argv(argv: list[str], port: int) -> list[str]:
    """The launch flags of one replica: the user's, then ours (argparse keeps the last)."""
    return [*argv, "--dp-size", "1", "--host", "127.0.0.1", "--port", str(port)]


def router_argv(args: ServerArgs, urls: list[str], metrics_port: int) -> list[str]:
    argv = [sys.executable, "-m", f"{ROUTER_MODULE}.launch_router", "--worker-urls", *urls]
    argv += ["--policy", "cache_aware", "--host", args.host, "--port", str(args.port)]
    argv += ["--prometheus-port", str(metrics_port), "--prometheus-host", "127.0.0.1"]
    argv += [
        "--log-level",
        {"warning": "warn", "critical": "error"}.get(args.log_level, args.log_level),
    ]
    if args.api_key:
        argv += ["--api-key", args.api_key]
    return argv


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def serve_data_parallel(args: ServerArgs, argv: list[str]) -> int:
    """Runs the replicas and the router until a signal or a death; returns an exit code."""
    ports = [free_port() for _ in range(args.dp_size)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs: list[subprocess.Popen] = []
    stopping: list[int] = []

    def on_signal(signum, frame) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for port in ports:
            cmd = [sys.executable, "-m", "runtime.launch", *replica_argv(argv, port)]
            procs.append(subprocess.Popen(cmd))
        deadline = time.time() + START_TIMEOUT_S
        while not all(_healthy(u) for u in urls):
            if stopping:
                return 0
            if any(p.poll() is not None for p in procs):
                logger.error("a replica exited while starting")
                return 1
            if time.time() > deadline:
                logger.error("the replicas did not come up in %d s", START_TIMEOUT_S)
                return 1
            time.sleep(0.5)
        procs.append(subprocess.Popen(router_argv(args, urls, free_port())))
        logger.info(
            "sglang-router on http://%s:%d in front of %s", args.host, args.port, ", ".join(urls)
        )
        while not stopping:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                logger.error(
                    "shutting down: %s exited with code %d", dead[0].args[2], dead[0].returncode
                )
                return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(procs[::-1])  # the router first, so it sends nothing more to the replicas
        for s, handler in previous.items():
            signal.signal(s, handler)
