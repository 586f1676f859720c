"""Start-up time of the engine on the default model: first start (GGUF converted) and second (cached).

Each start runs in a fresh process so imports count, as they do for a user.
    .venv/bin/python benchmarks/bench_load.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import time
t0 = time.perf_counter()
from runtime import Engine
e = Engine(max_total_tokens=4096, log_level="warning")
t1 = time.perf_counter()
e.generate("Hi", {"max_new_tokens": 1})
print(f"{t1 - t0:.2f} {e.info['load_seconds']:.2f}")
e.shutdown()
"""


def start_once(cache_dir: str) -> tuple[float, float, float]:
    """Returns (process wall time, engine construction, model load in the scheduler process) in seconds."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**os.environ, "RADIXSERVE_CACHE": cache_dir},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return time.perf_counter() - t0, float(out[0]), float(out[1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        rows = [("first start (converts GGUF)", *start_once(cache))]
        rows += [(f"second start (cached) #{i + 1}", *start_once(cache)) for i in range(2)]
    print(f"{'start':32} {'process s':>10} {'Engine() s':>11} {'model load s':>12}")
    for name, wall, engine, model in rows:
        print(f"{name:32} {wall:10.2f} {engine:11.2f} {model:12.2f}")


if __name__ == "__main__":
    main()
