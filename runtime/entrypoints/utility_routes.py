"""Routes around generation: tokenizing, the version, and what SGLang's router reads
(`/model_info`, `/get_load`) to find and balance replicas."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from runtime.entrypoints.http_utils import APIError, read_json
from runtime.version import __version__

utility_router = APIRouter()


def model_card(state) -> dict:
    """One entry of /v1/models."""
    return {
        "id": state.served_model_name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "radixserve",
        "root": state.served_model_name,
        "max_model_len": state.engine.context_len,
    }


@utility_router.get("/version")
async def version():
    return {"version": __version__}


@utility_router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request):
    state = request.app.state
    if model_id != state.served_model_name:
        raise APIError(404, f"model: {model_id!r} is not served here", "model")
    return model_card(state)


@utility_router.get("/get_load")
def get_load(request: Request):
    """SGLang's shape: one entry per data-parallel rank (we are one)."""
    info = request.app.state.engine.get_server_info()
    used = round(info["token_usage"] * info["max_total_tokens"])
    running, waiting = info["num_running_reqs"], info["num_waiting_reqs"]
    return [
        {
            "dp_rank": 0,
            "num_reqs": running + waiting,
            "num_waiting_reqs": waiting,
            "num_tokens": used,
        }
    ]


@utility_router.post("/tokenize")
async def tokenize(request: Request):
    """`prompt` (text, or a list of texts) or chat `messages` -> token ids, with the count."""
    body = await read_json(request)
    engine = request.app.state.engine
    tok = engine.tokenizer
    add_special = body.get("add_special_tokens", True)
    if not isinstance(add_special, bool):
        raise APIError(400, "add_special_tokens: must be true or false", "add_special_tokens")
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise APIError(400, "messages: give a list of {role, content} objects", "messages")
        add_gen = body.get("add_generation_prompt", True)
        try:
            enc = await engine.run_in_tokenizer(
                lambda: tok.apply_chat_template(
                    messages, add_generation_prompt=add_gen, tokenize=True
                )
            )
        except Exception as e:
            raise APIError(
                400, f"messages: the chat template rejects them ({e})", "messages"
            ) from e
        tokens = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
    else:
        prompt = body.get("prompt", body.get("text"))
        texts = prompt if isinstance(prompt, list) else [prompt]
        if not texts or not all(isinstance(t, str) for t in texts):
            raise APIError(400, "prompt: give a string or a list of strings", "prompt")
        ids = await engine.run_in_tokenizer(
            lambda: [tok.encode(t, add_special_tokens=add_special) for t in texts]
        )
        tokens = ids if isinstance(prompt, list) else ids[0]
    count = sum(map(len, tokens)) if tokens and isinstance(tokens[0], list) else len(tokens)
    return {"tokens": tokens, "count": count, "max_model_len": engine.context_len}


@utility_router.post("/detokenize")
async def detokenize(request: Request):
    body = await read_json(request)
    engine = request.app.state.engine
    tokens = body.get("tokens")
    vocab = engine.vocab_size
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in tokens
    ):
        raise APIError(400, f"tokens: give a list of token ids in [0, {vocab})", "tokens")
    skip = body.get("skip_special_tokens", False)
    text = await engine.run_in_tokenizer(
        lambda: engine.tokenizer.decode(tokens, skip_special_tokens=bool(skip))
    )
    return {"text": text}
