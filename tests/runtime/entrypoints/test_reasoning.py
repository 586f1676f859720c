"""`--reasoning-parser` through the openai client. The default model never closes a think block,
so with deepseek-r1 (whose output starts inside one) all it writes is reasoning: what the split
does is seen whole, streamed, and turned off by `separate_reasoning: false`."""

from __future__ import annotations

import openai
import pytest

from runtime.server_process import ServerProcess

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def oai():
    srv = ServerProcess(
        "--max-total-tokens", "4096", "--reasoning-parser", "deepseek-r1", "--log-level", "warning"
    )
    yield openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none")
    srv.stop()


def test_reasoning_is_split_whole_streamed_and_on_request(oai):
    kw = dict(model="m", messages=ASK, temperature=0, max_tokens=12)
    plain = oai.chat.completions.create(**kw, extra_body={"separate_reasoning": False})
    text = plain.choices[0].message.content
    assert text and getattr(plain.choices[0].message, "reasoning_content", None) is None
    split = oai.chat.completions.create(**kw).choices[0].message
    assert split.reasoning_content == text.strip() and split.content == ""
    reasoning = content = ""
    for chunk in oai.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            reasoning += getattr(c.delta, "reasoning_content", None) or ""
            content += c.delta.content or ""
    assert reasoning == text and content == ""
