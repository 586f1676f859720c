"""Runs SGLang's own frontend language (sglang.lang, client side) against a server.

Standalone: run it with the python of the venv made by scripts/sglang_frontend_venv.sh,

    .venv-sglang/bin/python tests/runtime/entrypoints/sglang_frontend_program.py http://127.0.0.1:PORT

It uses only sglang's public frontend API (sgl.function, gen, select, fork, roles, run,
run_batch, streaming text_iter, RuntimeEndpoint, set_default_backend, flush_cache,
get_server_info). It prints ONE JSON object on its last stdout line; any failure (an HTTP error,
which the interpreter stores in state.error(), or a broken protocol invariant) prints a traceback
to stderr and exits 1. Every generation is greedy and at most 16 tokens (the server may run on a
2-core CPU). Model-quality checks (e.g. select == " Paris") are left to the caller.

Options: --api-key KEY (sent as "Authorization: Bearer KEY"), --chat-template NAME|auto
(default chatml, SmolLM2's format; auto = what sglang picks from /get_model_info's model_path),
--timeout SECONDS (socket timeout for each HTTP call; default 300).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback

import sglang as sgl
from sglang.lang.chat_template import get_chat_template_by_model_path

FEWSHOT = (
    "Q: What is the capital of Japan?\nA: Tokyo\n"
    "Q: What is the capital of Italy?\nA: Rome\n"
    "Q: What is the capital of Spain?\nA: Madrid\n"
)


@sgl.function
def qa(s, question):
    s += FEWSHOT + "Q: " + question + "\nA:"
    s += sgl.gen("answer", max_tokens=8, temperature=0, stop="\n")


@sgl.function
def capital(s):
    s += (
        "The capital of Japan is Tokyo.\n"
        "The capital of Italy is Rome.\n"
        "The capital of Spain is Madrid.\n"
        "The capital of France is"
    )
    s += sgl.select("city", choices=[" Paris", " London", " Berlin"])


@sgl.function
def two_capitals(s):
    s += FEWSHOT
    # fork() sends the shared prefix first (SglCommitLazy -> POST /generate, max_new_tokens 0)
    # only if the worker thread has already appended it: text() waits for that, so it always does.
    s.text()
    forks = s.fork(2)
    for f, country in zip(forks, ("Germany", "Egypt")):
        f += "Q: What is the capital of " + country + "?\nA:"
        f += sgl.gen("capital", max_tokens=6, temperature=0, stop="\n")
    forks.join()
    s += "Answers:" + forks[0]["capital"] + "," + forks[1]["capital"] + "\n"


@sgl.function
def chat(s, question):
    s += sgl.system("You are a helpful assistant. Answer in one short sentence.")
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("reply", max_tokens=16, temperature=0))


@sgl.function
def count(s):
    s += "Count from one to ten: one, two, three,"
    s += sgl.gen("rest", max_tokens=8, temperature=0)


@sgl.function
def batch_capital(s, country):
    # A constant prefix longer than 64 characters: run_batch pre-caches it first
    # (interpreter.cache_program -> RuntimeEndpoint.cache_prefix).
    s += FEWSHOT
    s += "Q: What is the capital of " + country + "?\nA:"
    s += sgl.gen("answer", max_tokens=6, temperature=0, stop="\n")


class ProtocolError(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise ProtocolError(msg)


def ok(state):
    """The interpreter runs each program in a worker thread and keeps its exception there."""
    err = state.error()
    if err is not None:
        raise err
    return state


def short_meta(meta):
    meta = meta or {}
    keys = ("finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens")
    return {k: meta.get(k) for k in keys}


def run(url, api_key, chat_template):
    backend = sgl.RuntimeEndpoint(
        url,
        api_key=api_key,
        chat_template_name=None if chat_template == "auto" else chat_template,
    )
    sgl.set_default_backend(backend)
    out = {
        "model_path": backend.get_model_name(),
        "chat_template": backend.get_chat_template().name,
        "auto_chat_template": get_chat_template_by_model_path(backend.get_model_name()).name,
    }

    server_info = sgl.get_server_info()
    check(isinstance(server_info, dict), f"/server_info: not a JSON object: {server_info!r}")
    out["server_info_keys"] = sorted(server_info)
    sgl.flush_cache()
    out["flush_cache"] = True

    # (a) gen with a stop string
    st = ok(qa.run(question="What is the capital of France?"))
    out["gen"] = st["answer"]
    out["gen_meta"] = short_meta(st.get_meta_info("answer"))
    check(isinstance(out["gen"], str), "gen: text must be a string")
    check("\n" not in out["gen"], f"gen: the stop string leaked into the text: {out['gen']!r}")
    check(out["gen_meta"]["completion_tokens"] is not None, "gen: meta_info.completion_tokens")
    check(out["gen_meta"]["completion_tokens"] <= 8, "gen: more than max_new_tokens")

    # (b) select (token_length_normalized, the default choices_method)
    st = ok(capital.run())
    out["select"] = st["city"]
    meta = st.get_meta_info("city")
    out["select_meta"] = {
        "normalized_prompt_logprobs": meta["normalized_prompt_logprobs"],
        "input_token_logprobs": meta["input_token_logprobs"],
        "output_token_logprobs": meta["output_token_logprobs"],
    }
    check(out["select"] in (" Paris", " London", " Berlin"), f"select: {out['select']!r}")
    check(len(meta["normalized_prompt_logprobs"]) == 3, "select: one score per choice")
    check(st.text().endswith(out["select"]), "select: the decision is appended to the text")

    # (c) fork(2) + gen in each fork + join (gather_variable)
    st = ok(two_capitals.run())
    out["fork"] = st["capital"]
    check(
        isinstance(out["fork"], list) and len(out["fork"]) == 2,
        f"fork: join must gather one value per fork, got {out['fork']!r}",
    )
    check(all(isinstance(x, str) for x in out["fork"]), "fork: values must be strings")

    # (d) roles: system / user / assistant(gen)
    st = ok(chat.run(question="What is the capital of France?"))
    out["chat"] = st["reply"]
    out["chat_meta"] = short_meta(st.get_meta_info("reply"))
    out["chat_messages"] = st.messages()
    roles = [m["role"] for m in out["chat_messages"]]
    check(roles == ["system", "user", "assistant"], f"chat: roles {roles}")
    check(out["chat_messages"][-1]["content"] == out["chat"].lstrip(), "chat: assistant message")

    # (e) streaming: run(stream=True) + text_iter()
    st = count.run(stream=True)
    chunks = list(st.text_iter())
    ok(st)
    out["stream_chunks"] = len(chunks)
    out["stream_text"] = st["rest"]
    out["stream_meta"] = short_meta(st.get_meta_info("rest"))
    check("".join(chunks) == st.text(), "stream: the chunks must add up to the final text")
    check(st.text().endswith(out["stream_text"]), "stream: variable is the tail of the text")

    # (f) run_batch of 3 programs
    states = batch_capital.run_batch(
        [{"country": "France"}, {"country": "Germany"}, {"country": "Egypt"}],
        progress_bar=False,
    )
    for s in states:
        ok(s)
    out["batch"] = [s["answer"] for s in states]
    out["batch_meta"] = [short_meta(s.get_meta_info("answer")) for s in states]
    check(len(out["batch"]) == 3, "batch: one state per program")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="server base URL, e.g. http://127.0.0.1:30000")
    p.add_argument("--api-key", default=None)
    p.add_argument("--chat-template", default="chatml")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    socket.setdefaulttimeout(args.timeout)
    try:
        result = run(args.url.rstrip("/"), args.api_key, args.chat_template)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        # Worker threads of a failed program may still wait on their queue: don't join them.
        os._exit(1)
    print(json.dumps(result, ensure_ascii=False))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
