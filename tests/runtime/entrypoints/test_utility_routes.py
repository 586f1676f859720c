"""/tokenize, /detokenize, /version, /v1/models/{id}, and what SGLang's router reads."""

from __future__ import annotations

import pytest

from runtime.version import __version__

pytestmark = pytest.mark.slow
MODEL = "SmolLM2-135M-Instruct.Q4_1"


def test_tokenize_round_trip_and_chat(client):
    r = client.post("/tokenize", json={"prompt": "The capital of France is"}).json()
    assert r["count"] == len(r["tokens"]) == 5 and r["max_model_len"] > 0
    text = client.post("/detokenize", json={"tokens": r["tokens"]}).json()["text"]
    assert text == "The capital of France is"
    chat = client.post("/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    out = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
    ).json()
    assert chat["count"] == out["usage"]["prompt_tokens"]
    batch = client.post("/tokenize", json={"prompt": ["a b", "c"]}).json()
    assert len(batch["tokens"]) == 2 and batch["count"] == sum(map(len, batch["tokens"]))


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/tokenize", {"prompt": 5}, "prompt"),
        ("/tokenize", {"messages": "hi"}, "messages"),
        ("/detokenize", {"tokens": [10**9]}, "tokens"),
        ("/detokenize", {}, "tokens"),
    ],
)
def test_bad_bodies_name_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(f"{field}:")


def test_version_model_card_and_router_endpoints(client):
    assert client.get("/version").json() == {"version": __version__}
    card = client.get(f"/v1/models/{MODEL}").json()
    assert card["id"] == MODEL and card["object"] == "model"
    assert client.get("/v1/models/other").status_code == 404
    assert client.get("/model_info").json()["model_path"].endswith(".gguf")
    [load] = client.get("/get_load").json()
    assert {"dp_rank", "num_reqs", "num_waiting_reqs", "num_tokens"} <= set(load)
    assert client.get("/server_info").json()["version"] == __version__
