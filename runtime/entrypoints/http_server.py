"""The HTTP server: SGLang's native routes here, the OpenAI routes from `openai_api`, one Engine.

The Engine is the tokenizer manager: handlers validate and tokenize on the event loop and await
results that its receiver thread routes back from the detokenizer process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from runtime.engine import Engine, ServerBusy
from runtime.entrypoints.cache_routes import cache_router
from runtime.entrypoints.chat_tools import generate_tools, with_tool_calls
from runtime.entrypoints.http_utils import (
    JSON,
    APIError,
    error_response,
    read_json,
    sse_response,
    until_disconnect,
)
from runtime.entrypoints.metrics import Metrics
from runtime.entrypoints.openai_api import openai_router
from runtime.entrypoints.request_log import log_finished_request
from runtime.entrypoints.utility_routes import utility_router
from runtime.entrypoints.vendor_fields import NATIVE_REFUSED_WHEN_SET, check_extra_fields
from runtime.io_struct import GenerateRequest
from runtime.model_loader.loader import default_model_path
from runtime.parsers.tool_call_parser import tool_call_parser
from runtime.server_args import ServerArgs
from runtime.version import __version__

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
OPEN_PATHS = ("/health", "/cache")  # answered without the API key: nothing in them is private

# The /generate body is a GenerateRequest whose `prompt` is called `text`.
GENERATE_FIELDS = [
    "text" if f.name == "prompt" else f.name for f in dataclasses.fields(GenerateRequest)
]
BOOL_FIELDS = {"stream", "return_logprob", "return_text_in_logprobs"}  # the rest: the Engine checks


def generate_request(body: dict) -> GenerateRequest:
    """Maps a /generate body to a `GenerateRequest`, naming any bad field. SGLang's other
    fields are checked as the OpenAI routes check vendor fields: refused when they ask for
    what we would drop, else ignored (an unknown name is logged once)."""
    check_extra_fields(
        {k: v for k, v in body.items() if k not in GENERATE_FIELDS}, NATIVE_REFUSED_WHEN_SET
    )
    fields = {}
    for name, value in body.items():
        if name not in GENERATE_FIELDS:
            continue
        if value is None:
            continue
        if name in BOOL_FIELDS and not isinstance(value, bool):
            raise APIError(400, f"{name}: must be true or false, got {value!r}", name)
        fields["prompt" if name == "text" else name] = value
    if "prompt" not in fields and "input_ids" not in fields:
        raise APIError(400, "text: give `text` or `input_ids`", "text")
    return GenerateRequest(**fields)


def native_error(e: ValueError) -> str:
    """The Engine names its Python parameter `prompt`; over HTTP the field is `text`."""
    msg = str(e)
    return "text" + msg[len("prompt") :] if msg.startswith("prompt") else msg


class ApiKeyAuth:
    """ASGI middleware: every route but /health and the /cache page needs `Authorization:
    Bearer <key>` (the page is static; the data it fetches need the key, from its `?key=`)."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                msg = "Authorization: missing or wrong API key (send `Bearer <key>`)"
                await error_response(401, msg)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 before it is all read."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen, refused = 0, False

        async def counted():
            # Past the limit: answer 413 now, and tell the app the client has gone.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                refused = True
                await self._refuse(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, scope, receive, send) -> None:
        msg = f"body: larger than {self.limit} bytes (see --max-request-bytes)"
        await error_response(413, msg, "body")(scope, receive, send)


