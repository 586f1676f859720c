"""The detokenizer's own process: token outputs in from the scheduler, text deltas out to the client.

Incremental detokenization, the trimming of stop strings out of the text the client sees, and
the token text of logprob entries cost Python time per token per request; here they run beside
the scheduler instead of inside it or the HTTP event loop. (Whether a stop string has been hit
is decided in the scheduler, which must stop the request.) It passes every other message on
unchanged; the protocol is in `io_struct`.
"""

from __future__ import annotations

import logging
import sys

from runtime.io_struct import (
    BatchTextOutput,
    BatchTokenOutput,
    RequestError,
    ShutdownRequest,
    StartupFailed,
    TokenizedGenerateRequest,
)
from runtime.processes import child_setup, configure_child_logging, ipc_dir, parent_gone, spawn

logger = logging.getLogger(__name__)


def run_detokenizer_process(
    model_folder: str, tokenizer_path: str | None, log_level: str, in_addr: str, out_addr: str
) -> None:
    parent, ctx, recv, send = child_setup(in_addr, out_addr, bind_in=True)
    configure_child_logging(log_level)
    try:
        from runtime.model_loader.loader import load_tokenizer
        from runtime.response import ResponseBuilder

        tokenizer = load_tokenizer(model_folder, tokenizer_path)
    except Exception as e:
        logger.exception("detokenizer failed to start")
        send.send_pyobj(StartupFailed(f"detokenizer: {type(e).__name__}: {e}"))
        return
    builders: dict[str, ResponseBuilder] = {}
    try:
        while not parent_gone(parent, ipc_dir(in_addr)):
            if not recv.poll(1000):
                continue
            msg = recv.recv_pyobj()
            if isinstance(msg, TokenizedGenerateRequest):
                builders[msg.rid] = ResponseBuilder(
                    msg.rid, tokenizer, msg.params, msg.return_text_in_logprobs
                )
            elif isinstance(msg, BatchTokenOutput):
                deltas = []
                for out in msg.outputs:
                    b = builders.get(out.rid)
                    if b is None:
                        continue
                    deltas.append(b.add(out))
                    if b.finished:
                        del builders[out.rid]
                if deltas:
                    send.send_pyobj(BatchTextOutput(deltas))
            elif isinstance(msg, ShutdownRequest):
                return
            else:
                if isinstance(msg, RequestError):
                    builders.pop(msg.rid, None)
                send.send_pyobj(msg)
    finally:
        recv.close(linger=0)
        send.close(linger=1000)
        ctx.term()


def spawn_detokenizer_process(
    model_folder: str, tokenizer_path: str | None, log_level: str, in_addr: str, out_addr: str
):
    return spawn(
        "runtime.detokenizer_process",
        model_folder,
        tokenizer_path or "",
        log_level,
        in_addr,
        out_addr,
    )


if __name__ == "__main__":
    folder, tok_path, level, a, b = sys.argv[1:6]
    run_detokenizer_process(folder, tok_path or None, level, a, b)
