"""The scheduler's own process: owns the model and KV pools, talks to its client over ZMQ.

Running the scheduler as the main thread of its own process keeps torch's intra-op thread pool
to itself (in a side thread of a busy process, decode ran at half speed on a 2-core machine), and
it is the shape the HTTP server uses too. Its settings arrive as the first message on its socket
(`SchedulerInit`), so nothing of them shows on its command line; the protocol is in `io_struct`.
Outputs go to the detokenizer process, which passes them on to the client as text.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from runtime.io_struct import (
    AbortRequest,
    BatchTokenOutput,
    CallReply,
    CallRequest,
    RequestError,
    SchedulerInit,
    SchedulerReady,
    ShutdownRequest,
    StartupFailed,
    TokenizedGenerateRequest,
)
from runtime.processes import (
    child_setup,
    configure_child_logging,
    ipc_dir,
    parent_gone,
    spawn,
)

logger = logging.getLogger(__name__)


def scheduler_info(runner, scheduler) -> dict:
    return {
        **dataclasses.asdict(runner.args),
        "model_folder": runner.model_folder,
        "model_dtype": str(runner.dtype).removeprefix("torch."),
        "weight_quantization": runner.quantization,
        "load_seconds": runner.load_seconds,
        "max_total_tokens": runner.max_total_tokens,
        "kv_cache_dtype": runner.kv_cache_dtype,
        "kv_bytes_per_token": runner.kv_pool.token_bytes(),
        "context_length": runner.context_len,
        "vocab_size": runner.config.vocab_size,
        **scheduler.load_stats(),
    }


def _receive_init(recv, parent: int, socket_dir: str) -> SchedulerInit | None:
    while not recv.poll(1000):
        if parent_gone(parent, socket_dir):
            return None
    msg = recv.recv_pyobj()
    return msg if isinstance(msg, SchedulerInit) else None  # shut down before it started


def run_scheduler_process(in_addr: str, out_addr: str) -> None:
    """Process entry point; returns when told to shut down or when its parent is gone."""
    parent, ctx, recv, send = child_setup(in_addr, out_addr, bind_in=False)
    init = _receive_init(recv, parent, ipc_dir(in_addr))
    if init is None:
        return
    configure_child_logging(init.args.log_level)
    try:
        from runtime.model_loader.loader import load_tokenizer
        from runtime.model_runner import ModelRunner
        from runtime.scheduler.scheduler import Scheduler

        runner = ModelRunner(init.args)
        tokenizer = load_tokenizer(runner.model_folder, init.args.tokenizer_path)
        eos = set(runner.config.eos_token_ids)
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        scheduler = Scheduler(runner, tokenizer, eos)
    except Exception as e:
        logger.exception("scheduler failed to start")
        send.send_pyobj(StartupFailed(f"{type(e).__name__}: {e}"))
        return
    send.send_pyobj(SchedulerReady(scheduler_info(runner, scheduler)))
    try:
        _serve(recv, send, runner, scheduler, parent, ipc_dir(in_addr))
    finally:
        scheduler.shutdown()
        send.send_pyobj(ShutdownRequest())
        recv.close(linger=0)
        send.close(linger=1000)
        ctx.term()


def _handle(msg, send, runner, scheduler) -> bool:
    """Applies one message from the client; False when it says to stop."""
    if isinstance(msg, TokenizedGenerateRequest):
        try:
            scheduler.add_request(msg)
        except Exception as e:
            send.send_pyobj(RequestError(msg.rid, e))
        else:
            send.send_pyobj(msg)  # the detokenizer meets the request before its outputs
    elif isinstance(msg, AbortRequest):
        send.send_pyobj(BatchTokenOutput(scheduler.abort_request(msg.rid, msg.message)))
    elif isinstance(msg, CallRequest):
        calls = {
            "server_info": lambda: scheduler_info(runner, scheduler),
            "flush_cache": scheduler.flush_cache,
            "pin_prefix": scheduler.pin_prefix,
            "unpin_prefix": scheduler.unpin_prefix,
            "cache_tree": scheduler.cache_tree,
        }
        try:
            value = calls[msg.name](**msg.args)
        except ValueError as e:  # a bad argument fails the call, not the scheduler
            value = e
        send.send_pyobj(CallReply(msg.ticket, value))
    elif isinstance(msg, ShutdownRequest):
        send.send_pyobj(BatchTokenOutput(scheduler.abort_all()))
        return False
    else:
        logger.error("unexpected message %r", type(msg).__name__)
    return True


def _serve(recv, send, runner, scheduler, parent: int, socket_dir: str) -> None:
    while True:
        if parent_gone(parent, socket_dir):  # also mid-work: a killed client leaves no orphan
            return
        scheduler.expire_pins()
        # Block only while idle; with work queued, take what has arrived and run a step.
        if not scheduler.has_work() and not recv.poll(1000):
            continue
        while recv.poll(0):
            if not _handle(recv.recv_pyobj(), send, runner, scheduler):
                return
        if scheduler.has_work():
            outputs = scheduler.step()
            if outputs:
                send.send_pyobj(BatchTokenOutput(outputs))
            while scheduler.errors:  # e.g. a constraint that failed to compile
                rid, error = scheduler.errors.pop()
                send.send_pyobj(RequestError(rid, error))


def spawn_scheduler_process(in_addr: str, out_addr: str):
    """Starts the process; its client sends `SchedulerInit` on `in_addr` first."""
    return spawn("runtime.scheduler.process", in_addr, out_addr)


if __name__ == "__main__":
    run_scheduler_process(sys.argv[1], sys.argv[2])
