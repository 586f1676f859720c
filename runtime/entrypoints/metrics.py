"""Prometheus metrics under SGLang's names and labels (`sglang:...{model_name=...}`), so the
dashboards written for SGLang read this server unchanged.

Request counters and latency histograms come from the results as they flow through the client;
the scheduler's load is read at scrape time. One name per metric: no second, home-made set.
"""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from runtime.response import RequestResult, ResultDelta

PREFIX = "sglang:"
LABELS = ["model_name"]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5)
THROUGHPUT_WINDOW_S = 10.0

# gauge name -> (server_info key, help); read from the scheduler at scrape time
_LOAD_GAUGES = {
    "num_running_reqs": ("num_running_reqs", "requests prefilling or decoding"),
    "num_queue_reqs": ("num_waiting_reqs", "requests in the waiting queue"),
    "token_usage": ("token_usage", "share of the KV pool held by running requests"),
    "cache_hit_rate": ("cache_hit_rate", "share of prompt tokens served from the prefix cache"),
    "max_total_num_tokens": ("max_total_tokens", "KV pool size in tokens"),
    "cache_tokens": ("cache_tokens", "tokens held by the prefix cache"),
    "kv_free_tokens": ("kv_free_tokens", "free KV slots"),
    "pinned_tokens": ("pinned_tokens", "prefix tokens pinned out of eviction"),
    "kv_bytes_per_token": (
        "kv_bytes_per_token",
        "bytes one cached token takes in the KV pool, scales included",
    ),
}


class _ScrapeTimeGauges:
    def __init__(self, server_info, model_name: str, throughput) -> None:
        self.server_info = server_info
        self.model_name = model_name
        self.throughput = throughput

    def collect(self):
        info = self.server_info()
        total = info["max_total_tokens"]
        used = round(info["token_usage"] * total)
        values = {name: info[key] for name, (key, _) in _LOAD_GAUGES.items()}
        helps = {name: doc for name, (_, doc) in _LOAD_GAUGES.items()}
        values["num_used_tokens"], helps["num_used_tokens"] = used, "KV slots held by requests"
        values["gen_throughput"] = self.throughput()
        helps["gen_throughput"] = (
            f"generated tokens per second over the last {THROUGHPUT_WINDOW_S:g} s"
        )
        for name, value in values.items():
            g = GaugeMetricFamily(PREFIX + name, helps[name], labels=LABELS)
            g.add_metric([self.model_name], float(value))
            yield g
        dtype = GaugeMetricFamily(
            PREFIX + "kv_cache_dtype",
            "how the KV pool stores K/V (1 for the one in use)",
            labels=[*LABELS, "dtype"],
        )
        dtype.add_metric([self.model_name, info["kv_cache_dtype"]], 1.0)
        yield dtype


class Metrics:
    """One registry per server, so several servers (or tests) in one process stay apart."""

    def __init__(self, server_info, model_name: str) -> None:
        self.registry = r = CollectorRegistry()
        self.model_name = model_name
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._started = time.monotonic()
        self._lock = threading.Lock()  # the deque is read by scrapes on another thread

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, [*LABELS, *extra], registry=r)

        def histogram(name: str, doc: str, buckets=LATENCY_BUCKETS) -> Histogram:
            return Histogram(PREFIX + name, doc, LABELS, buckets=buckets, registry=r)

        self.prompt_tokens = counter("prompt_tokens", "prompt tokens of finished requests")
        self.cached_tokens = counter("cached_tokens", "prompt tokens reused from the cache")
        self.generation_tokens = counter("generation_tokens", "tokens generated")
        self.kv_saved = counter(
            "kv_compression_saved_tokens", "prompt KV tokens dropped by KV compression"
        )
        self.requests = counter("num_requests", "finished requests", ("finish_reason",))
        self.ttft = histogram(
            "time_to_first_token_seconds", "from arrival to the first generated token"
        )
        self.itl = histogram(
            "inter_token_latency_seconds", "between two generated tokens", TOKEN_BUCKETS
        )
        self.tpot = histogram(
            "time_per_output_token_seconds",
            "a finished request's decode time per output token after the first",
            TOKEN_BUCKETS,
        )
        self.e2e = histogram("e2e_request_latency_seconds", "from arrival to the finish")
        self.queue = histogram(
            "queue_time_seconds", "in the waiting queue before the first prefill"
        )
        for family in (
            self.prompt_tokens,
            self.cached_tokens,
            self.generation_tokens,
            self.kv_saved,
        ):
            family.labels(model_name)  # shown as 0 before the first request
        for family in (self.ttft, self.itl, self.tpot, self.e2e, self.queue):
            family.labels(model_name)
        r.register(_ScrapeTimeGauges(server_info, model_name, self.gen_throughput))

    def observe(self, r: RequestResult, d: ResultDelta) -> None:
        """Engine.on_delta hook: called once per applied delta."""
        m = self.model_name
        if d.output_ids:
            self.generation_tokens.labels(m).inc(len(d.output_ids))
            self._count_recent(len(d.output_ids))
            if r.prev_token_time is None:
                self.ttft.labels(m).observe(r.first_token_time - r.created)
            else:
                gap = (r.last_token_time - r.prev_token_time) / len(d.output_ids)
                for _ in d.output_ids:
                    self.itl.labels(m).observe(gap)
        if d.finish_reason is not None:
            self.prompt_tokens.labels(m).inc(d.prompt_tokens)
            self.cached_tokens.labels(m).inc(d.cached_tokens)
            if d.kv_tokens_kept is not None:
                self.kv_saved.labels(m).inc(max(0, d.prompt_tokens - d.kv_tokens_kept))
            self.requests.labels(m, d.finish_reason["type"]).inc()
            self.e2e.labels(m).observe(time.perf_counter() - r.created)
            if r.queue_time is not None:
                self.queue.labels(m).observe(r.queue_time)
            if d.completion_tokens > 1 and r.first_token_time is not None:
                decode = r.last_token_time - r.first_token_time
                self.tpot.labels(m).observe(decode / (d.completion_tokens - 1))

    def _count_recent(self, n: int) -> None:
        with self._lock:
            self._recent.append((time.monotonic(), n))

    def gen_throughput(self) -> float:
        """Generated tokens per second over the last window (or since start, if shorter)."""
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - THROUGHPUT_WINDOW_S:
                self._recent.popleft()
            tokens = sum(n for _, n in self._recent)
        return tokens / min(THROUGHPUT_WINDOW_S, max(now - self._started, 1e-3))

    def render(self) -> bytes:
        return generate_latest(self.registry)
