"""Serving workloads over streamed OpenAI completions: decode, prefill and shared-prefix load.

Each takes the server's URL, a `TextMaker`, a salt that makes its prompts new to the server, and
a `Scale`; it returns one flat dict of metrics.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass

from peers.client import Completion, run_all, run_closed_loop
from peers.prompts import TextMaker, shared_prefix_prompts


@dataclass(frozen=True)
class Scale:
    """Sizes of every workload; `SMOKE` checks the script in seconds."""

    decode_streams: tuple[int, ...] = (1, 8, 32)
    decode_tokens: int = 128
    decode_prompt_tokens: int = 32
    prefill_prompts: int = 8
    prefill_tokens: int = 2000
    shared_clients: tuple[int, ...] = (16, 64)
    shared_groups: int = 4
    shared_per_group: int = 16
    shared_system_tokens: int = 700
    shared_new_tokens: int = 16
    programs: int = 8  # programs per frontend workload


SMOKE = Scale(
    decode_streams=(1, 2),
    decode_tokens=8,
    decode_prompt_tokens=8,
    prefill_prompts=2,
    prefill_tokens=64,
    shared_clients=(2,),
    shared_groups=2,
    shared_per_group=2,
    shared_system_tokens=64,
    shared_new_tokens=4,
    programs=2,
)


def pct(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (no interpolation), 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def prompt_tokens(maker: TextMaker, prompt: str, result: Completion) -> int:
    """The server's count, or ours where it reports none (llama.cpp's streams carry no usage;
    it reads the same tokenizer from the GGUF file)."""
    return result.prompt_tokens or maker.count(prompt)


def _latency_stats(results: list[Completion]) -> dict:
    return {
        "ttft_p50_s": pct([r.ttft for r in results], 0.5),
        "ttft_p99_s": pct([r.ttft for r in results], 0.99),
        "latency_p50_s": pct([r.latency for r in results], 0.5),
    }


def decode(url: str, maker: TextMaker, salt: str, scale: Scale, streams: int) -> dict:
    """`streams` short prompts at once, `decode_tokens` each: generation tokens/s."""
    prompts = [
        maker.text(scale.decode_prompt_tokens, f"{salt}-d{streams}-{i}", f"[{salt}-{i}]")
        for i in range(streams)
    ]
    wall, results = asyncio.run(run_all(url, prompts, scale.decode_tokens))
    tokens = sum(r.completion_tokens for r in results)
    per_stream = [r.completion_tokens / max(r.latency - r.ttft, 1e-9) for r in results]
    return {
        "streams": streams,
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "stream_tokens_per_s_p50": statistics.median(per_stream),
        **_latency_stats(results),
    }


def prefill(url: str, maker: TextMaker, salt: str, scale: Scale) -> dict:
    """Long new prompts at once, one output token each: prompt tokens/s."""
    prompts = [
        maker.text(scale.prefill_tokens, f"{salt}-p{i}", f"[{salt}-p{i}]")
        for i in range(scale.prefill_prompts)
    ]
    wall, results = asyncio.run(run_all(url, prompts, 1))
    tokens = sum(prompt_tokens(maker, p, r) for p, r in zip(prompts, results))
    return {
        "prompts": len(prompts),
        "prompt_tokens": tokens,
        "wall_s": wall,
        "prompt_tokens_per_s": tokens / wall,
        **_latency_stats(results),
    }


def shared_prefix(url: str, maker: TextMaker, salt: str, scale: Scale, clients: int) -> dict:
    """Groups of questions over long shared system prompts, a closed loop of `clients`."""
    prompts = shared_prefix_prompts(
        maker,
        scale.shared_groups,
        scale.shared_per_group,
        scale.shared_system_tokens,
        f"{salt}-c{clients}",
    )
    wall, results = asyncio.run(run_closed_loop(url, prompts, clients, scale.shared_new_tokens))
    return {
        "clients": clients,
        "requests": len(results),
        "wall_s": wall,
        "req_per_s": len(results) / wall,
        "out_tokens_per_s": sum(r.completion_tokens for r in results) / wall,
        "prompt_tokens_mean": statistics.mean(maker.count(p) for p in prompts),
        **_latency_stats(results),
    }
