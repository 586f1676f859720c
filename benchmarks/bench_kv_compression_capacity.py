"""Capacity, speed and retrieval of KV compression under one fixed KV pool: long-document
requests with full KV and with each compression spec, one after the other in one run (order
rotating over `--repeats`), and the same requests through kvpress for reference.

Every request is a different document (`--min-tokens` to `--max-tokens` tokens of filler, in
the chat template) hiding a 5-digit pass code at its own depth, and the question for it; all
arrive at once. Full KV holds a request's whole prompt while it decodes; a compressed one holds
`budget` prompt tokens per layer once its prefill is done, and its exact prompt stays in the
radix cache only until the next admission needs the room. Reported: the most requests running
at once (polled), requests per second, TTFT, output tokens per second, the prompt KV tokens
kept, and how many answers hold their pass code. With `--kvpress N`, the first N requests go
through kvpress on transformers (its own venv, one request at a time, as kvpress works) with no
press and with the press of each spec.
    .venv/bin/python benchmarks/bench_kv_compression_capacity.py \
        [--requests 10 --pool-tokens 12000 --specs full snapkv:512 --new-tokens 256 --kvpress 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import threading

import kv_tasks  # benchmarks run as scripts from this folder
from bench_kv_compression import PRESSES, parse_spec
from bench_shared_prefix import timed_engine_run, ttft_and_last
from kv_compression_vs_kvpress import run_kvpress_worker

HERE = os.path.dirname(os.path.abspath(__file__))
logger = logging.getLogger("bench_kv_compression_capacity")


def build_requests(tok, n: int, min_tokens: int, max_tokens: int) -> list[tuple[list[int], str]]:
    """n different needle prompts (ids, pass code): filler lengths spread evenly over
    [min_tokens, max_tokens], depths cycling through 0.1, 0.3, 0.5, 0.7, 0.9."""
    reqs = []
    for i in range(n):
        target = min_tokens + (max_tokens - min_tokens) * i // max(1, n - 1)
        task = kv_tasks.needle(tok, target, 0.1 + 0.2 * (i % 5), seed=1000 + i)
        reqs.append((kv_tasks.turn_ids(tok, task, []), task.turns[0][1]))
    return reqs


def run(spec: dict | None, reqs, pool: int, running: int, new_tokens: int) -> dict:
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    if spec is not None:
        params["kv_compression"] = spec

    peak = [0]

    async def all_at_once(eng) -> list:
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], eng.get_server_info()["num_running_reqs"])

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            return await asyncio.gather(*(ttft_and_last(eng, ids, params) for ids, _ in reqs))
        finally:
            stop.set()
            poller.join()

    res = timed_engine_run(
        all_at_once, max_total_tokens=pool, max_running_requests=running, log_level="warning"
    )
    metas = [last["meta_info"] for last in res["last"]]
    texts = [last["text"] for last in res["last"]]
    info = res["info"]
    return {
        "seconds": res["seconds"],
        "prefill_s": info["prefill_seconds"] + info["mixed_seconds"],  # the warm-up's included
        "decode_s": info["decode_seconds"],
        "ttft": res["ttft"],
        "peak": peak[0],
        "kept": [m.get("kv_tokens_kept", m["prompt_tokens"]) for m in metas],
        "prompt": [m["prompt_tokens"] for m in metas],
        "output": sum(m["completion_tokens"] for m in metas),
        "correct": [kv_tasks.correct(t, code) for t, (_, code) in zip(texts, reqs)],
        "answers": [t[:60] for t in texts],
    }


def run_kvpress(folder: str, reqs, specs: list[str], new_tokens: int) -> list[dict]:
    configs = []
    for name in specs:
        spec = parse_spec(name)
        press = None if spec is None else PRESSES[spec["method"]]
        options = {k: v for k, v in (spec or {}).items() if k not in ("method", "budget")}
        configs.append(
            {"name": name, "press": press, "budget": spec and spec["budget"], "kwargs": options}
        )
    request = {
        "folder": folder, "new_tokens": new_tokens, "configs": configs,
        "requests": [{"ids": ids, "expected": code} for ids, code in reqs],
    }  # fmt: skip
    return run_kvpress_worker("kvpress_capacity.py", request)


def _row(name: str, runs: list[dict], base: dict | None) -> dict:
    ttft = sorted(t for r in runs for t in r["ttft"])
    correct = [c for r in runs for c in r["correct"]]
    row = {
        "name": name,
        "prompt": statistics.mean(runs[0]["prompt"]),
        "kept": statistics.mean(runs[0]["kept"]),
        "peak": statistics.median(r["peak"] for r in runs),
        "req_s": statistics.median(len(r["ttft"]) / r["seconds"] for r in runs),
        "tok_s": statistics.median(r["output"] / r["seconds"] for r in runs),
        "ttft50": ttft[len(ttft) // 2],
        "ttft90": ttft[int(len(ttft) * 0.9)],
        "acc": sum(correct) / len(correct),
        "seconds": statistics.median(r["seconds"] for r in runs),
        # the scheduler's time in prefill and decode steps (nan: a record from before it kept them)
        "prefill_s": statistics.median(r.get("prefill_s", float("nan")) for r in runs),
        "decode_s": statistics.median(r.get("decode_s", float("nan")) for r in runs),
    }
    row["x_run"] = row["peak"] / max(1, base["peak"]) if base else 1.0
    row["x_req_s"] = row["req_s"] / base["req_s"] if base else 1.0
    return row


def report(results: dict[str, list[dict]], kvpress: list[dict], new_tokens: int) -> None:
    names = list(results)
    base = _row(names[0], results[names[0]], None)
    rows = [base] + [_row(n, results[n], base) for n in names[1:]]
    for name in dict.fromkeys(r["name"] for r in kvpress):  # one request at a time
        recs = [r for r in kvpress if r["name"] == name]
        run = {
            "seconds": sum(r["seconds"] for r in recs), "ttft": [r["ttft"] for r in recs],
            "peak": 1, "kept": [r["kept"] for r in recs], "prompt": [r["prompt"] for r in recs],
            "output": new_tokens * len(recs), "correct": [r["correct"] for r in recs],
        }  # fmt: skip
        rows.append(_row(f"kvpress {name}", [run], base))
    print(
        f"{'spec':<26} {'prompt':>7} {'kept':>6} {'peak run':>8} {'x run':>6} {'req/s':>6} "
        f"{'x req/s':>7} {'out tok/s':>9} {'TTFT p50':>9} {'TTFT p90':>9} {'retrieved':>9} "
        f"{'seconds':>8} {'prefill s':>9} {'decode s':>8}"
    )
    for r in rows:
        print(
            f"{r['name']:<26} {r['prompt']:>7.0f} {r['kept']:>6.0f} {r['peak']:>8.0f} "
            f"{r['x_run']:>6.2f} {r['req_s']:>6.4f} {r['x_req_s']:>7.2f} {r['tok_s']:>9.1f} "
            f"{r['ttft50']:>9.2f} {r['ttft90']:>9.2f} {r['acc']:>9.2f} {r['seconds']:>8.1f} "
            f"{r['prefill_s']:>9.1f} {r['decode_s']:>8.1f}"
        )


def report_file(path: str, new_tokens: int) -> None:
    """The table of a run's records, also when its parts ran apart (ours, then kvpress)."""
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    results: dict[str, list[dict]] = {}
    for r in records:
        if r["system"] == "ours":
            results.setdefault(r["spec"], []).append(r)
    report(results, [r for r in records if r["system"] == "kvpress"], new_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--specs", nargs="+", default=["full", "snapkv:512"])
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--min-tokens", type=int, default=4000)
    ap.add_argument("--max-tokens", type=int, default=6000)
    ap.add_argument("--pool-tokens", type=int, default=12000, help="the fixed KV pool")
    ap.add_argument("--max-running", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--kvpress", type=int, default=0, help="requests through kvpress (0: none)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "kv_compression_capacity.jsonl"))
    ap.add_argument(
        "--report",
        help="print the table of every record in this file (one run's file); run nothing",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.report:
        report_file(args.report, args.new_tokens)
        return

    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    folder = prepare_model_folder(None, None)
    tok = load_tokenizer(folder)
    reqs = build_requests(tok, args.requests, args.min_tokens, args.max_tokens)
    lengths = [len(ids) for ids, _ in reqs]
    logger.info("%d requests of %d-%d tokens, pool %d tokens, %d new tokens each",
                len(reqs), min(lengths), max(lengths), args.pool_tokens, args.new_tokens)  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    results: dict[str, list[dict]] = {s: [] for s in args.specs}
    for rep in range(args.repeats):
        order = args.specs[rep % len(args.specs) :] + args.specs[: rep % len(args.specs)]
        for name in order:
            res = run(parse_spec(name), reqs, args.pool_tokens, args.max_running, args.new_tokens)
            results[name].append(res)
            with open(args.out, "a") as f:  # kept as it goes: a long run may be cut short
                f.write(json.dumps({"system": "ours", "spec": name, "repeat": rep, **res}) + "\n")
            logger.info("repeat %d %s: %.1f s, peak %d running, %d/%d retrieved", rep, name,
                        res["seconds"], res["peak"], sum(res["correct"]), len(reqs))  # fmt: skip
    kvpress = []
    if args.kvpress:
        kvpress = run_kvpress(folder, reqs[: args.kvpress], args.specs, args.new_tokens)
        with open(args.out, "a") as f:
            for r in kvpress:
                f.write(json.dumps({"system": "kvpress", **r}) + "\n")
    if args.repeats:
        report(results, kvpress, args.new_tokens)
    else:  # kvpress alone, beside our records of an earlier invocation
        report_file(args.out, args.new_tokens)


if __name__ == "__main__":
    main()
