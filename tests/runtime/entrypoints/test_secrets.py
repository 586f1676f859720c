"""The API key stays in the HTTP process: on its own command line, nowhere else."""

from __future__ import annotations

import psutil
import pytest

from tests.runtime.entrypoints.conftest import API_KEY

pytestmark = pytest.mark.slow


def test_api_key_is_on_the_launcher_command_line_only(server, client):
    launcher = psutil.Process(server.proc.pid)
    assert API_KEY in launcher.cmdline()
    children = launcher.children(recursive=True)
    assert len(children) == 3  # scheduler, detokenizer, the scheduler's grammar compile process
    for child in children:
        assert not any(API_KEY in arg for arg in child.cmdline()), child.cmdline()
    info = client.get("/get_server_info").json()
    assert API_KEY not in str(info) and "api_key" not in info
