"""Soak: mixed traffic at a fixed arrival rate for a long time, watching latency and memory.

Streaming and not, JSON-schema constrained, `n > 1`, aborts by id, clients that leave after the
first chunk, prompts that share a long prefix and unique ones, all against one server started
here. Every `--sample-s` seconds it records RSS (server and children) and KV usage; per window
of `--window-min` minutes, p50 / p99 latency and errors by kind. It prints a Markdown table and
writes the samples as JSON (and a PNG with `--plot`).
    .venv/bin/python benchmarks/soak.py --minutes 20 --rate 2 --plot benchmarks/figures/soak.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.server_process import ServerProcess  # noqa: E402

SYSTEM = "You are the front desk of a seaside hotel. " * 40
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}


def request_body(rng: random.Random, i: int) -> tuple[str, dict]:
    """(kind, /generate body) for the i-th arrival."""
    kind = rng.choices(
        ["shared", "unique", "stream", "json", "n", "abort", "leave"],
        weights=[4, 2, 3, 1, 1, 1, 1],
    )[0]
    text = (SYSTEM if kind in ("shared", "n") else f"Note {i}. ") + f"Question {i}: what now?"
    params = {"max_new_tokens": rng.randint(4, 32), "temperature": 0.7}
    if kind == "json":
        text = f"Give a city and its population as JSON ({i}):"
        params.update(json_schema=json.dumps(SCHEMA), max_new_tokens=48)
    if kind == "n":
        params["n"] = 3
    body = {"text": text, "sampling_params": params, "rid": f"soak-{i}"}
    body["stream"] = kind in ("stream", "abort", "leave")
    return kind, body


async def send(client: httpx.AsyncClient, kind: str, body: dict) -> tuple[float, str]:
    """(latency s, outcome) of one request."""
    t0 = time.perf_counter()
    try:
        if not body["stream"]:
            r = await client.post("/generate", json=body)
            return (
                time.perf_counter() - t0,
                "ok" if r.status_code == 200 else f"http {r.status_code}",
            )
        async with client.stream("POST", "/generate", json=body) as r:
            if r.status_code != 200:
                return time.perf_counter() - t0, f"http {r.status_code}"
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                if kind == "leave":
                    break
                if kind == "abort":
                    await client.post("/abort_request", json={"rid": body["rid"]})
                    kind = "aborted"
                if '"error"' in line:
                    return time.perf_counter() - t0, "stream error"
        return time.perf_counter() - t0, "ok"
    except httpx.HTTPError as e:
        return time.perf_counter() - t0, type(e).__name__


def rss_mib(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


async def soak(srv: ServerProcess, args: argparse.Namespace) -> tuple[list, list]:
    rng = random.Random(args.seed)
    results: list[tuple[float, float, str, str]] = []  # (arrival, latency, kind, outcome)
    samples: list[dict] = []
    limits = httpx.Limits(max_connections=256)
    async with httpx.AsyncClient(base_url=srv.url, timeout=600, limits=limits) as client:
        start = time.perf_counter()
        end = start + args.minutes * 60

        async def arrival(i: int, at: float) -> None:
            kind, body = request_body(rng, i)
            latency, outcome = await send(client, kind, body)
            results.append((at, latency, kind, outcome))

        async def sampler() -> None:
            while time.perf_counter() < end:
                info = (await client.get("/get_server_info")).json()
                samples.append(
                    {
                        "t": time.perf_counter() - start,
                        "rss_mib": rss_mib(srv.proc.pid),
                        "token_usage": info["token_usage"],
                        "cache_tokens": info["cache_tokens"],
                        "pool_tokens": info["max_total_tokens"],
                        "running": info["num_running_reqs"],
                        "waiting": info["num_waiting_reqs"],
                    }
                )
                await asyncio.sleep(args.sample_s)

        tasks, i = [asyncio.create_task(sampler())], 0
        while (now := time.perf_counter()) < end:
            tasks.append(asyncio.create_task(arrival(i, now - start)))
            i += 1
            await asyncio.sleep(rng.expovariate(args.rate))
        await asyncio.gather(*tasks)
    return results, samples


def report(results: list, samples: list, window_s: float) -> str:
    lines = [
        "| window (min) | requests | p50 s | p99 s | errors | RSS MiB (end) | KV usage (max) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    n_windows = int(max(r[0] for r in results) // window_s) + 1
    for w in range(n_windows):
        lo, hi = w * window_s, (w + 1) * window_s
        rows = [r for r in results if lo <= r[0] < hi]
        lat = sorted(r[1] for r in rows if r[3] == "ok" and r[2] not in ("leave", "abort"))
        errs: dict[str, int] = {}
        for r in rows:
            if r[3] != "ok":
                errs[r[3]] = errs.get(r[3], 0) + 1
        win = [s for s in samples if lo <= s["t"] < hi] or samples[-1:]
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        lines.append(
            f"| {lo / 60:.0f}-{hi / 60:.0f} | {len(rows)} | "
            f"{statistics.median(lat) if lat else float('nan'):.2f} | {p99:.2f} | "
            f"{', '.join(f'{k}: {v}' for k, v in sorted(errs.items())) or 'none'} | "
            f"{win[-1]['rss_mib']:.0f} | {max(s['token_usage'] for s in win):.0%} |"
        )
    return "\n".join(lines)


def plot(samples: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(t, [s["rss_mib"] for s in samples], label="RSS, server + children (MiB)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax2 = ax.twinx()
    ax2.plot(t, [100 * s["token_usage"] for s in samples], color="tab:orange", label="KV in use %")
    cached = [100 * s["cache_tokens"] / s["pool_tokens"] for s in samples]
    ax2.plot(t, cached, color="tab:green", label="KV held by the radix cache %")
    ax2.set_ylabel("% of the KV pool")
    ax2.set_ylim(0, 100)
    fig.legend(loc="upper left", bbox_to_anchor=(0.08, 0.97), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--rate", type=float, default=2.0, help="arrivals per second (Poisson)")
    ap.add_argument("--window-min", type=float, default=5)
    ap.add_argument("--sample-s", type=float, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="soak.json", help="where the samples and results go")
    ap.add_argument("--plot", default=None, help="PNG of RSS and KV usage over time")
    ap.add_argument("--server-args", default="--max-total-tokens 16384")
    args = ap.parse_args()
    with ServerProcess(*args.server_args.split(), "--log-level", "warning") as srv:
        results, samples = asyncio.run(soak(srv, args))
        alive = httpx.get(f"{srv.url}/health").status_code == 200
    Path(args.json).write_text(json.dumps({"results": results, "samples": samples}))
    print(report(results, samples, args.window_min * 60))
    lost = sum(1 for r in results if r[3] not in ("ok",) and not r[3].startswith("http 4"))
    print(f"\n{len(results)} requests, {lost} not answered ok, server alive after: {alive}")
    if args.plot:
        plot(samples, args.plot)


if __name__ == "__main__":
    main()
