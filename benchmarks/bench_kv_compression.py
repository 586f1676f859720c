"""Accuracy against KV budget: each compression method on synthetic long-context tasks.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_kv_compression.py [--url URL] [--kvpress]
        [--budgets 128 256 512 1024] [--lengths 2000 4500 7000] [--depths 0.1 0.5 0.9]
    ... --specs full snapkv:512:window_size=16 pyramidkv:128   # these configurations only
    ... --smoke      # one short needle, two methods at one budget: checks the script

Tasks (`kv_tasks.py`): a key in a 2,000-7,000-token filler at several depths; the postal code
of one town among four short documents; a pass code and a locker number asked in two turns, the
second turn asking what the first turn's compression may have dropped. Each runs with the exact
KV and with every method at every budget, greedy, against our server (`--url`, or one started
here with `--server-args`) through native /generate with `sampling_params.kv_compression`; the
radix cache is flushed before each conversation so no request finds another's prompt. With
`--kvpress`, the same tasks through kvpress on transformers (its own venv), for reference;
kvpress has no decoding-time H2O, so `h2o` there is its prefill-time ObservedAttentionPress.
PyramidKV runs with `--options` (default window 16, beta 4): with its defaults (window 64,
beta 20) every budget below 1,280 is exactly SnapKV, in kvpress as here. A spec's own options
(`snapkv:512:window_size=16`) go over `--options` and name a line of their own.
Prints accuracy per system, method and budget; appends every answer to --out (JSON lines,
tagged with the run's start time; `plot_kv_compression.py` draws one run or several).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import kv_tasks  # noqa: E402
from kv_compression_vs_kvpress import run_kvpress_worker  # noqa: E402

logger = logging.getLogger("bench_kv_compression")

METHODS = ["streamingllm", "snapkv", "pyramidkv", "h2o"]
PRESSES = {
    "streamingllm": "StreamingLLMPress",
    "snapkv": "SnapKVPress",
    "pyramidkv": "PyramidKVPress",
    "h2o": "ObservedAttentionPress",
}


def post(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=1800) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip().startswith(b"{") else {}


def parse_spec(name: str) -> dict | None:
    """ "full", or "method:budget[:option=int...]" (e.g. snapkv:512:window_size=16)."""
    if name == "full":
        return None
    method, budget, *options = name.split(":")
    spec = {"method": method, "budget": int(budget)}
    for option in options:
        key, value = option.split("=")
        spec[key] = int(value)
    return spec


def plan_entry(name: str, options: dict) -> tuple[str, int, dict | None]:
    """(line label, budget, spec sent): the label is the method and the spec's own options
    (`snapkv:window_size=16`), the spec adds `options[method]` under them."""
    spec = parse_spec(name)
    if spec is None:
        return "full", 0, None
    own = name.split(":")[2:]
    label = ":".join([spec["method"], *own])
    return label, spec["budget"], {**options.get(spec["method"], {}), **spec}


def run_ours(url: str, tok, specs, tasks, plan, new_tokens: int, sink) -> list[dict]:
    """plan: `plan_entry` triples; sink(record) keeps each answer as it comes (a long run may
    be cut short)."""
    records = []
    rows = ((t, p) for t in zip(specs, tasks) for p in plan)  # a cut run: whole rows
    for (task_spec, task), (method, budget, spec) in rows:
        post(url, "/flush_cache")
        answers: list[str] = []
        t0 = time.time()
        for turn, (_, expected) in enumerate(task.turns):
            params = {"temperature": 0, "max_new_tokens": new_tokens}
            if spec:
                params["kv_compression"] = spec
            body = {
                "input_ids": kv_tasks.turn_ids(tok, task, answers),
                "sampling_params": params,
            }
            out = post(url, "/generate", body)
            text = out["text"]
            answers.append(text)
            records.append(
                {"system": "ours", "kind": task.kind, "prompt_tokens": len(body["input_ids"]),
                 "n_tokens": task_spec["n_tokens"], "depth": task.depth, "method": method,
                 "budget": budget, "turn": turn,
                 "text": text, "correct": kv_tasks.correct(text, expected),
                 "kv_kept": out["meta_info"].get("kv_tokens_kept"),
                 "seconds": time.time() - t0}
            )  # fmt: skip
            sink(records[-1])
        logger.info("ours %s %s %s: %s", method, budget, task.kind,
                    [r["correct"] for r in records[-len(task.turns):]])  # fmt: skip
    return records


def run_kvpress(folder, specs, plan, new_tokens: int) -> list[dict]:
    configs = [
        {"method": label, "budget": budget,
         "press": spec and PRESSES[spec["method"]],
         "kwargs": {k: v for k, v in (spec or {}).items() if k not in ("method", "budget")}}
        for label, budget, spec in plan
    ]  # fmt: skip
    request = {"folder": folder, "new_tokens": new_tokens, "tasks": specs, "configs": configs}
    return [{"system": "kvpress", **r} for r in run_kvpress_worker("kvpress_tasks.py", request)]


def report(records: list[dict]) -> None:
    cells = defaultdict(list)
    kinds = sorted({r["kind"] for r in records})
    for r in records:
        cells[(r["system"], r["method"], r["budget"], r["kind"], r["turn"])].append(r["correct"])
    rows = sorted({(s, m, b) for s, m, b, _, _ in cells}, key=lambda x: (x[0], x[1] != "full", x))
    cols = [(k, t) for k in kinds for t in sorted({c[4] for c in cells if c[3] == k})]
    head = " ".join(
        f"{k[:9]}{' t' + str(t + 1) if k == 'two_keys' else ''}".rjust(12) for k, t in cols
    )
    print(f"{'system':<8} {'method':<13} {'budget':>6}  {head}")
    for s, m, b in rows:
        vals = []
        for k, t in cols:
            got = cells.get((s, m, b, k, t), [])
            vals.append(f"{sum(got)}/{len(got)}".rjust(12) if got else " " * 12)
        print(f"{s:<8} {m:<13} {b if b else 'exact':>6}  {' '.join(vals)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="our running server; without it one is started here")
    ap.add_argument(
        "--server-args",
        default="--dtype float32 --quantization none --max-total-tokens 24000",
        help="flags of the server started here",
    )
    ap.add_argument("--kvpress", action="store_true", help="also through kvpress (reference)")
    ap.add_argument("--no-ours", action="store_true", help="kvpress only")
    ap.add_argument("--kinds", nargs="+", default=list(kv_tasks.KINDS))
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--budgets", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument(
        "--specs",
        nargs="+",
        help="instead of full KV and --methods x --budgets: full, method:budget[:option=int...]",
    )
    ap.add_argument("--lengths", type=int, nargs="+", default=[2000, 4500, 7000])
    ap.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    ap.add_argument(
        "--new-tokens", type=int, default=20, help="room for 'The code ... is' + 5 digits"
    )
    ap.add_argument(
        "--options",
        type=json.loads,
        default={"pyramidkv": {"window_size": 16, "beta": 4}},
        help="JSON: options per method",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "kv_compression.jsonl"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.smoke:
        args.kinds, args.lengths, args.depths = ["needle"], [1000], [0.5]
        args.methods, args.budgets, args.specs = ["streamingllm", "snapkv"], [256], None

    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    folder = prepare_model_folder(None, None)
    tok = load_tokenizer(folder)
    specs = [  # the kinds take turns, so a run cut short has as many of each
        {"kind": k, "n_tokens": n, "depth": d, "seed": args.seed + i}
        for i, (n, d) in enumerate((n, d) for n in args.lengths for d in args.depths)
        for k in args.kinds
    ]
    tasks = [kv_tasks.KINDS[s["kind"]](tok, s["n_tokens"], s["depth"], s["seed"]) for s in specs]
    names = args.specs or ["full"] + [f"{m}:{b}" for m in args.methods for b in args.budgets]
    plan = [plan_entry(name, args.options) for name in names]
    logger.info("%d tasks (%d-%d context tokens), %d configurations", len(tasks),
                min(args.lengths), max(args.lengths), len(plan))  # fmt: skip
    records = []
    run_tag = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.makedirs(os.path.dirname(args.out), exist_ok=True)

    def sink(record: dict) -> None:
        with open(args.out, "a") as f:
            f.write(json.dumps({**record, "smoke": args.smoke, "run": run_tag}) + "\n")

    if not args.no_ours:
        server = None
        url = args.url
        if url is None:
            from runtime.server_process import ServerProcess

            server = ServerProcess(*args.server_args.split())
            url = server.url
        try:
            records += run_ours(url, tok, specs, tasks, plan, args.new_tokens, sink)
        finally:
            if server is not None:
                server.stop()
    if args.kvpress:
        for r in run_kvpress(folder, specs, plan, args.new_tokens):
            records.append(r)
            sink(r)
    report(records)


if __name__ == "__main__":
    main()
