"""The scheduler's own process: owns the model and KV pools, talks to its client over ZMQ.

Running the scheduler as the main thread of its own process keeps torch's intra-op thread pool
to itself (in a side thread of a busy process, decode ran at half speed on a 2-core machine), and
it is the shape the HTTP server uses too. Messages are pickled tuples:
  in:  ("add", GenerateInput) | ("abort", rid) | ("call", ticket, name) | ("shutdown",)
  out: ("ready", info) | ("failed", why) | ("new", GenerateInput) | ("out", [ReqOutput])
       | ("error", rid, Exception) | ("reply", ticket, value) | ("shutdown",)
Outputs go to the detokenizer process, which passes them on to the client as text; "new" tells
it of a request before its first output, on the same socket so it always arrives first. A call
runs `server_info` or `flush_cache` between two steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

from runtime.processes import child_setup, ipc_dir, parent_gone, spawn
from runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)


def scheduler_info(runner, scheduler) -> dict:
    return {
        **dataclasses.asdict(runner.args),
        "model_folder": runner.model_folder,
        "load_seconds": runner.load_seconds,
        "max_total_tokens": runner.max_total_tokens,
        "context_length": runner.context_len,
        "vocab_size": runner.config.vocab_size,
        **scheduler.load_stats(),
    }


def run_scheduler_process(args: ServerArgs, in_addr: str, out_addr: str) -> None:
    """Process entry point; returns when told to shut down or when its parent is gone."""
    parent, ctx, recv, send = child_setup(args.log_level, in_addr, out_addr, bind_in=False)
    try:
        from runtime.model_loader.loader import load_tokenizer
        from runtime.model_runner import ModelRunner
        from runtime.scheduler.scheduler import Scheduler

        runner = ModelRunner(args)
        tokenizer = load_tokenizer(runner.model_folder, args.tokenizer_path)
        eos = set(runner.config.eos_token_ids)
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        scheduler = Scheduler(runner, tokenizer, eos)
    except Exception as e:
        logger.exception("scheduler failed to start")
        send.send_pyobj(("failed", f"{type(e).__name__}: {e}"))
        return
    send.send_pyobj(("ready", scheduler_info(runner, scheduler)))
    try:
        _serve(recv, send, runner, scheduler, parent, ipc_dir(in_addr))
    finally:
        if scheduler.grammars is not None:
            scheduler.grammars.shutdown()  # drop queued compilations; exit need not wait
        send.send_pyobj(("shutdown",))
        recv.close(linger=0)
        send.close(linger=1000)
        ctx.term()


def _serve(recv, send, runner, scheduler, parent: int, socket_dir: str) -> None:
    while True:
        if parent_gone(parent, socket_dir):  # also mid-work: a killed client leaves no orphan
            return
        # Block only while idle; with work queued, take what has arrived and run a step.
        if not scheduler.has_work() and not recv.poll(1000):
            continue
        while recv.poll(0):
            msg = recv.recv_pyobj()
            kind = msg[0]
            if kind == "shutdown":
                for rid in scheduler.all_rids():
                    send.send_pyobj(("out", scheduler.abort_request(rid)))
                return
            if kind == "add":
                try:
                    scheduler.add_request(msg[1])
                except Exception as e:
                    send.send_pyobj(("error", msg[1].rid, e))
                else:
                    send.send_pyobj(("new", msg[1]))
            elif kind == "abort":
                send.send_pyobj(("out", scheduler.abort_request(msg[1])))
            elif kind == "call":
                calls = {
                    "server_info": lambda: scheduler_info(runner, scheduler),
                    "flush_cache": scheduler.flush_cache,
                }
                send.send_pyobj(("reply", msg[1], calls[msg[2]]()))
        if scheduler.has_work():
            outputs = scheduler.step()
            if outputs:
                send.send_pyobj(("out", outputs))
            while scheduler.errors:  # e.g. a constraint that failed to compile
                rid, error = scheduler.errors.pop()
                send.send_pyobj(("error", rid, error))


def spawn_scheduler_process(args: ServerArgs, in_addr: str, out_addr: str):
    return spawn(
        "runtime.scheduler.process", in_addr, out_addr, json.dumps(dataclasses.asdict(args))
    )


if __name__ == "__main__":
    run_scheduler_process(ServerArgs(**json.loads(sys.argv[3])), sys.argv[1], sys.argv[2])
