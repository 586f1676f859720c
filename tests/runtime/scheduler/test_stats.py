"""The scheduler's step timing: every step's time lands under its kind, so server info can
tell how much of a run was prefill and how much decoding."""

from __future__ import annotations

from tests.runtime.scheduler.stub_runner import expected_output
from tests.runtime.scheduler.test_scheduler_state_machine import make_scheduler, request


def run_all(sched) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    while sched.has_work():
        for out in sched.step():
            got.setdefault(out.rid, []).extend(out.new_token_ids)
    return got


def test_step_seconds_are_kept_by_kind():
    sched = make_scheduler()
    sched.add_request(request("a", [1, 2, 3], 5))
    assert run_all(sched)["a"] == expected_output([1, 2, 3], 5)
    s = sched.stats
    assert s.prefill_seconds > 0 and s.decode_seconds > 0 and s.mixed_seconds == 0
    assert set(sched.load_stats()) >= {"prefill_seconds", "decode_seconds", "mixed_seconds"}


def test_mixed_steps_are_kept_apart():
    sched = make_scheduler(enable_mixed_chunk=True)
    sched.add_request(request("a", [1, 2, 3], 6))
    sched.step()  # a's prefill, alone
    sched.add_request(request("b", [4, 5, 6], 2))
    got = run_all(sched)
    assert got["b"] == expected_output([4, 5, 6], 2)
    assert sched.stats.mixed_seconds > 0  # b's prefill, with a decoding along