def create_app(engine: Engine, args: ServerArgs) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.shutdown()  # before uvicorn re-raises the signal that stopped it

    app = FastAPI(
        title="radixserve", version=__version__, default_response_class=JSON, lifespan=lifespan
    )
    model_path = args.model_path or default_model_path()
    app.state.served_model_name = args.served_model_name or os.path.basename(
        model_path.rstrip("/")
    ).removesuffix(".gguf")
    metrics = Metrics(engine.get_server_info, app.state.served_model_name)
    engine.on_delta = metrics.observe
    if args.log_requests:

        def observe(r, d) -> None:
            metrics.observe(r, d)
            log_finished_request(r, d)

        engine.on_delta = observe
    app.state.engine, app.state.args, app.state.metrics = engine, args, metrics

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return error_response(e.status, e.message, e.param)

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, e: ValueError):
        return error_response(400, native_error(e))

    @app.exception_handler(RuntimeError)
    async def _runtime_down(request: Request, e: RuntimeError):
        response = error_response(503, str(e))
        if isinstance(e, ServerBusy):
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            return error_response(
                400, f"body: not valid JSON ({first.get('ctx', {}).get('error', '')})"
            )
        loc = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return error_response(400, f"{loc}: {first['msg']}", loc)

    @app.get("/health")
    async def health():
        return Response(status_code=200)

    @app.get("/health_generate")
    async def health_generate():
        """Healthy when the model can prefill and decode one token right now."""
        out = await engine.async_generate(
            input_ids=[0], sampling_params={"max_new_tokens": 1, "temperature": 0}
        )
        return Response(status_code=200 if out["meta_info"]["finish_reason"] else 503)

    @app.get("/get_model_info")
    @app.get("/model_info")  # where SGLang's router looks first
    async def get_model_info():
        return {
            "model_path": model_path,
            "tokenizer_path": args.tokenizer_path or model_path,
            "served_model_name": app.state.served_model_name,
            "is_generation": True,
            "context_length": engine.context_len,
            "vocab_size": engine.vocab_size,
            # for clients that build chat prompts piece by piece (frontend_lang)
            "chat_template": engine.tokenizer.chat_template,
            "bos_token": engine.tokenizer.bos_token,
            "eos_token": engine.tokenizer.eos_token,
        }

    def server_info() -> dict:
        return {**engine.get_server_info(), "version": __version__}

    app.get("/get_server_info")(server_info)
    app.get("/server_info")(server_info)

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    def flush_cache():
        if engine.flush_cache():
            return PlainTextResponse("Cache flushed.\n")
        return error_response(400, "Cache not flushed: requests are queued or running.")

    @app.post("/abort_request")
    async def abort_request(request: Request):
        body = await read_json(request)
        if body.get("abort_all"):
            engine.abort_all()
        elif isinstance(body.get("rid"), str):
            engine.abort_request(body["rid"])
        else:
            raise APIError(400, "rid: give the request id to abort, or abort_all: true", "rid")
        return Response(status_code=200)

    @app.post("/generate")
    async def generate(request: Request):
        body = await read_json(request)
        parser = tool_call_parser(args.tool_call_parser, engine.tokenizer.chat_template)
        reads_calls = generate_tools(body, parser, args.grammar_backend)
        req = generate_request(body)

        def finish(out):
            if not reads_calls:
                return out
            return (
                [with_tool_calls(o, parser) for o in out]
                if isinstance(out, list)
                else with_tool_calls(out, parser)
            )

        try:
            if req.stream:
                chunks = await engine.async_generate_request(req)
                return await sse_response(chunks, lambda chunk: [finish(chunk)])
            return finish(await until_disconnect(request, engine.async_generate_request(req)))
        except ValueError as e:
            raise APIError(400, native_error(e)) from None

    @app.get("/metrics")
    def prometheus_metrics():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(openai_router)
    app.include_router(utility_router)
    app.include_router(cache_router)
    app.add_middleware(BodySizeLimit, limit=args.max_request_bytes)
    if args.api_key:  # outermost: a request without the key learns nothing else
        app.add_middleware(ApiKeyAuth, api_key=args.api_key)
    return app


def serve(args: ServerArgs) -> int:
    """Loads the model, serves until SIGINT / SIGTERM or a child's death; returns an exit code."""
    import uvicorn

    engine = Engine(**dataclasses.asdict(args))
    try:
        app = create_app(engine, args)
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            loop="uvloop",
            log_level=args.log_level,
            access_log=args.log_level == "debug",
            timeout_keep_alive=5,
            timeout_graceful_shutdown=args.graceful_shutdown_timeout,
        )
        server = uvicorn.Server(config)
        died: list[str] = []

        def on_death(why: str) -> None:
            logger.error("shutting the server down: %s", why)
            died.append(why)
            server.should_exit = True  # the serving loop polls it

        engine.on_death = on_death
        logger.info("serving %s on http://%s:%d", app.state.served_model_name, args.host, args.port)
        server.run()
    finally:
        engine.shutdown()
    return 1 if died else 0
