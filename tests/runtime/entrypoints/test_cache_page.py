"""Pinned prefixes over HTTP, the cache tree as JSON, and the /cache page in a real headless
Chromium (skipped, saying why, where no browser can be had)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.runtime.entrypoints.conftest import API_KEY
from tests.runtime.entrypoints.test_native_api import wait_idle

pytestmark = pytest.mark.slow
SYSTEM = "You are the booking agent of a small railway. Answer with the train number only. " * 3
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def find(node: dict, pred) -> dict | None:
    if pred(node):
        return node
    for c in node["children"]:
        if (hit := find(c, pred)) is not None:
            return hit
    return None


@pytest.fixture(scope="module")
def pinned(client):
    r = client.post("/pin_prefix", json={"messages": [{"role": "system", "content": SYSTEM}]})
    assert r.status_code == 200, r.text
    pin = r.json()
    for q in ("To Lyon?", "To Nice?", "To Metz?"):
        chat = {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            "max_tokens": 1,
        }
        r = client.post("/v1/chat/completions", json=chat)
        assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= pin["tokens"]
    yield pin
    client.post("/unpin_prefix", json={"pin_id": pin["pin_id"]})


def test_pin_shows_in_tree_info_and_metrics(client, pinned):
    tree = client.get("/cache/tree").json()
    node = find(tree["root"], lambda n: n["pinned"] and "booking" in n["text"])
    assert node is not None and node["hits"] >= 3 and node["locked"]
    assert tree["pinned_tokens"] == pinned["tokens"]
    assert client.get("/cache/tree", params={"depth": 0}).json()["root"]["children"] == []
    assert client.get("/get_server_info").json()["pinned_tokens"] == pinned["tokens"]
    metric = 'sglang:pinned_tokens{model_name="SmolLM2-135M-Instruct.Q4_1"}'
    assert f"{metric} {float(pinned['tokens'])}" in client.get("/metrics").text
    wait_idle(client)


def test_pin_errors_are_named(client):
    assert (
        client.post("/pin_prefix", json={"ttl_s": 5}).json()["error"]["message"].startswith("text:")
    )
    r = client.post("/pin_prefix", json={"text": "x", "ttl_s": -1})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("ttl_s:")
    r = client.post("/unpin_prefix", json={"pin_id": "nope"})
    assert r.status_code == 404 and r.json()["error"]["message"].startswith("pin_id:")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_page_draws_the_pinned_node_with_its_hits(server, pinned, tmp_path):
    url = f"{server.url}/cache?key={API_KEY}"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-loaded="1"' in dom, dom[-2000:]
    assert "pinned" in dom and "booking" in dom
    node = dom[dom.index('class="badge pin"') - 400 : dom.index('class="badge pin"')]
    hits = int(node.rsplit('class="badge hits">', 1)[1].split(" hits")[0])
    assert hits >= 3
    shot = tmp_path / "cache.png"
    subprocess.run(
        [*flags, "--window-size=1100,700", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000
