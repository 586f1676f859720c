"""`--log-requests`: one log line per finished request, for reading a server's traffic."""

from __future__ import annotations

import logging
import time

from runtime.response import RequestResult, ResultDelta

logger = logging.getLogger(__name__)


def log_finished_request(r: RequestResult, d: ResultDelta) -> None:
    """Engine.on_delta hook: logs a request as it finishes."""
    if d.finish_reason is None:
        return
    ttft = "-" if r.first_token_time is None else f"{r.first_token_time - r.created:.3f}s"
    finish = d.finish_reason["type"]
    if d.finish_reason.get("matched") is not None:
        finish += f" ({d.finish_reason['matched']!r})"
    logger.info(
        "request %s: prompt_tokens=%d cached_tokens=%d output_tokens=%d ttft=%s latency=%.3fs "
        "finish=%s",
        r.rid,
        d.prompt_tokens,
        d.cached_tokens,
        d.completion_tokens,
        ttft,
        time.perf_counter() - r.created,
        finish,
    )
