"""The real scheduler over a stub model: arrivals, aborts, chunked prefills, memory pressure and
retractions in any order keep the pool accounting whole, lose and duplicate no request, and give
every finished request exactly its tokens."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from runtime.io_struct import TokenizedGenerateRequest
from runtime.sampling import SamplingParams
from runtime.scheduler.scheduler import Scheduler
from runtime.server_args import SchedulerArgs
from tests.runtime.scheduler.stub_runner import VOCAB, StubRunner, expected_output

tokens = st.lists(st.integers(0, VOCAB - 1), min_size=0, max_size=24)


def make_scheduler(**overrides) -> Scheduler:
    args = SchedulerArgs(
        max_total_tokens=64,
        max_running_requests=4,
        max_prefill_tokens=16,
        chunked_prefill_size=16,
        grammar_backend="none",
        **overrides,
    )
    return Scheduler(StubRunner(args), tokenizer=None, eos_ids=set())


def request(rid: str, prompt: list[int], max_new: int) -> TokenizedGenerateRequest:
    params = SamplingParams(temperature=0, max_new_tokens=max_new, ignore_eos=True)
    return TokenizedGenerateRequest(rid, prompt, params)


class SchedulerMachine(RuleBasedStateMachine):
    overrides: dict = {}

    @initialize(prefixes=st.lists(tokens, min_size=1, max_size=3))
    def start(self, prefixes):
        self.sched = make_scheduler(**self.overrides)
        self.prefixes = prefixes
        self.prompts: dict[str, tuple[list[int], int]] = {}
        self.got: dict[str, list[int]] = {}
        self.finish: dict[str, dict] = {}
        self.aborted: set[str] = set()

    def _take(self, outputs) -> None:
        for out in outputs:
            assert out.rid not in self.finish, f"{out.rid} had output after it finished"
            self.got[out.rid] += out.new_token_ids
            if out.finish_reason is not None:
                self.finish[out.rid] = out.finish_reason.to_dict()

    @rule(
        which=st.integers(0, 2),
        suffix=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=12),
        max_new=st.integers(0, 8),
    )
    def arrive(self, which, suffix, max_new):
        rid = f"r{len(self.prompts)}"
        prompt = self.prefixes[which % len(self.prefixes)] + suffix
        self.prompts[rid] = (prompt, max_new)
        self.got[rid] = []
        self.sched.add_request(request(rid, prompt, max_new))

    @precondition(lambda self: any(r not in self.finish for r in self.prompts))
    @rule(data=st.data())
    def abort(self, data):
        rid = data.draw(st.sampled_from(sorted(r for r in self.prompts if r not in self.finish)))
        self.aborted.add(rid)
        self._take(self.sched.abort_request(rid))
        assert self.finish[rid]["type"] == "abort"

    @rule(steps=st.integers(1, 6))
    def step(self, steps):
        for _ in range(steps):
            self._take(self.sched.step())

    @invariant()
    def accounting_is_whole(self):
        self.sched.check_memory()

    @invariant()
    def every_request_is_in_one_place(self):
        s = self.sched
        places = [r.rid for r in s.waiting] + [r.rid for r in s.running]
        places += [s.chunked.rid] if s.chunked else []
        assert len(places) == len(set(places)), f"a request is queued twice: {places}"
        open_rids = {r for r in self.prompts if r not in self.finish}
        assert set(places) == open_rids

    def teardown(self):
        if not hasattr(self, "sched"):
            return
        for _ in range(2000):
            if not self.sched.has_work():
                break
            self._take(self.sched.step())
        assert not self.sched.has_work(), "the scheduler made no progress"
        assert set(self.finish) == set(self.prompts)
        for rid, (prompt, max_new) in self.prompts.items():
            want = expected_output(prompt, max_new)
            if rid in self.aborted:
                assert want[: len(self.got[rid])] == self.got[rid]
            else:
                assert self.got[rid] == want, rid
                assert self.finish[rid] == {"type": "length", "length": max_new}
        assert self.sched.flush_cache()
        assert self.sched.kv_pool.available_size() == self.sched.kv_pool.size


class PagedSchedulerMachine(SchedulerMachine):
    overrides = {"page_size": 4, "schedule_policy": "dfs-weight"}


class NoCacheSchedulerMachine(SchedulerMachine):
    overrides = {"disable_radix_cache": True, "schedule_policy": "fcfs"}


SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestScheduler = SchedulerMachine.TestCase
TestScheduler.settings = SETTINGS
TestPagedScheduler = PagedSchedulerMachine.TestCase
TestPagedScheduler.settings = SETTINGS
TestNoCacheScheduler = NoCacheSchedulerMachine.TestCase
TestNoCacheScheduler.settings = SETTINGS


def test_memory_pressure_retracts_and_outputs_hold():
    """Four requests whose outputs cannot all fit: some are retracted and resumed, and every
    one still gets exactly its tokens."""
    sched = make_scheduler()
    prompts = {f"r{i}": [i + 1] * 4 for i in range(4)}
    for rid, prompt in prompts.items():
        sched.add_request(request(rid, prompt, 24))
    got: dict[str, list[int]] = {rid: [] for rid in prompts}
    while sched.has_work():
        for out in sched.step():
            got[out.rid] += out.new_token_ids
        sched.check_memory()
    assert sched.stats.retractions > 0
    for rid, prompt in prompts.items():
        assert got[rid] == expected_output(prompt, 24)
