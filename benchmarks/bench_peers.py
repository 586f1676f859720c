"""Our server side by side with vLLM CPU and llama.cpp: same machine, model, prompts, HTTP.

Each repeat starts every system in turn on a free port (fresh, so no cache carries over), runs
the workloads against it, records its resident memory and stops it; the order of systems rotates
between repeats. Every (system, workload, level, repeat) is one JSON line in `--out`; the table
holds medians over repeats and ours / best peer, all from this run.
    .venv/bin/python benchmarks/bench_peers.py [--repeats 2] [--systems ours vllm ...]
        [--workloads decode prefill shared programs json] [--smoke]
A peer that is not installed (scripts/peers.sh installs them) is skipped, saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peers import json_decode, machine, programs, report, systems, workloads  # noqa: E402
from peers.client import run_all  # noqa: E402
from peers.prompts import TextMaker, load_tokenizer  # noqa: E402

DEFAULT_SYSTEMS = ["ours", "vllm", "vllm-fp32", "llamacpp"]
WORKLOAD_FAMILIES = ["decode", "prefill", "shared", "programs", "json"]
# the frontend programs and JSON run against the default-dtype peer only (to keep the run short);
# llama.cpp has one slot, so levels above one client add nothing but time
PROGRAM_SYSTEMS = {"ours", "ours-bf16", "vllm"}


def plan(
    spec: systems.SystemSpec, families: list[str], scale: workloads.Scale
) -> list[tuple[str, int | None, Callable]]:
    """(workload, level, fn(url, maker, salt) -> metrics) for one system."""
    out: list[tuple[str, int | None, Callable]] = []
    if "decode" in families:
        for n in scale.decode_streams:
            if spec.concurrent or n <= 8:
                out.append(("decode", n, lambda u, m, s, n=n: workloads.decode(u, m, s, scale, n)))
    if "prefill" in families:
        out.append(("prefill", None, lambda u, m, s: workloads.prefill(u, m, s, scale)))
    if "shared" in families:
        levels = scale.shared_clients if spec.concurrent else scale.shared_clients[:1]
        for c in levels:
            out.append(
                ("shared", c, lambda u, m, s, c=c: workloads.shared_prefix(u, m, s, scale, c))
            )
    if spec.name in PROGRAM_SYSTEMS and "programs" in families:
        for w in programs.PROGRAM_WORKLOADS:
            out.append(
                (f"prog:{w}", None, lambda u, m, s, w=w: run_program(spec, u, m, s, w, scale))
            )
    if spec.name in PROGRAM_SYSTEMS and "json" in families:
        out.append(("json", None, lambda u, m, s: json_decode.run_json(u, s, scale.programs)))
    return out


def program_backend(spec: systems.SystemSpec, url: str):
    """Ours through its native protocol; a peer through the frontend's OpenAI backend."""
    import frontend_lang as fl

    if spec.kind == "ours":
        return fl.RuntimeEndpoint(url)
    return fl.OpenAI("default", base_url=f"{url}/v1")


