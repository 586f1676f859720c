"""The OpenAI protocol: /v1/models, /v1/completions, /v1/chat/completions, streaming included.

Requests become `Engine.async_generate` calls with our sampling params; SGLang's extra body
fields (top_k, min_p, ignore_eos, ...) pass through to them, vLLM's are mapped onto them.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from runtime.entrypoints.chat_tools import plan_chat
from runtime.entrypoints.http_utils import APIError, sse_response, until_disconnect
from runtime.entrypoints.openai_protocol import (
    ChatRequest,
    CommonRequest,
    CompletionRequest,
)
from runtime.entrypoints.utility_routes import model_card
from runtime.parsers.chat_output import ChatOutputReader, read_chat_output
from runtime.parsers.reasoning_parser import reasoning_format
from runtime.parsers.tool_call_parser import tool_call_parser

openai_router = APIRouter()


def _finish(meta: dict) -> tuple[str | None, object]:
    fr = meta.get("finish_reason")
    if fr is None:
        return None, None
    return fr["type"], fr.get("matched")


def _usage(results: list[dict], n: int) -> dict:
    """Prompt and cached tokens count once per prompt (the first of its n choices)."""
    firsts = [r["meta_info"] for r in results[::n]]
    prompt = sum(m["prompt_tokens"] for m in firsts)
    completion = sum(r["meta_info"]["completion_tokens"] for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(m["cached_tokens"] for m in firsts)},
    }


def _completion_logprobs(entries: list, tops: list | None, offset: int) -> dict:
    texts = [e[2] for e in entries]
    offsets, pos = [], offset
    for t in texts:
        offsets.append(pos)
        pos += len(t)
    return {
        "tokens": texts,
        "token_logprobs": [e[0] for e in entries],
        "top_logprobs": [{t[2]: t[0] for t in top or []} for top in tops] if tops else None,
        "text_offset": offsets,
    }


def _chat_logprobs(entries: list, tops: list | None) -> dict:
    def item(e) -> dict:
        return {"token": e[2], "logprob": e[0], "bytes": list(e[2].encode())}

    content = []
    for i, e in enumerate(entries):
        top = tops[i] if tops and i < len(tops) else None
        content.append({**item(e), "top_logprobs": [item(t) for t in top or []]})
    return {"content": content}


class _Choices:
    """Per choice index: what a stream has sent so far, so each chunk carries only the news."""

    def __init__(self) -> None:
        self.text: dict[int, str] = {}
        self.logprobs: dict[int, int] = {}
        self.started: set[int] = set()

    def first(self, index: int) -> bool:
        """True the first time a choice shows up."""
        new = index not in self.started
        self.started.add(index)
        return new

    def delta(self, index: int, chunk: dict) -> tuple[str, list, list | None]:
        text = chunk["text"]
        sent = self.text.get(index, "")
        self.text[index] = text
        meta = chunk["meta_info"]
        entries = meta.get("output_token_logprobs") or []
        start = self.logprobs.get(index, 0)
        self.logprobs[index] = len(entries)
        tops = meta.get("output_top_logprobs")
        return text[len(sent) :], entries[start:], tops[start:] if tops else None


def _envelope(kind: str, cid: str, model: str):
    """The fields every response and chunk of one call carries around its choices."""
    created = int(time.time())

    def wrap(choices: list, **extra) -> dict:
        return {
            "id": cid,
            "object": kind,
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    return wrap


def _usage_tail(req: CommonRequest, finals: dict[int, dict], wrap):
    """The last chunk of a stream, with usage, when `stream_options.include_usage` asks."""

    def tail():
        if req.stream_options and req.stream_options.include_usage:
            yield wrap([], usage=_usage([finals[i] for i in sorted(finals)], req.n))

    return tail


def _engine(request: Request):
    return request.app.state.engine


def _output_parsers(request: Request):
    """(tool-call parser, reasoning format or None) of this server, chosen once."""
    state = request.app.state
    if not hasattr(state, "output_parsers"):
        args = state.args
        state.output_parsers = (
            tool_call_parser(args.tool_call_parser, state.engine.tokenizer.chat_template),
            reasoning_format(args.reasoning_parser) if args.reasoning_parser else None,
        )
    return state.output_parsers


def _finish_reason(finish: str | None, calls: bool) -> str | None:
    return "tool_calls" if calls and finish == "stop" else finish


def _check_model_len(n_prompt: int, context: int) -> None:
    if n_prompt >= context:
        raise APIError(
            400,
            f"prompt: {n_prompt} tokens leave no room in the context length of {context} tokens",
            "prompt",
        )


@openai_router.get("/v1/models")
async def list_models(request: Request):
    return {"object": "list", "data": [model_card(request.app.state)]}


@openai_router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request):
    engine = _engine(request)
    if req.suffix:
        raise APIError(400, "suffix: not supported by this server", "suffix")
    if req.best_of not in (None, req.n):
        raise APIError(400, "best_of: only best_of == n is supported", "best_of")
    req.apply_response_format()
    echo_logprobs = req.echo and req.logprobs is not None  # the prompt's logprobs too
    if echo_logprobs and req.stream:
        raise APIError(400, "echo: not supported with logprobs when streaming", "echo")
    p = req.prompt
    if isinstance(p, list) and not p:
        raise APIError(400, "prompt: must not be empty", "prompt")
    is_ids = isinstance(p, list) and isinstance(p[0], (int, list))
    kwargs = {"input_ids": p} if is_ids else {"prompt": p}
    prompts = p if isinstance(p, list) and not (is_ids and isinstance(p[0], int)) else [p]
    vocab = engine.vocab_size
    if is_ids and not all(isinstance(x, list) and all(0 <= t < vocab for t in x) for x in prompts):
        raise APIError(400, f"prompt: token ids must be integers in [0, {vocab})", "prompt")
    kwargs.update(
        sampling_params=req.sampling_params(req.max_tokens),
        return_logprob=req.logprobs is not None,
        top_logprobs_num=req.logprobs or None,
        return_text_in_logprobs=True,
        rid=req.rid,
        timeout=req.timeout,
    )
    if echo_logprobs:
        kwargs["logprob_start_len"] = 0
    echoes = [
        (engine.tokenizer.decode(x) if is_ids else x) if req.echo else ""
        for x in prompts
        for _ in range(req.n)
    ]
    wrap = _envelope("text_completion", f"cmpl-{uuid.uuid4().hex}", req.model)

    def choice(i: int, text: str, entries, tops, meta: dict, offset: int) -> dict:
        finish, matched = _finish(meta)
        return {
            "index": i,
            "text": text,
            "logprobs": _completion_logprobs(entries, tops, offset)
            if req.logprobs is not None
            else None,
            "finish_reason": finish,
            "matched_stop": matched,
        }

    try:
        if req.stream:
            chunks = await engine.async_generate(**kwargs, stream=True)
            seen = _Choices()
            finals: dict[int, dict] = {}

            def events(chunk: dict):
                i = chunk.get("index", 0)
                sent = len(seen.text.get(i, ""))
                text, entries, tops = seen.delta(i, chunk)
                if seen.first(i):
                    text = echoes[i] + text
                if chunk["meta_info"]["finish_reason"] is not None:
                    finals[i] = chunk
                yield wrap([choice(i, text, entries, tops, chunk["meta_info"], sent)])

            return await sse_response(chunks, events, _usage_tail(req, finals, wrap))
        out = await until_disconnect(request, engine.async_generate(**kwargs))
    except ValueError as e:
        raise APIError(400, str(e)) from None
    results = out if isinstance(out, list) else [out]
    choices = []
    for i, r in enumerate(results):
        meta = r["meta_info"]
        entries, tops = meta.get("output_token_logprobs") or [], meta.get("output_top_logprobs")
        if echo_logprobs:  # the prompt's tokens first, the first of them without a logprob
            entries = meta["input_token_logprobs"] + entries
            if tops is not None:
                tops = meta["input_top_logprobs"] + tops
        choices.append(choice(i, echoes[i] + r["text"], entries, tops, meta, 0))
    return wrap(choices, usage=_usage(results, req.n))


@openai_router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, request: Request):
    engine = _engine(request)
    req.apply_response_format()
    tool_parser, reasoning = _output_parsers(request)
    reasoning = reasoning if req.separate_reasoning else None
    template = engine.tokenizer.chat_template or ""
    plan = plan_chat(
        [m.for_template() for m in req.messages],
        req.tools,
        req.tool_choice,
        req.parallel_tool_calls,
        tool_parser,
        template,
        request.app.state.args.grammar_backend,
        bool(req.regex or req.json_schema or req.ebnf),
    )
    messages = plan.messages
    template_kwargs = req.template_kwargs(messages[-1]["role"])
    try:
        enc = await engine.run_in_tokenizer(
            lambda: engine.tokenizer.apply_chat_template(
                messages, tools=plan.template_tools, tokenize=True, **template_kwargs
            )
        )
    except Exception as e:  # a template that rejects the conversation (roles out of order)
        raise APIError(400, f"messages: the chat template rejects them ({e})", "messages") from e
    ids = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
    _check_model_len(len(ids), engine.context_len)
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_new = engine.context_len - len(ids) if limit is None else limit
    top = req.top_logprobs if req.logprobs else None
    params = req.sampling_params(max_new)
    if plan.structural_tag is not None:
        params["structural_tag"] = plan.structural_tag
    kwargs = dict(
        input_ids=ids,
        sampling_params=params,
        return_logprob=req.logprobs,
        top_logprobs_num=top or None,
        return_text_in_logprobs=True,
        rid=req.rid,
        timeout=req.timeout,
    )
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    wrap = _envelope("chat.completion", cid, req.model)
    wrap_chunk = _envelope("chat.completion.chunk", cid, req.model)

    def logprobs(entries, tops):
        return _chat_logprobs(entries, tops if top else None) if req.logprobs else None

    try:
        if req.stream:
            chunks = await engine.async_generate(**kwargs, stream=True)
            seen = _Choices()
            finals: dict[int, dict] = {}
            readers: dict[int, ChatOutputReader] = {}

            def events(chunk: dict):
                i = chunk.get("index", 0)
                if seen.first(i):
                    readers[i] = ChatOutputReader(plan.tool_parser, reasoning)
                    yield wrap_chunk(
                        [
                            {
                                "index": i,
                                "delta": {"role": "assistant", "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ]
                    )
                text, entries, tops = seen.delta(i, chunk)
                finish, matched = _finish(chunk["meta_info"])
                delta = readers[i].feed(text)
                if finish is not None:
                    finals[i] = chunk
                    for key, value in readers[i].finish().items():
                        delta[key] = delta.get(key, type(value)()) + value
                    finish = _finish_reason(finish, bool(readers[i].calls))
                if delta or entries or finish:
                    yield wrap_chunk(
                        [
                            {
                                "index": i,
                                "delta": delta,
                                "logprobs": logprobs(entries, tops),
                                "finish_reason": finish,
                                "matched_stop": matched,
                            }
                        ]
                    )

            return await sse_response(chunks, events, _usage_tail(req, finals, wrap_chunk))
        out = await until_disconnect(request, engine.async_generate(**kwargs))
    except ValueError as e:
        raise APIError(400, str(e)) from None
    results = out if isinstance(out, list) else [out]
    choices = []
    for i, r in enumerate(results):
        meta = r["meta_info"]
        finish, matched = _finish(meta)
        message = read_chat_output(r["text"], plan.tool_parser, reasoning)
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": logprobs(
                    meta.get("output_token_logprobs") or [], meta.get("output_top_logprobs")
                ),
                "finish_reason": _finish_reason(finish, "tool_calls" in message),
                "matched_stop": matched,
            }
        )
    return wrap(choices, usage=_usage(results, req.n))
