"""Launch commands as SGLang's and vLLM's docs write them start a healthy server here."""

from __future__ import annotations

import shlex

import httpx
import pytest

from runtime.model_loader.loader import default_model_path
from runtime.server_process import ServerProcess, free_port

pytestmark = pytest.mark.slow

SGLANG = (
    "python3 -m sglang.launch_server --model-path {model} --host 127.0.0.1 --port {port} "
    "--tp-size 1 --dp-size 1 --enable-metrics --enable-cache-report --trust-remote-code "
    "--log-requests --chat-template {template} --mem-fraction-static 0.8 "
    "--max-total-tokens 4096 --max-running-requests 16 --context-length 2048 "
    "--chunked-prefill-size 512 --schedule-policy lpm --random-seed 42 "
    "--served-model-name smol --log-level warning"
)
VLLM = (
    "vllm serve {model} --host 127.0.0.1 --port {port} --tensor-parallel-size 1 "
    "--max-model-len 2048 --gpu-memory-utilization 0.9 --max-num-seqs 16 --enforce-eager "
    "--seed 0 --trust-remote-code --served-model-name smol --enable-prefix-caching "
    "--disable-log-requests --block-size 16 --max-num-batched-tokens 2048 "
    "--enable-chunked-prefill --uvicorn-log-level warning"
)


def flags(command: str, **values) -> list[str]:
    """The flags of a pasted command, without the program that would have run it."""
    argv = shlex.split(command.format(**values))
    start = 3 if argv[0].startswith("python") else 2  # `python3 -m x` / `vllm serve`
    return argv[start:]


def chat(url: str) -> dict:
    body = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_sglang_docs_command(tmp_path):
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    log = tmp_path / "server.log"
    port = free_port()
    argv = flags(SGLANG, model=default_model_path(), port=port, template=template)
    with ServerProcess(*argv, port=port, log_path=str(log)) as srv:
        assert httpx.get(f"{srv.url}/v1/models", timeout=60).json()["data"][0]["id"] == "smol"
        out = chat(srv.url)
        # the template file is the one used: "[user] Hi\n" is 5 tokens, the model's own far more
        assert out["usage"]["prompt_tokens"] < 10
    lines = [x for x in log.read_text().splitlines() if "prompt_tokens=" in x]
    assert len(lines) == 1 and "finish=length" in lines[0] and "ttft=" in lines[0]


def test_vllm_docs_command(tmp_path):
    port = free_port()
    argv = flags(VLLM, model=default_model_path(), port=port)
    with ServerProcess(*argv, port=port) as srv:
        info = httpx.get(f"{srv.url}/get_server_info", timeout=60).json()
        assert info["page_size"] == 16 and info["max_running_requests"] == 16
        assert chat(srv.url)["choices"][0]["message"]["content"]
