"""The Engine's generate surface: parameters, stops, logprobs, n, seeds, streaming, abort, errors."""

from __future__ import annotations

import threading
import time

import pytest

GREEDY = {"temperature": 0, "max_new_tokens": 16}


def test_result_shape(engine):
    assert engine.flush_cache()
    r = engine.generate("The capital of France is", GREEDY)
    meta = r["meta_info"]
    assert "Paris" in r["text"]
    assert meta["prompt_tokens"] == len(engine.tokenizer.encode("The capital of France is"))
    assert meta["completion_tokens"] == len(r["output_ids"]) <= 16
    assert meta["cached_tokens"] == 0
    assert meta["finish_reason"]["type"] in ("stop", "length")


def test_batch_of_prompts_keeps_order(engine):
    prompts = ["One, two, three,", "The capital of France is"]
    out = engine.generate(prompts, GREEDY)
    assert [r["text"] for r in out] == [engine.generate(p, GREEDY)["text"] for p in prompts]


def test_length_finish(engine):
    r = engine.generate(
        "Count: 1, 2, 3,", {"temperature": 0, "max_new_tokens": 5, "ignore_eos": True}
    )
    assert r["meta_info"]["finish_reason"] == {"type": "length", "length": 5}
    assert r["meta_info"]["completion_tokens"] == 5


def test_stop_string_is_matched_and_cut(engine):
    full = engine.generate("Count: 1, 2, 3,", {"temperature": 0, "max_new_tokens": 12})["text"]
    assert " 5," in full
    r = engine.generate("Count: 1, 2, 3,", {"temperature": 0, "max_new_tokens": 12, "stop": " 5"})
    assert r["meta_info"]["finish_reason"] == {"type": "stop", "matched": " 5"}
    assert r["text"] == full[: full.index(" 5")]


