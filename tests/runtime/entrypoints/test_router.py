"""SGLang's own router (`sglang-router`) in front of our servers, and `--dp-size 2`."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from runtime.data_parallel import router_argv
from runtime.server_args import ServerArgs
from runtime.server_process import ServerProcess, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None,
        reason="sglang-router is not installed (pip install 'radixserve[dp]')",
    ),
]
REPLICA = ("--max-total-tokens", "4096", "--log-level", "warning")
GREEDY = {"max_new_tokens": 2, "temperature": 0}


def group_prompts(topic: str, n: int) -> list[str]:
    """n prompts sharing a prefix of some 140 tokens, then a short question."""
    prefix = f"Notes on {topic}. " + " ".join(
        f"Fact {i} about {topic} is recorded." for i in range(15)
    )
    return [f"{prefix} Question {j}: what is fact {j}?" for j in range(n)]


def wait_serving(url: str, timeout: float = 120) -> None:
    """Healthy, and a request goes through (the router has registered its workers)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            body = {"text": "Hi", "sampling_params": GREEDY}
            r = httpx.post(f"{url}/generate", json=body, timeout=60)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not serve within {timeout} s")


def send_group(url: str, prompts: list[str], name: str = "g") -> float:
    """Sends prompts one by one (rids `name-j`); the cached share of the prompt tokens after
    the first."""
    cached = total = 0
    for j, p in enumerate(prompts):
        body = {"text": p, "sampling_params": GREEDY, "rid": f"{name}-{j}"}
        r = httpx.post(f"{url}/generate", json=body, timeout=300)
        assert r.status_code == 200, r.text
        if j:
            cached += r.json()["meta_info"]["cached_tokens"]
            total += r.json()["meta_info"]["prompt_tokens"]
    return cached / total


def served_rids(log_path: str) -> set[str]:
    """The request ids a replica logged (--log-requests)."""
    with open(log_path) as f:
        return set(re.findall(r"request (\S+): prompt_tokens=", f.read()))


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    logs = [str(tmp_path_factory.mktemp("replica") / "server.log") for _ in range(2)]
    replicas = [ServerProcess(*REPLICA, "--log-requests", log_path=log) for log in logs]
    port = free_port()
    args = ServerArgs(port=port, log_level="warning")
    router = subprocess.Popen(
        router_argv(args, [r.url for r in replicas], free_port()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url)
        yield url, logs
    finally:
        router.terminate()
        router.wait(timeout=30)
        for r in replicas:
            r.stop()


def test_native_and_openai_requests_through_the_router(routed):
    url, _ = routed
    r = httpx.post(
        f"{url}/generate",
        json={"text": "The capital of France is", "sampling_params": GREEDY},
        timeout=120,
    )
    assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 2
    chat = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completion_tokens"] == 3
    comp = httpx.post(
        f"{url}/v1/completions",
        json={"model": "default", "prompt": "One, two,", "max_tokens": 2, "temperature": 0},
        timeout=120,
    )
    assert comp.status_code == 200, comp.text


def test_prefix_groups_stay_on_one_replica_and_both_replicas_serve(routed):
    url, logs = routed
    topics = ("volcanoes", "glaciers", "deserts")
    with ThreadPoolExecutor(len(topics)) as pool:  # groups at once, each group in order
        shares = list(pool.map(lambda t: send_group(url, group_prompts(t, 4), t), topics))
    assert min(shares) > 0.6, shares
    served = [served_rids(log) for log in logs]
    for t in topics:
        rids = {f"{t}-{j}" for j in range(4)}
        assert [rids <= s for s in served].count(True) == 1, (t, served)  # one replica each
    assert all(any(r.split("-")[0] in topics for r in s) for s in served), served  # both serve


def test_dp_size_two_from_one_command():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.launch", "--dp-size", "2", "--port", str(port), *REPLICA],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, timeout=600)  # two replicas load at once on 2 cores
        import psutil

        launches = [
            c for c in psutil.Process(proc.pid).children()
            if "runtime.launch" in c.cmdline()
        ]  # fmt: skip
        assert len(launches) == 2
        assert send_group(url, group_prompts("forests", 3), "forests") > 0.6
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            timeout=120,
        )
        assert chat.status_code == 200, chat.text
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
