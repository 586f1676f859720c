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
    # wall seconds spent in each kind of step, the forward with its sampling and bookkeeping
    prefill_seconds: float = 0.0
    mixed_seconds: float = 0.0  # prefills with decoding requests riding along
    decode_seconds: float = 0.0

    def record_step(self, mode: str, seconds: float) -> None:
        """`mode`: prefill, mixed or decode."""
        name = f"{mode}_seconds"
        setattr(self, name, getattr(self, name) + seconds)

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