def test_stop_token_id(engine):
    base = engine.generate("Count: 1, 2, 3,", {"temperature": 0, "max_new_tokens": 12})
    stop_id = base["output_ids"][3]
    r = engine.generate(
        "Count: 1, 2, 3,", {"temperature": 0, "max_new_tokens": 12, "stop_token_ids": [stop_id]}
    )
    first = base["output_ids"].index(stop_id)
    assert r["output_ids"] == base["output_ids"][: first + 1]
    assert r["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop_id}
    assert r["text"] == engine.tokenizer.decode(
        base["output_ids"][:first], skip_special_tokens=True
    )


def test_min_new_tokens_and_ignore_eos(engine, prompt_ids):
    ids = prompt_ids[0]  # a chat prompt: the model ends its turn early
    short = engine.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": 64})
    n = short["meta_info"]["completion_tokens"]
    assert short["meta_info"]["finish_reason"]["type"] == "stop" and n < 40
    forced = engine.generate(
        input_ids=ids,
        sampling_params={"temperature": 0, "max_new_tokens": 64, "min_new_tokens": n + 10},
    )
    assert forced["meta_info"]["completion_tokens"] >= n + 10
    assert forced["output_ids"][: n - 1] == short["output_ids"][: n - 1]
    ignored = engine.generate(
        input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": 50, "ignore_eos": True}
    )
    assert ignored["meta_info"]["finish_reason"] == {"type": "length", "length": 50}


def test_prefill_only(engine):
    r = engine.generate(
        "Hello there", {"max_new_tokens": 0}, return_logprob=True, logprob_start_len=0
    )
    assert r["output_ids"] == [] and r["text"] == ""
    assert r["meta_info"]["finish_reason"] == {"type": "length", "length": 0}
    assert len(r["meta_info"]["input_token_logprobs"]) == r["meta_info"]["prompt_tokens"]


def test_seed_reproducible_and_n(engine):
    params = {
        "temperature": 1.0,
        "top_p": 0.9,
        "max_new_tokens": 20,
        "seed": 1234,
        "ignore_eos": True,
    }
    a = engine.generate("Once upon a time", params)
    # the same seed gives the same text, also when batched with other requests
    b = engine.generate(["Once upon a time", "Another story:"], params)[0]
    assert a["output_ids"] == b["output_ids"]
    c = engine.generate("Once upon a time", {**params, "seed": 99})
    assert c["output_ids"] != a["output_ids"]
    many = engine.generate("Once upon a time", {**params, "n": 3})
    assert len(many) == 3 and many[0]["output_ids"] == a["output_ids"]
    assert len({tuple(r["output_ids"]) for r in many}) == 3


def test_logprobs_are_consistent(engine):
    """Output logprobs equal the input logprobs of the same tokens fed back as a prompt."""
    prompt = engine.tokenizer.encode("The capital of France is")
    r = engine.generate(
        input_ids=prompt,
        sampling_params={**GREEDY, "max_new_tokens": 6, "ignore_eos": True},
        return_logprob=True,
        top_logprobs_num=3,
    )
    out = r["meta_info"]["output_token_logprobs"]
    assert [e[1] for e in out] == r["output_ids"]
    tops = r["meta_info"]["output_top_logprobs"]
    assert all(len(t) == 3 and t[0][1] == e[1] for t, e in zip(tops, out))  # greedy = top-1
    again = engine.generate(
        input_ids=prompt + r["output_ids"],
        sampling_params={"max_new_tokens": 0},
        return_logprob=True,
        logprob_start_len=len(prompt),
    )
    inp = again["meta_info"]["input_token_logprobs"]
    assert [e[1] for e in inp] == r["output_ids"]
    for (a, _, _), (b, _, _) in zip(out, inp):
        assert abs(a - b) < 1e-4


def test_logprob_text(engine):
    r = engine.generate(
        "Hi",
        {"max_new_tokens": 2, "temperature": 0},
        return_logprob=True,
        return_text_in_logprobs=True,
    )
    entry = r["meta_info"]["output_token_logprobs"][0]
    assert entry[2] == engine.tokenizer.decode([entry[1]])


def test_stream_is_cumulative(engine):
    chunks = list(engine.generate("Count: 1, 2, 3,", {**GREEDY, "ignore_eos": True}, stream=True))
    assert len(chunks) == 16
    texts = [c["text"] for c in chunks]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    assert texts[-1] == engine.generate("Count: 1, 2, 3,", {**GREEDY, "ignore_eos": True})["text"]


def test_abort_by_id(engine):
    result = {}

    def run() -> None:
        result["r"] = engine.generate(
            "Tell me a long story.", {"max_new_tokens": 2000, "ignore_eos": True}, rid="long-one"
        )

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.0)
    engine.abort_request("long-one")
    t.join(timeout=30)
    r = result["r"]
    assert r["meta_info"]["finish_reason"]["type"] == "abort"
    assert 0 < r["meta_info"]["completion_tokens"] < 2000
    assert _pool_is_whole(engine)


def _pool_is_whole(engine) -> bool:
    for _ in range(100):
        info = engine.get_server_info()
        if info["num_waiting_reqs"] == info["num_running_reqs"] == 0:
            break
        time.sleep(0.05)
    return info["kv_free_tokens"] + info["cache_tokens"] == info["max_total_tokens"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 10**6}, "max_new_tokens"),
        ({"bogus": 1}, "bogus"),
        ({"n": 0}, "n"),
        ({"stop": [""]}, "stop"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"temperature": "hot"}, "temperature"),
    ],
)
def test_bad_params_name_the_field_and_engine_keeps_serving(engine, params, field):
    with pytest.raises(ValueError, match=field):
        engine.generate("Hello", params)
    assert "Paris" in engine.generate("The capital of France is", GREEDY)["text"]


def test_bad_inputs(engine):
    with pytest.raises(ValueError, match="input_ids"):
        engine.generate(input_ids=[10**9])
    with pytest.raises(ValueError, match="prompt"):
        engine.generate()
    with pytest.raises(ValueError, match="prompt"):
        engine.generate("")
    with pytest.raises(ValueError, match="prompt"):
        engine.generate([])
    with pytest.raises(ValueError, match="top_logprobs_num"):
        engine.generate("Hi", return_logprob=True, top_logprobs_num=10**6)
    with pytest.raises(ValueError, match="logprob_start_len"):
        engine.generate("Hi", return_logprob=True, logprob_start_len=50)
    with pytest.raises(ValueError, match="sampling_params"):
        engine.generate(["a", "b"], [{}])
    assert _pool_is_whole(engine)


