"""The metrics page under SGLang's names, and the dashboard in deploy/ reading only those."""

from __future__ import annotations

import json
import os
import re

import yaml
from prometheus_client.parser import text_string_to_metric_families

from runtime.entrypoints.metrics import Metrics
from runtime.io_struct import ResultDelta
from runtime.response import RequestResult

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
INFO = {
    "num_running_reqs": 2,
    "num_waiting_reqs": 1,
    "token_usage": 0.25,
    "cache_hit_rate": 0.5,
    "max_total_tokens": 1000,
    "cache_tokens": 10,
    "kv_free_tokens": 700,
    "pinned_tokens": 0,
    "kv_bytes_per_token": 23040,
    "kv_cache_dtype": "bfloat16",
}


def delta(ids: list[int], completion: int, finish: dict | None = None) -> ResultDelta:
    return ResultDelta(
        "r", 0, "", ids, prompt_tokens=8, completion_tokens=completion, cached_tokens=3,
        finish_reason=finish, queue_time=0.02 if finish else None,
    )  # fmt: skip


def samples(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_one_request_through_the_sglang_names():
    m = Metrics(lambda: INFO, "smol")
    r = RequestResult("r")
    for d in (delta([1], 1), delta([2, 3], 3), delta([4], 4, {"type": "length", "length": 4})):
        r.apply(d)
        m.observe(r, d)
    v = samples(m)
    label = "{model_name=smol}"
    assert v[f"sglang:prompt_tokens_total{label}"] == 8
    assert v[f"sglang:cached_tokens_total{label}"] == 3
    assert v[f"sglang:generation_tokens_total{label}"] == 4
    assert v["sglang:num_requests_total{finish_reason=length,model_name=smol}"] == 1
    for hist in (
        "time_to_first_token",
        "e2e_request_latency",
        "queue_time",
        "time_per_output_token",
    ):
        assert v[f"sglang:{hist}_seconds_count{label}"] == 1
    assert v[f"sglang:inter_token_latency_seconds_count{label}"] == 3
    assert v[f"sglang:queue_time_seconds_sum{label}"] == 0.02
    assert v[f"sglang:num_queue_reqs{label}"] == 1 and v[f"sglang:num_used_tokens{label}"] == 250
    assert v[f"sglang:gen_throughput{label}"] > 0


def exported_names() -> set[str]:
    """Every series name the page can carry (histograms with their suffixes)."""
    names = set()
    for family in text_string_to_metric_families(Metrics(lambda: INFO, "m").render().decode()):
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def test_every_dashboard_query_names_exported_metrics():
    with open(os.path.join(DEPLOY, "grafana", "radixserve.json")) as f:
        dashboard = json.load(f)
    exported = exported_names()
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    assert len(dashboard["panels"]) >= 8
    for q in queries:
        used = set(re.findall(r"sglang:[a-z0-9_]+", q))
        assert used, q
        assert used <= exported, (q, used - exported)


def test_prometheus_and_compose_files_fit_together():
    with open(os.path.join(DEPLOY, "prometheus.yaml")) as f:
        prom = yaml.safe_load(f)
    job = prom["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        compose = yaml.safe_load(f)["services"]
    host, port = job["static_configs"][0]["targets"][0].split(":")
    assert host in compose and f"{port}:{port}" in compose[host]["ports"]
    for mount in compose["grafana"]["volumes"] + compose["prometheus"]["volumes"]:
        assert os.path.exists(os.path.join(DEPLOY, mount.split(":")[0])), mount
