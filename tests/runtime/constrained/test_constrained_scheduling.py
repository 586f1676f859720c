"""Constrained requests inside the scheduler: under memory pressure (retraction), with
jump-forward re-queueing, and mixed with free requests in one batch."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from tests.runtime.constrained.suite import REGEXES, SCHEMAS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("jump_forward", [False, True], ids=["retraction", "jump-forward"])
def test_constrained_requests_under_memory_pressure(jump_forward):
    """Driven in this process on a 160-slot pool: five JSON requests cannot all fit. Decoding
    token by token, some are retracted mid-output and resumed with their grammar state; with
    jump-forward, re-queueing through the cache relieves the pool instead."""
    from runtime.io_struct import TokenizedGenerateRequest
    from runtime.model_loader.loader import load_tokenizer
    from runtime.model_runner import ModelRunner
    from runtime.sampling import SamplingParams
    from runtime.scheduler.scheduler import Scheduler
    from runtime.server_args import ServerArgs

    args = ServerArgs(
        max_total_tokens=160, max_running_requests=8, disable_jump_forward=not jump_forward
    )
    runner = ModelRunner(args)
    tok = load_tokenizer(runner.model_folder)
    sched = Scheduler(runner, tok, {tok.eos_token_id})
    sched.memory.new_token_ratio = 0.1  # admit optimistically, as after a long calm period
    cases = [SCHEMAS[i] for i in (2, 8, 12, 16, 18)]
    for i, (prompt, schema) in enumerate(cases):
        params = SamplingParams(temperature=0, max_new_tokens=100, json_schema=json.dumps(schema))
        sched.add_request(
            TokenizedGenerateRequest(f"r{i}", tok.encode(f"{prompt}\nAnswer in JSON:\n"), params)
        )
    out: dict[str, list[int]] = {}
    while sched.has_work():
        for o in sched.step():
            out.setdefault(o.rid, []).extend(o.new_token_ids)
        sched.check_memory()
    if jump_forward:
        assert sched.stats.jump_forward_tokens > 0
    else:
        assert sched.stats.retractions > 0, "the pool was large enough; this proves nothing"
    for i, (_, schema) in enumerate(cases):
        jsonschema.validate(json.loads(tok.decode(out[f"r{i}"], skip_special_tokens=True)), schema)
    assert sched.flush_cache() and runner.kv_pool.available_size() == 160


def test_jump_forward_gives_the_same_valid_outputs_as_plain_decoding_on_regexes():
    """Forced text is what the grammar allows anyway: for regexes whose forced parts are whole
    tokens the greedy text is the same with and without jump-forward."""
    from runtime import Engine

    cases = [REGEXES[i] for i in (1, 2, 12, 18)]
    texts = [f"{p} " for p, _ in cases]
    params = [{"regex": r, "temperature": 0, "max_new_tokens": 40} for _, r in cases]
    got = {}
    for off in (False, True):
        with Engine(max_total_tokens=4096, disable_jump_forward=off, log_level="warning") as eng:
            got[off] = [o["text"] for o in eng.generate(texts, params)]
    for text, (_, regex) in zip(got[False], cases):
        assert re.fullmatch(regex, text)
    for text, (_, regex) in zip(got[True], cases):
        assert re.fullmatch(regex, text)