def run_program(spec, url: str, maker: TextMaker, salt: str, workload: str, scale) -> dict:
    backend = program_backend(spec, url)
    return programs.run_programs(workload, backend, maker, scale.programs, salt)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS, choices=list(systems.SYSTEMS))
    ap.add_argument("--workloads", nargs="+", default=WORKLOAD_FAMILIES, choices=WORKLOAD_FAMILIES)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--programs", type=int, help="programs per frontend workload")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before each workload, wait up to this many seconds for other processes to go quiet",
    )
    ap.add_argument(
        "--busy-cores",
        type=float,
        default=0.5,
        help="others' average CPU use (cores) above which a workload waits first and runs again",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="compute threads of each system (0: each one's default); 1 keeps a system steady "
        "when other processes hold a core of this 2-core machine",
    )
    ap.add_argument(
        "--budget-min",
        type=float,
        default=0,
        help="start no further system after this many minutes (0: no limit); the table says so",
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results", "peers.jsonl"))
    ap.add_argument("--log-dir", default=os.path.join(HERE, "results", "logs"))
    return ap.parse_args(argv)


def runnable(names: list[str], say=print) -> list[systems.SystemSpec]:
    """The systems that can run here; each missing one is named with how to install it."""
    out = []
    for name in names:
        spec = systems.SYSTEMS[name]
        reason = systems.missing_reason(spec)
        if reason:
            say(f"skipping {name}: {reason}")
        else:
            out.append(spec)
    return out


def measure(fn, server, maker: TextMaker, salt: str, quiet_wait: float, busy: float) -> dict:
    """Runs one workload after waiting for others to use under `busy` cores; its metrics and
    the cores others used meanwhile."""
    waited = machine.wait_quiet([server.pid], quiet_wait, below=busy) if quiet_wait else 0.0
    load = machine.ForeignLoad([server.pid])
    try:
        metrics = fn(server.url, maker, salt)
    except Exception as e:
        metrics = {"error": f"{type(e).__name__}: {e}"[:500]}
    metrics.update(foreign_cores=load.cores(), waited_quiet_s=waited)
    return metrics


def run_system(spec, families, scale, repeat: int, salt: str, args, state: dict) -> None:
    """Starts one system, runs its workloads, records each and its memory, stops it."""
    t0 = time.perf_counter()
    try:
        server = systems.start(spec, args.log_dir, threads=args.threads)
    except Exception as e:  # a peer that fails to start is reported, the run goes on
        print(f"  {spec.name}: failed to start: {e}")
        report.append_record(
            args.out,
            report.make_record(spec.name, spec.label, "start", None, repeat, {"error": str(e)}),
        )
        return
    print(f"  {spec.name} up in {time.perf_counter() - t0:.0f} s at {server.url}")
    try:
        if state.get("maker") is None:
            state["maker"] = TextMaker(
                load_tokenizer(systems.converted_folder(systems.gguf_path()))
            )
        # one short request first: a first request's lazy set-up is no workload's cost
        asyncio.run(run_all(server.url, [f"[{salt}] Warm-up: hello"], 8))
        for workload, level, fn in plan(spec, families, scale):
            for attempt in range(2):  # once more, with new prompts, if others took the CPU
                metrics = measure(
                    fn,
                    server,
                    state["maker"],
                    f"{salt}a{attempt}",
                    args.quiet_wait,
                    args.busy_cores,
                )
                metrics["attempt"] = attempt
                if metrics["foreign_cores"] < args.busy_cores or "error" in metrics:
                    break
            rec = report.make_record(spec.name, spec.label, workload, level, repeat, metrics)
            report.append_record(args.out, rec)
            shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}
            print(f"    {workload}@{level}: {shown}")
        rss = {"rss_mib": server.rss() / 2**20}
        report.append_record(
            args.out, report.make_record(spec.name, spec.label, "rss", None, repeat, rss)
        )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scale = workloads.SMOKE if args.smoke else workloads.Scale()
    if args.programs:
        scale = workloads.Scale(**{**scale.__dict__, "programs": args.programs})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    os.makedirs(args.log_dir, exist_ok=True)
    specs = runnable(args.systems)
    if os.path.exists(args.out):
        os.remove(args.out)
    run_id = datetime.datetime.now(datetime.UTC).strftime("%H%M%S")
    started = datetime.datetime.now(datetime.UTC)
    print(f"{started:%Y-%m-%d %H:%M} UTC: {[s.name for s in specs]}, {args.repeats} repeats")
    state: dict = {}
    for repeat in range(args.repeats):
        k = repeat % max(len(specs), 1)
        for spec in specs[k:] + specs[:k]:  # rotate the order between repeats
            spent = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
            if args.budget_min and spent > args.budget_min:
                print(f"repeat {repeat}: {spec.name} not run: {spent:.0f} min spent, budget over")
                continue
            print(f"repeat {repeat}: {spec.name}")
            run_system(spec, args.workloads, scale, repeat, f"{run_id}r{repeat}", args, state)
    records = report.read_records(args.out) if os.path.exists(args.out) else []
    minutes = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
    print(f"\n{len(records)} records in {args.out} ({minutes:.0f} min)\n")
    print(report.table(records, [(s.name, s.label) for s in specs]))


if __name__ == "__main__":
    main()
