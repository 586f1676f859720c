"""Resident memory of the default server once its KV pool has been written.

The pool is allocated at start-up but its pages become resident only when first written, so
this sends distinct prompts until the radix cache holds most of the pool, then prints each
process's RSS (the scheduler holds the model and the pool).

    .venv/bin/python benchmarks/bench_server_memory.py [--max-total-tokens 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.server_process import ServerProcess  # noqa: E402

WORDS = "alpha beta gamma delta river mountain station ticket window garden".split()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-total-tokens", type=int, default=20000)
    p.add_argument("--fill", type=float, default=0.9, help="share of the pool to write")
    p.add_argument("flags", nargs="*", help="more server flags, after --")
    args = p.parse_args()
    rng = random.Random(0)
    with ServerProcess("--max-total-tokens", str(args.max_total_tokens), *args.flags) as srv:
        with httpx.Client(base_url=srv.url, timeout=900) as http:
            i = 0
            while http.get("/get_server_info").json()["cache_tokens"] < (
                args.fill * args.max_total_tokens
            ):
                words = " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(900))
                r = http.post(
                    "/generate",
                    json={"text": f"Doc {i}: {words}", "sampling_params": {"max_new_tokens": 1}},
                )
                r.raise_for_status()
                i += 1
            info = http.get("/get_server_info").json()
        root = psutil.Process(srv.proc.pid)
        procs = [root, *root.children(recursive=True)]
        print(f"pool: {info['cache_tokens']} of {info['max_total_tokens']} tokens written")
        for proc in procs:
            print(f"{proc.memory_info().rss / 2**20:8.0f} MiB  {' '.join(proc.cmdline()[1:3])}")
        print(f"{sum(q.memory_info().rss for q in procs) / 2**20:8.0f} MiB  all processes")


if __name__ == "__main__":
    main()
