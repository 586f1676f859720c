"""Prometheus metrics: request counters and latency histograms from the results as they flow
through the client, and the scheduler's load read at scrape time."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from runtime.response import RequestResult, ResultDelta

PREFIX = "radixserve"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

_LOAD_GAUGES = {
    "num_running_reqs": "requests prefilling or decoding",
    "num_waiting_reqs": "requests queued for prefill",
    "token_usage": "share of the KV pool held by running requests",
    "cache_hit_rate": "share of prompt tokens served from the prefix cache",
    "cache_tokens": "tokens held by the prefix cache",
    "kv_free_tokens": "free KV slots",
    "max_total_tokens": "KV pool size in tokens",
    "kv_bytes_per_token": "bytes one cached token takes in the KV pool, scales included",
}


class _LoadCollector:
    def __init__(self, server_info) -> None:
        self.server_info = server_info

    def collect(self):
        info = self.server_info()
        for name, doc in _LOAD_GAUGES.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(info[name]))
        dtype = GaugeMetricFamily(
            f"{PREFIX}_kv_cache_dtype",
            "how the KV pool stores K/V (1 for the one in use)",
            labels=["dtype"],
        )
        dtype.add_metric([info["kv_cache_dtype"]], 1.0)
        yield dtype


class Metrics:
    """One registry per server, so several servers (or tests) in one process stay apart."""

    def __init__(self, server_info) -> None:
        self.registry = r = CollectorRegistry()
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens", "prompt tokens of finished requests", registry=r
        )
        self.cached_tokens = Counter(
            f"{PREFIX}_cached_prompt_tokens", "prompt tokens reused from the cache", registry=r
        )
        self.generation_tokens = Counter(
            f"{PREFIX}_generation_tokens", "tokens generated", registry=r
        )
        self.requests = Counter(
            f"{PREFIX}_requests", "finished requests", ["finish_reason"], registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "from arrival to the first generated token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            f"{PREFIX}_inter_token_latency_seconds",
            "between two generated tokens of one request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            f"{PREFIX}_e2e_request_latency_seconds",
            "from arrival to the finish",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_LoadCollector(server_info))

    def observe(self, r: RequestResult, d: ResultDelta) -> None:
        """Engine.on_delta hook: called once per applied delta."""
        if d.output_ids:
            self.generation_tokens.inc(len(d.output_ids))
            if r.prev_token_time is None:
                self.ttft.observe(r.first_token_time - r.created)
            else:
                gap = (r.last_token_time - r.prev_token_time) / len(d.output_ids)
                for _ in d.output_ids:
                    self.itl.observe(gap)
        if d.finish_reason is not None:
            self.prompt_tokens.inc(d.prompt_tokens)
            self.cached_tokens.inc(d.cached_tokens)
            self.requests.labels(d.finish_reason["type"]).inc()
            self.e2e.observe(time.perf_counter() - r.created)

    def render(self) -> bytes:
        return generate_latest(self.registry)
