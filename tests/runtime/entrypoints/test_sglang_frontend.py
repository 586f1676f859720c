"""SGLang's own frontend (`sglang.lang`, installed in a venv of its own) against our server."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.runtime.entrypoints.conftest import API_KEY, ROOT
from tests.runtime.entrypoints.test_native_api import wait_idle

pytestmark = pytest.mark.slow
VENV = os.path.join(ROOT, ".venv-sglang")


@pytest.fixture(scope="module")
def sglang_python() -> str:
    subprocess.run([os.path.join(ROOT, "scripts", "sglang_frontend_venv.sh"), VENV], check=True)
    return os.path.join(VENV, "bin", "python")


def test_sglang_frontend_program(server, client, sglang_python):
    program = os.path.join(os.path.dirname(__file__), "sglang_frontend_program.py")
    done = subprocess.run(
        [sglang_python, program, server.url, "--api-key", API_KEY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(out)
    assert out["gen"].strip() == "Paris"
    assert out["select"] == " Paris"
    assert len(out["fork"]) == 2 and all(isinstance(x, str) and x for x in out["fork"])
    assert "Paris" in out["chat"]
    assert out["stream_chunks"] >= 2 and out["stream_text"]
    assert len(out["batch"]) == 3
    wait_idle(client)
