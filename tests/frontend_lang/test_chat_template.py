"""Role prefixes and suffixes read off Jinja chat templates rebuild what the template renders."""

from __future__ import annotations

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from frontend_lang.chat_template import ChatTemplate

LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
]


def reference(template: str, bos: str):
    compiled = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        template
    )
    return lambda messages, gen: compiled.render(
        messages=messages, add_generation_prompt=gen, bos_token=bos, eos_token=""
    )


@pytest.fixture(scope="module")
def smollm_template() -> str:
    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    return load_tokenizer(prepare_model_folder(None)).chat_template


@pytest.mark.parametrize("which", ["smollm2", "llama3-style"])
@pytest.mark.parametrize("gen", [False, True])
def test_piecewise_rendering_equals_the_template(which, gen, smollm_template):
    template, bos = (smollm_template, "") if which == "smollm2" else (LLAMA3_STYLE, "<bos>")
    chat = ChatTemplate.from_jinja(template, bos)
    full = reference(template, bos)
    for messages in CONVERSATIONS:
        assert chat.render(messages, gen) == full(messages, gen)


def test_smollm2_default_system_prompt_opens_a_conversation_without_one(smollm_template):
    chat = ChatTemplate.from_jinja(smollm_template)
    assert "You are a helpful AI assistant named SmolLM" in chat.role_begin("user", first=True)
    assert chat.role_begin("user", first=False) == "<|im_start|>user\n"
    assert chat.role_begin("system", first=True) == "<|im_start|>system\n"
    assert chat.generation_prefix == "<|im_start|>assistant\n"
