"""Routes over the prefix cache: pinning prefixes, the tree as JSON, and the page that draws it.

`POST /pin_prefix {"text" | "input_ids" | "messages" (+ "tools"), "ttl_s"?}` computes (or
finds) the prefix and holds it out of eviction until `POST /unpin_prefix {"pin_id"}` or its
time runs out. `GET /cache/tree?depth=&min_tokens=` returns the radix tree; `GET /cache` serves
a self-contained page (no CDN, no build step) that draws it and refreshes every few seconds.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from runtime.entrypoints.chat_tools import check_tools, template_conversation
from runtime.entrypoints.http_utils import APIError, read_json
from runtime.parsers.tool_call_parser import tool_call_parser

cache_router = APIRouter()
PIN_SOURCES = ("text", "input_ids", "messages")


def _prefix_ids(engine, args, body: dict) -> list[int]:
    given = [k for k in PIN_SOURCES if body.get(k) is not None]
    if len(given) != 1:
        raise APIError(400, "text: give exactly one of text, input_ids and messages", "text")
    if given[0] == "text":
        if not isinstance(body["text"], str) or not body["text"]:
            raise APIError(400, "text: must be a non-empty string", "text")
        return engine.tokenizer.encode(body["text"])
    if given[0] == "input_ids":
        ids = body["input_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
            raise APIError(400, "input_ids: must be a non-empty list of token ids", "input_ids")
        return ids
    messages = body["messages"]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
    ):
        raise APIError(400, "messages: must be a list of {role, content}", "messages")
    template = engine.tokenizer.chat_template or ""
    parser = tool_call_parser(args.tool_call_parser, template)
    tools = None
    if body.get("tools") is not None:
        tools = check_tools(body["tools"])
    msgs, template_tools = template_conversation(messages, tools, parser, template)
    try:
        enc = engine.tokenizer.apply_chat_template(
            msgs, tools=template_tools, add_generation_prompt=False, tokenize=True
        )
    except Exception as e:
        raise APIError(400, f"messages: the chat template rejects them ({e})", "messages") from e
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


@cache_router.post("/pin_prefix")
async def pin_prefix(request: Request):
    state = request.app.state
    body = await read_json(request)
    ids = await state.engine.run_in_tokenizer(_prefix_ids, state.engine, state.args, body)
    ttl = body.get("ttl_s")
    # blocking: the prefill and the scheduler call run on a worker thread
    return await asyncio.to_thread(state.engine.pin_prefix, None, ids, ttl)


@cache_router.post("/unpin_prefix")
async def unpin_prefix(request: Request):
    body = await read_json(request)
    pin_id = body.get("pin_id")
    if not isinstance(pin_id, str):
        raise APIError(400, "pin_id: give the pin_id that /pin_prefix returned", "pin_id")
    if not await asyncio.to_thread(request.app.state.engine.unpin_prefix, pin_id):
        raise APIError(404, f"pin_id: no pin {pin_id!r} (unpinned, or expired)", "pin_id")
    return {"unpinned": pin_id}


@cache_router.get("/cache/tree")
async def tree(request: Request, depth: int | None = None, min_tokens: int = 0):
    return await asyncio.to_thread(request.app.state.engine.cache_tree, depth, min_tokens)


@cache_router.get("/cache")
async def page():
    html = resources.files("runtime.entrypoints").joinpath("static/cache.html").read_text()
    return HTMLResponse(html)