def test_penalties_change_output(engine):
    base = {"temperature": 0, "max_new_tokens": 30, "ignore_eos": True}
    plain = engine.generate("Count: 1, 2, 3,", base)["output_ids"]
    rep = engine.generate("Count: 1, 2, 3,", {**base, "repetition_penalty": 1.5})["output_ids"]
    freq = engine.generate("Count: 1, 2, 3,", {**base, "frequency_penalty": 1.5})["output_ids"]
    assert rep != plain and freq != plain
    assert len(set(freq)) > len(set(plain))


def test_server_info(engine):
    info = engine.get_server_info()
    assert info["max_total_tokens"] == 8192
    assert info["context_length"] == 8192
    size = {"float32": 4, "bfloat16": 2}[info["kv_cache_dtype"]]  # auto: the model's dtype
    assert info["kv_bytes_per_token"] == 30 * 2 * 3 * 64 * size


@pytest.mark.parametrize("victim", [0, 1], ids=["scheduler", "detokenizer"])
def test_shutdown_leaves_nothing_and_a_dead_child_fails_fast(victim):
    import os

    from runtime import Engine

    eng = Engine(max_total_tokens=1024, log_level="error")
    procs, folder = eng._procs, eng._tmp
    deaths = []
    eng.on_death = deaths.append
    assert eng.generate("Hi", {"max_new_tokens": 2})["meta_info"]["completion_tokens"] == 2
    procs[victim].kill()
    name = ["scheduler", "detokenizer"][victim]
    with pytest.raises(RuntimeError, match=f"{name} process died"):
        eng.generate("Hi", {"max_new_tokens": 50})
    assert deaths and name in deaths[0]
    eng.shutdown()
    assert not os.path.exists(folder)
    assert all(p.poll() is not None for p in procs)

    with Engine(max_total_tokens=1024, log_level="error") as eng:
        procs, folder = eng._procs, eng._tmp
    assert all(p.poll() == 0 for p in procs) and not os.path.exists(folder)


def test_async_generate_matches_and_streams(engine):
    import asyncio

    prompts = ["The capital of France is", "Count: 1, 2, 3,", "Once upon a time"]
    params = {**GREEDY, "ignore_eos": True}
    expected = [r["output_ids"] for r in engine.generate(prompts, params)]

    async def main():
        together = await asyncio.gather(*(engine.async_generate(p, params) for p in prompts))
        assert [r["output_ids"] for r in together] == expected
        chunks = [c async for c in await engine.async_generate(prompts[1], params, stream=True)]
        assert chunks[-1]["output_ids"] == expected[1]
        assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
        # leaving a stream early aborts its request
        stream = await engine.async_generate(
            "Tell me a story.",
            {"max_new_tokens": 500, "ignore_eos": True},
            stream=True,
            rid="left-early",
        )
        async for chunk in stream:
            if chunk["meta_info"]["completion_tokens"] >= 3:
                break
        await stream.aclose()

    asyncio.run(main())
    assert _pool_is_whole(engine)


def test_children_exit_when_their_client_is_killed(tmp_path):
    """SIGKILL of the process holding the Engine, mid-generation, leaves no child process and
    no socket folder behind."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "client.py"
    script.write_text(
        "import os, sys, threading\n"
        "from runtime import Engine\n"
        "e = Engine(max_total_tokens=1024, log_level='error')\n"
        "print(*[p.pid for p in e._procs], e._tmp, flush=True)\n"
        "e.generate('Hi', {'max_new_tokens': 900, 'ignore_eos': True})\n"
    )
    client = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    *pids, folder = client.stdout.readline().split()
    time.sleep(1.0)
    client.send_signal(signal.SIGKILL)
    client.wait()

    def running(pid: int) -> bool:  # an exited child may linger as a zombie until reaped
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    for _ in range(100):
        if not any(running(int(p)) for p in pids):
            break
        time.sleep(0.1)
    else:
        for p in pids:
            os.kill(int(p), signal.SIGKILL)
        raise AssertionError("a child process outlived its client")
    assert not os.path.exists(folder)
