"""Agents under memory pressure: ours with and without the prefix pinned, beside vLLM CPU.

Each agent sends a ~1,500-token system prompt and 8 tools through the `openai` client, takes
`--steps` steps (a required tool call, then the tool's result joins its history), while other
traffic (long unrelated prompts) keeps the KV pool full and evicts what is not held. Pinned, the
system prompt and tools are pinned once (`/pin_prefix`) before the agents start. vLLM serves the
same loop with its hermes tool parser and the same number of KV tokens. All modes run in each
repeat, in a rotated order, with a new system prompt per repeat (our cache is also flushed).
Prints steps/s, TTFT by step, the share of prompt tokens served from the cache, and the CPU that
other processes took meanwhile.

    .venv/bin/python benchmarks/bench_agent.py [--agents 8 --steps 6 --repeats 2]
    .venv/bin/python benchmarks/bench_agent.py --systems ours --screenshot benchmarks/figures/cache_page.png
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_shared_prefix import rules_prompt  # noqa: E402
from benchmarks.peers import machine, systems  # noqa: E402

ACTIONS = [
    "search_trains",
    "book_seat",
    "cancel_booking",
    "get_weather",
    "convert_currency",
    "lookup_station",
    "send_email",
    "check_status",
]
WORDS = (
    "policy rule passenger ticket platform refund season weekday weekend holiday booking "
    "account card safety access parking guide event request complaint manager desk hours "
    "price discount group child adult senior luggage bicycle connection delay"
).split()


def tools() -> list[dict]:
    """Eight tools, each with a small schema (bounded strings, so calls stay short)."""
    out = []
    for name in ACTIONS:
        params = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 24},
                "count": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            "required": ["query", "count"],
        }
        out.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": f"{name.replace('_', ' ')} for the customer",
                    "parameters": params,
                },
            }
        )
    return out


def system_prompt(approx_tokens: int, salt: int = 0) -> str:
    header = f"You are the booking agent of railway {salt}. Use the tools; follow these rules."
    return rules_prompt(header, WORDS, approx_tokens * 0.76, random.Random(salt))


def noise(url: str, stop: threading.Event, tokens: int, seed: int) -> None:
    """Long unrelated prompts, one at a time, until stopped: they fill the pool."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=600) as http:
        while not stop.is_set():
            text = " ".join(
                rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(tokens // 3)
            )
            http.post("/v1/completions", json={"model": "default", "prompt": text, "max_tokens": 1})


def agent(url: str, k: int, steps: int, system: str, think_s: float, rows: list) -> None:
    client = OpenAI(base_url=url + "/v1", api_key="none", timeout=600)
    history = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Customer {k}: plan a trip to city {k} and book it."},
    ]
    for step in range(steps):
        t0 = time.perf_counter()
        ttft, usage, calls = None, None, {}
        stream = client.chat.completions.create(
            model="default",
            messages=history,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if ttft is None and chunk.choices:
                ttft = time.perf_counter() - t0
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                for d in c.delta.tool_calls or []:
                    e = calls.setdefault(d.index, {"id": d.id, "name": "", "arguments": ""})
                    e["name"] += d.function.name or ""
                    e["arguments"] += d.function.arguments or ""
        rows.append(
            {
                "agent": k,
                "step": step,
                "ttft": ttft,
                "e2e": time.perf_counter() - t0,
                "prompt": usage.prompt_tokens,
                "cached": usage.prompt_tokens_details.cached_tokens,
            }
        )
        call = calls[0]
        history.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ],
            }
        )
        time.sleep(think_s)  # the tool runs
        history.append(
            {
                "role": "tool",
                "tool_call_id": call["id"],
                "content": json.dumps({"result": f"done {call['name']} step {step}"}),
            }
        )


def run(server, args, mode: str, system: str, seed: int) -> dict:
    """One run of every agent on `server` in `mode` (`pinned`, `not pinned`, or a peer's name)."""
    url = server.url
    http = httpx.Client(base_url=url, timeout=600)
    ours = server.spec.kind == "ours"
    if ours:
        assert http.post("/flush_cache").status_code == 200
    pin = None
    if mode == "pinned":
        r = http.post(
            "/pin_prefix",
            json={"messages": [{"role": "system", "content": system}], "tools": TOOLS},
        )
        assert r.status_code == 200, r.text  # a refused pin stops the run
        pin = r.json()
    stop = threading.Event()
    noisy = [
        threading.Thread(target=noise, args=(url, stop, args.noise_tokens, seed * 10 + i))
        for i in range(args.noise_streams)
    ]
    load = machine.ForeignLoad([server.pid])
    for t in noisy:
        t.start()
    rows: list[dict] = []
    t0 = time.perf_counter()
    agents = [
        threading.Thread(target=agent, args=(url, k, args.steps, system, args.think_s, rows))
        for k in range(args.agents)
    ]
    for t in agents:
        t.start()
    for t in agents:
        t.join()
    wall = time.perf_counter() - t0
    stop.set()
    for t in noisy:
        t.join()
    retractions = http.get("/get_server_info").json()["retractions"] if ours else None
    if pin is not None:
        http.post("/unpin_prefix", json={"pin_id": pin["pin_id"]})
    by_step = [
        statistics.median(r["ttft"] for r in rows if r["step"] == s) for s in range(args.steps)
    ]
    return {
        "mode": mode,
        "repeat": seed,
        "steps": len(rows),
        "steps_per_s": len(rows) / wall,
        "ttft_median_s": statistics.median(r["ttft"] for r in rows),
        "ttft_by_step_s": by_step,
        "prompt_tokens_median": statistics.median(r["prompt"] for r in rows),
        "cached_share": sum(r["cached"] for r in rows) / sum(r["prompt"] for r in rows),
        "pinned_tokens": pin["tokens"] if pin else 0,
        "retractions": retractions,
        "foreign_cores": load.cores(),
    }


