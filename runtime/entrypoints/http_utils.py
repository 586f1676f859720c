"""What every route shares: JSON errors, server-sent events, and aborting on a client's leave."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

logger = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.5


class APIError(Exception):
    """An error a client caused or should know of, answered with `status` and a JSON body."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError"}
    return {
        "error": {
            "message": message,
            "type": kind.get(status, "ServerError" if status >= 500 else "BadRequestError"),
            "param": param,
            "code": status,
        }
    }


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    if param is None:  # the field an error message starts with (`sampling_params.top_p: ...`)
        head, sep, _ = message.partition(": ")
        param = head if sep and " " not in head else None
    return JSONResponse(error_body(status, message, param), status_code=status)


def dumps(obj) -> str:
    # Logprobs may be -inf (a banned token among the top ones); Python clients read that back.
    return json.dumps(obj, ensure_ascii=False, allow_nan=True)


class JSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return dumps(content).encode()


async def read_json(request: Request) -> dict:
    body = await request.body()
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"body: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise APIError(400, "body: must be a JSON object")
    return obj


def sse(obj) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


async def sse_response(
    chunks: AsyncIterator,
    events: Callable[[object], Iterable[dict]],
    tail: Callable[[], Iterable[dict]] = tuple,
) -> StreamingResponse:
    """Streams `events(chunk)` for each chunk, then `tail()`, then `[DONE]`.

    The first chunk is awaited before the headers go out, so a request that fails at once (a
    grammar that does not compile, a prompt the KV pool cannot hold) is answered 400 like a
    non-streaming one. A client that leaves cancels the body (Starlette listens for the
    disconnect); closing `chunks` then aborts the requests behind it and frees their KV. An
    error after the headers went out is sent as one `{"error": ...}` event.
    """
    try:
        first = [await anext(chunks)]
    except StopAsyncIteration:
        first = []

    async def body():
        try:
            for chunk in first:
                for event in events(chunk):
                    yield sse(event)
            async for chunk in chunks:
                for event in events(chunk):
                    yield sse(event)
            for event in tail():
                yield sse(event)
        except ValueError as e:
            yield sse(error_body(400, str(e)))
        except RuntimeError as e:
            yield sse(error_body(503, str(e)))
        finally:
            await chunks.aclose()
        yield SSE_DONE

    return StreamingResponse(body(), media_type="text/event-stream")


async def until_disconnect(request: Request, work: Awaitable):
    """Awaits `work`; cancels it (which aborts its requests) if the client leaves first."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            logger.info("client left %s before its answer; aborted", request.url.path)
            raise APIError(499, "client disconnected")
