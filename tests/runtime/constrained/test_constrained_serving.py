"""Constrained decoding end to end: every output of the suite validates, with both grammar
backends, through SGLang's native API and the OpenAI API of the real server."""

from __future__ import annotations

import json
import re
import threading

import httpx
import jsonschema
import openai
import pytest

from runtime.server_process import ServerProcess
from tests.runtime.constrained.suite import REGEXES, SCHEMAS

pytestmark = pytest.mark.slow
SCHEMA_TOKENS, REGEX_TOKENS = 160, 48


@pytest.fixture(scope="module", params=["xgrammar", "outlines"])
def server(request):
    srv = ServerProcess(
        "--max-total-tokens",
        "16384",
        "--grammar-backend",
        request.param,
        "--debug-check-memory",
        "--log-level",
        "warning",
    )
    srv.backend = request.param
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=600) as c:
        yield c


def check_schema(text: str, schema: dict) -> None:
    jsonschema.validate(json.loads(text), schema)


def check_regex(text: str, regex: str) -> None:
    assert re.fullmatch(regex, text), (regex, text)


def test_native_api_suite_validates(client):
    texts = [f"{p}\nAnswer in JSON:\n" for p, _ in SCHEMAS] + [f"{p} " for p, _ in REGEXES]
    params = [
        {"json_schema": json.dumps(s), "temperature": 0, "max_new_tokens": SCHEMA_TOKENS}
        for _, s in SCHEMAS
    ] + [{"regex": r, "temperature": 0, "max_new_tokens": REGEX_TOKENS} for _, r in REGEXES]
    r = client.post("/generate", json={"text": texts, "sampling_params": params})
    assert r.status_code == 200, r.text
    outs = r.json()
    for out, (_, schema) in zip(outs, SCHEMAS):
        check_schema(out["text"], schema)
        assert out["meta_info"]["finish_reason"]["type"] == "stop"
    for out, (_, regex) in zip(outs[len(SCHEMAS) :], REGEXES):
        check_regex(out["text"], regex)
    info = client.get("/get_server_info").json()
    assert info["jump_forward_tokens"] > 0  # fixed keys and punctuation were jumped over


def test_openai_api_suite_validates(server):
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=600)
    results: dict = {}

    def chat(i: int, prompt: str, schema: dict) -> None:
        r = oai.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"{prompt} Reply in JSON."}],
            temperature=0,
            max_tokens=SCHEMA_TOKENS,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": f"s{i}", "schema": schema},
            },
        )
        results[("schema", i)] = r.choices[0].message.content

    def complete(i: int, prompt: str, regex: str) -> None:
        r = oai.completions.create(
            model="m",
            prompt=f"{prompt} ",
            temperature=0,
            max_tokens=REGEX_TOKENS,
            extra_body={"regex": regex},
        )
        results[("regex", i)] = r.choices[0].text

    threads = [threading.Thread(target=chat, args=(i, p, s)) for i, (p, s) in enumerate(SCHEMAS)]
    threads += [
        threading.Thread(target=complete, args=(i, p, r)) for i, (p, r) in enumerate(REGEXES)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == len(SCHEMAS) + len(REGEXES)
    for i, (_, schema) in enumerate(SCHEMAS):
        check_schema(results[("schema", i)], schema)
    for i, (_, regex) in enumerate(REGEXES):
        check_regex(results[("regex", i)], regex)
    obj = oai.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": 'Give {"name": ...} for a cat called Tom.'}],
        temperature=0,
        max_tokens=64,
        response_format={"type": "json_object"},
    )
    content = obj.choices[0].message.content
    assert content.startswith("{")
    if obj.choices[0].finish_reason == "stop":  # an open object may also run out of tokens
        assert isinstance(json.loads(content), dict)


def test_constraints_with_n_streaming_and_stop(client):
    schema = SCHEMAS[2][1]
    body = {
        "text": "A famous novel as JSON:\n",
        "sampling_params": {
            "json_schema": json.dumps(schema),
            "temperature": 0.9,
            "seed": 1,
            "n": 3,
            "max_new_tokens": SCHEMA_TOKENS,
        },
    }
    outs = client.post("/generate", json=body).json()
    assert len(outs) == 3
    for out in outs:
        check_schema(out["text"], schema)
    stream = {**body, "stream": True, "sampling_params": {**body["sampling_params"], "n": 1}}
    with client.stream("POST", "/generate", json=stream) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    assert len(chunks) >= 2
    check_schema(chunks[-1]["text"], schema)
    regex = r"\d, \d, \d, \d"
    stopped = client.post(
        "/generate",
        json={
            "text": "Digits: ",
            "sampling_params": {"regex": regex, "stop": ",", "temperature": 0},
        },
    ).json()
    assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": ","}
    assert re.fullmatch(r"\d", stopped["text"])


def test_bad_constraints_answer_400_and_others_finish(server, client):
    bad = [
        ({"regex": "(unclosed"}, "sampling_params.regex"),
        ({"json_schema": "{not json"}, "sampling_params.json_schema"),
        ({"json_schema": json.dumps({"type": "objec"})}, "sampling_params.json_schema"),
        ({"regex": "a", "json_schema": "{}"}, "sampling_params.json_schema"),
    ]
    if server.backend == "outlines":
        bad.append(({"ebnf": 'root ::= "a"'}, "sampling_params.ebnf"))
    else:
        bad.append(({"ebnf": "root ::= "}, "sampling_params.ebnf"))
    good: list = []
    good_body = {
        "text": "Answer yes or no: is fire hot? ",
        "sampling_params": {"regex": "(yes|no)", "temperature": 0},
    }
    t = threading.Thread(
        target=lambda: good.extend(
            client.post("/generate", json=good_body).json()["text"] for _ in [0]
        )
    )
    t.start()
    for params, field in bad:
        for stream in (False, True):
            r = client.post(
                "/generate",
                json={
                    "text": "x",
                    "sampling_params": {**params, "max_new_tokens": 8},
                    "stream": stream,
                },
            )
            assert r.status_code == 400, (params, r.text)
            assert r.json()["error"]["message"].startswith(field), r.json()
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none")
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        oai.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "objec"}},
            },
        )
    t.join(120)
    assert good and good[0] in ("yes", "no")
    info = client.get("/get_server_info").json()
    assert info["kv_free_tokens"] + info["cache_tokens"] == info["max_total_tokens"]


def test_frontend_lang_suite_validates(server):
    import frontend_lang as sgl

    @sgl.function
    def fill(s, prompt, schema=None, regex=None):
        if schema is not None:
            s += f"{prompt}\nAnswer in JSON:\n"
            s += sgl.gen("out", json_schema=json.dumps(schema), max_tokens=SCHEMA_TOKENS)
        else:
            s += f"{prompt} "
            s += sgl.gen("out", regex=regex, max_tokens=REGEX_TOKENS)

    backend = sgl.RuntimeEndpoint(server.url)
    batch = [{"prompt": p, "schema": s} for p, s in SCHEMAS]
    batch += [{"prompt": p, "regex": r} for p, r in REGEXES]
    states = fill.run_batch(batch, backend=backend, temperature=0)
    for state, (_, schema) in zip(states, SCHEMAS):
        check_schema(state["out"], schema)
    for state, (_, regex) in zip(states[len(SCHEMAS) :], REGEXES):
        check_regex(state["out"], regex)