def start_servers(args) -> dict:
    """Ours (one server for both modes) and, where installed, vLLM with its tool-call parser,
    each holding `--max-total-tokens` of KV."""
    log_dir = "benchmarks/results/logs"
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    tokens = str(args.max_total_tokens)
    ours = systems.SystemSpec(
        "ours",
        "ours (--dtype auto, GGUF blocks)",
        "ours",
        "auto",
        extra_args=(
            *("--max-total-tokens", tokens),
            # the system prompt and tools: more than the default half pool
            *("--max-pinned-tokens", str(args.max_total_tokens * 3 // 4)),
        ),
    )
    vllm = systems.SystemSpec(
        "vllm",
        "vLLM CPU (bfloat16)",
        "vllm",
        "bfloat16",
        extra_args=(
            *("--enable-auto-tool-choice", "--tool-call-parser", "hermes"),
            "--enable-prompt-tokens-details",  # cached_tokens in usage
            *("--block-size", str(VLLM_BLOCK)),
            *(
                "--num-gpu-blocks-override",
                str(args.max_total_tokens // VLLM_BLOCK + 1),
            ),  # +1: its null block
            *("--max-model-len", tokens),  # it must fit one request of its longest length
        ),
    )
    servers = {}
    try:
        for spec in (ours, vllm):
            if spec.name not in args.systems:
                continue
            reason = systems.missing_reason(spec)
            if reason:
                print(f"skipping {spec.name}: {reason}")
                continue
            servers[spec.name] = systems.start(spec, log_dir, threads=args.threads)
            print(f"{spec.label} up at {servers[spec.name].url}", flush=True)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def modes(servers: dict, repeat: int) -> list[tuple[str, object]]:
    """This repeat's runs, the order rotated so no mode always meets the same load."""
    out = []
    if "ours" in servers:
        out += [("not pinned", servers["ours"]), ("pinned", servers["ours"])]
    if "vllm" in servers:
        out.append(("vllm", servers["vllm"]))
    k = repeat % len(out)
    return out[k:] + out[:k]


def screenshot(url: str, path: str) -> None:
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=8000",
            "--window-size=1200,760",
            f"--screenshot={path}",
            url + "/cache",
        ],
        capture_output=True,
        timeout=120,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--systems", nargs="+", default=["ours", "vllm"], choices=["ours", "vllm"])
    p.add_argument("--threads", type=int, default=1, help="compute threads of each server")
    p.add_argument("--system-tokens", type=int, default=1500)
    p.add_argument("--max-total-tokens", type=int, default=8192)
    p.add_argument("--noise-streams", type=int, default=2)
    p.add_argument("--noise-tokens", type=int, default=2400)
    p.add_argument("--think-s", type=float, default=0.5)
    p.add_argument("--screenshot", help="after the last run, a screenshot of /cache to this path")
    p.add_argument("--out", default="benchmarks/results/agent.json")
    args = p.parse_args()
    servers = start_servers(args)
    results = []
    try:
        for r in range(args.repeats):
            # a new prompt each repeat: vLLM's prefix cache cannot be flushed from outside
            system = system_prompt(args.system_tokens, salt=r)
            for mode, server in modes(servers, r):
                res = run(server, args, mode, system, seed=r)
                print(json.dumps(res), flush=True)
                results.append(res)
        if args.screenshot and "ours" in servers:
            # a last pinned run left in place so the page has something to show
            url = servers["ours"].url
            http = httpx.Client(base_url=url, timeout=600)
            system = system_prompt(args.system_tokens, salt=args.repeats)
            http.post(
                "/pin_prefix",
                json={"messages": [{"role": "system", "content": system}], "tools": TOOLS},
            )
            rows: list = []
            for k in range(3):
                agent(url, k, 2, system, 0, rows)
            screenshot(url, args.screenshot)
    finally:
        for server in servers.values():
            server.stop()
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": results}, indent=1))
    print(
        f"\n{'mode':<12}{'steps/s':>9}{'TTFT p50':>10}{'prompt':>8}{'cached':>8}{'others':>8}"
        "  TTFT by step (s)"
    )
    for res in sorted(results, key=lambda x: x["mode"]):
        steps = " ".join(f"{t:.2f}" for t in res["ttft_by_step_s"])
        print(
            f"{res['mode']:<12}{res['steps_per_s']:>9.2f}{res['ttft_median_s']:>10.2f}"
            f"{res['prompt_tokens_median']:>8.0f}{res['cached_share']:>8.0%}"
            f"{res['foreign_cores']:>8.2f}  {steps}"
        )


TOOLS = tools()
VLLM_BLOCK = 32  # vLLM's KV block on the CPU: a multiple of 32

if __name__ == "__main__":
    main()
