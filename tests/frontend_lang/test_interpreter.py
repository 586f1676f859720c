"""Programs end to end against a server on the default model, started by `Runtime`."""

from __future__ import annotations

import json

import pytest

import frontend_lang as sgl
from tests.frontend_lang.conftest import FEWSHOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(runtime):
    sgl.set_default_backend(runtime)
    yield runtime
    sgl.set_default_backend(None)


@sgl.function
def capital(s, country):
    s += FEWSHOT + f"The capital of {country} is"
    s += sgl.gen("city", max_tokens=8, stop="\n", temperature=0)


def test_variables_text_and_meta(backend):
    s = capital.run(country="France")
    assert s["city"].strip().rstrip(".") == "Paris"
    assert s.text() == FEWSHOT + "The capital of France is" + s["city"]
    meta = s.get_meta_info("city")
    assert meta["finish_reason"]["type"] == "stop" and meta["prompt_tokens"] > 20


def test_select_picks_the_right_answer(backend):
    @sgl.function
    def pick(s):
        s += FEWSHOT + "The capital of France is"
        s += sgl.select("city", choices=[" London", " Paris", " Berlin"])

    s = pick.run()
    assert s["city"] == " Paris"
    assert len(s.get_meta_info("city")["normalized_prompt_logprobs"]) == 3
    assert s.text().endswith("The capital of France is Paris")
    g = sgl.gen("x", choices=["a", "b"])  # gen with choices is a select
    assert g.choices == ["a", "b"]


def test_roles_follow_the_servers_chat_template(backend):
    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    @sgl.function
    def chat(s):
        s += sgl.system("You answer in one short sentence.")
        s += sgl.user("What is the capital of France?")
        s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0))
        with s.user():
            s += "And of Italy?"
        s += sgl.assistant_begin()
        s += sgl.gen("second", max_tokens=16, temperature=0)
        s += sgl.assistant_end()

    s = chat.run()
    assert "Paris" in s["answer"]
    roles = [m["role"] for m in s.messages()]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    tok = load_tokenizer(prepare_model_folder(None))
    assert s.text() == tok.apply_chat_template(s.messages(), tokenize=False)


def test_fork_and_join(backend):
    @sgl.function
    def two(s):
        s += FEWSHOT
        forks = s.fork(2)
        for f, country in zip(forks, ["Germany", "Egypt"]):
            f += f"The capital of {country} is"
            f += sgl.gen("city", max_tokens=6, stop="\n", temperature=0)
        forks.join()
        s += "Done."

    s = two.run()
    assert [c.strip().rstrip(".") for c in s["city"]] == ["Berlin", "Cairo"]
    assert s.text() == FEWSHOT + "Done."


def test_streaming_text_iter(backend):
    s = capital.run(country="France", stream=True)
    pieces = list(s.text_iter())
    assert len(pieces) >= 3 and "".join(pieces) == s.text()
    s2 = capital.run(country="Italy", stream=True)
    assert "".join(s2.text_iter("city")) == s2["city"]


def test_gen_n_samples(backend):
    @sgl.function
    def ideas(s):
        s += "A name for a cat:"
        s += sgl.gen("name", max_tokens=6, n=3, temperature=1.0, top_p=0.95)

    s = ideas.run()
    assert isinstance(s["name"], list) and len(s["name"]) == 3
    assert s.text() == "A name for a cat:" + s["name"][0]
    assert len(s.get_meta_info("name")) == 3
    with pytest.raises(ValueError, match="^n: "):
        sgl.gen("x", n=0)


def test_async_text_iter(backend):
    import asyncio

    s = capital.run(country="Spain", stream=True)

    async def collect() -> list[str]:
        return [piece async for piece in s.text_async_iter()]

    assert "".join(asyncio.run(collect())) == s.text()


def test_constraints_by_dtype_regex_and_schema(backend):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    }

    @sgl.function
    def typed(s):
        s += "Two plus two equals "
        s += sgl.gen("n", dtype=int, max_tokens=8, temperature=0)
        s += "\nA date: "
        s += sgl.gen("date", regex=r"20\d\d-\d\d-\d\d", temperature=0)
        s += "\nThe capital of France as JSON: "
        s += sgl.gen("j", json_schema=json.dumps(schema), max_tokens=32, temperature=0)

    s = typed.run()
    assert int(s["n"]) >= 0
    assert len(s["date"]) == 10 and s["date"].startswith("20")
    assert isinstance(json.loads(s["j"])["city"], str)


def test_errors_name_the_call_and_a_failed_batch_program_does_not_sink_the_others(backend, capsys):
    @sgl.function
    def bad(s, p):
        s += "Hello"
        s += sgl.gen("x", max_tokens=2, top_p=p)

    with pytest.raises(sgl.ProgramError, match=r"gen\('x'\) failed.*sampling_params\.top_p"):
        bad.run(p=0.0)
    states = bad.run_batch([{"p": 1.0}, {"p": 0.0}, {"p": 0.5}], progress_bar=True)
    assert states[0].error() is None and states[2].error() is None
    assert isinstance(states[1].error(), sgl.ProgramError)
    assert len(states[0]["x"]) > 0
    assert "bad" in capsys.readouterr().err  # the tqdm bar
    sgl.set_default_backend(None)
    try:
        with pytest.raises(ValueError, match="backend"):
            capital.run(country="France")
    finally:
        sgl.set_default_backend(backend)


def test_run_batch_shares_the_common_preamble(backend):
    preamble = "You are a geography tutor. " + " ".join(
        f"Fact {i}: rivers flow downhill toward the sea." for i in range(30)
    )

    @sgl.function
    def tutor(s, country):
        s += preamble + f"\nQuestion: what is the capital of {country}?\nAnswer:"
        s += sgl.gen("a", max_tokens=4, temperature=0)

    backend.flush_cache()
    countries = ["France", "Italy", "Spain", "Japan", "Egypt", "Peru", "Chile", "Kenya"] * 2
    states = tutor.run_batch([{"country": c} for c in countries])
    metas = [s.get_meta_info("a") for s in states]
    preamble_tokens = backend.cache_prefix(preamble)
    hits = [m["cached_tokens"] >= preamble_tokens - 2 for m in metas]
    assert all(hits), [m["cached_tokens"] for m in metas]  # the hint cached it before the batch


def test_openai_backend_runs_programs_and_selects_through_prompt_logprobs(backend):
    oai = sgl.OpenAI("default", base_url=f"{backend.base_url}/v1")

    @sgl.function
    def pick(s):
        s += FEWSHOT + "The capital of France is"
        s += sgl.select("city", choices=[" London", " Paris", " Berlin"])
        s += "."
        s += sgl.gen("more", max_tokens=4, temperature=0)

    s = pick.run(backend=oai)
    assert s["city"] == " Paris" and s["more"]
    streamed = capital.run(country="France", backend=oai, stream=True)
    assert "".join(streamed.text_iter()) == streamed.text()
    with pytest.raises(ValueError, match="unconditional"):
        oai.select("x", ["a"], "unconditional_likelihood_normalized")


@pytest.mark.parametrize(
    "example",
    ["few_shot_qa", "multi_turn_chat", "tree_of_thought", "agent_loop", "json_extraction"],
)
def test_examples_run(backend, example):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(root, "examples", f"{example}.py"),
            "--url",
            backend.base_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = {
        "few_shot_qa": "-> Paris",
        "multi_turn_chat": "Paris",
        "tree_of_thought": "The best idea is number",
        "agent_loop": "from the cache",
        "json_extraction": "phone: (",
    }[example]
    assert expected in done.stdout, done.stdout
