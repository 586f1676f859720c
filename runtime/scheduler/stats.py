"""The scheduler's counters, read by server info and `/metrics`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SchedulerStats:
    steps: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    cascade_decode_tokens: int = 0  # decoded while attending to a shared prefix as a group
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    retractions: int = 0
    jump_forward_tokens: int = 0

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
