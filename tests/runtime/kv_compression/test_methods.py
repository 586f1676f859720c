"""The selection rules on synthetic keys and queries, and on the default model against a record
of what kvpress 0.5.5 kept (data/kvpress_positions.json, written by
`benchmarks/kv_compression_vs_kvpress.py --fixture`)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from runtime.kv_compression.methods import (
    layer_budget,
    observed_attention,
    queries_needed,
    select_positions,
    validate_spec,
)

HERE = os.path.dirname(os.path.abspath(__file__))
D = 16


def select(method, keys, queries, budget, layer=0, num_layers=1, **options):
    return select_positions(
        method, keys=keys, queries=queries, budget=budget, layer=layer,
        num_layers=num_layers, options=options,
    )  # fmt: skip


def planted(n: int, targets: list[list[int]], groups: int = 2, w: int = 8):
    """Keys with a strong direction at each KV head's targets; the last w queries of every query
    head of that KV head point along it, so attention piles on the targets."""
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(len(targets), n, D, generator=gen) * 0.1
    queries = torch.randn(len(targets) * groups, w, D, generator=gen) * 0.1
    for h, pos in enumerate(targets):
        direction = torch.zeros(D)
        direction[h] = 1.0
        keys[h, pos] += 4 * direction
        queries[h * groups : (h + 1) * groups] += 4 * direction
    return keys, queries


def test_streamingllm_keeps_sinks_and_recent():
    keys = torch.randn(2, 100, D)
    got = select("streamingllm", keys, None, 20, n_sink=4)
    want = list(range(4)) + list(range(84, 100))
    assert got.tolist() == [want, want]


def test_budget_covering_the_prompt_keeps_everything():
    keys, queries = planted(30, [[3], [5]])
    for method in ("streamingllm", "snapkv", "pyramidkv", "h2o"):
        opts = {"window_size": 8} if method != "streamingllm" else {}
        got = select(method, keys, None if method == "streamingllm" else queries, 30, **opts)
        assert got.tolist() == [list(range(30))] * 2


def test_snapkv_keeps_window_and_attended_positions_per_kv_head():
    n, w = 100, 8
    keys, queries = planted(n, [[30, 60], [10]], w=w)
    got = select("snapkv", keys, queries, w + 2, window_size=w, kernel_size=1)
    window = list(range(n - w, n))
    assert got[0].tolist() == [30, 60] + window
    assert got[1].tolist()[-w:] == window and 10 in got[1].tolist()
    assert 30 not in got[1].tolist()  # each KV head scores with its own query heads


def test_snapkv_pooling_keeps_neighbours_together():
    n, w = 100, 8
    keys, queries = planted(n, [[40], [70]], w=w)
    got = select("snapkv", keys, queries, w + 3, window_size=w, kernel_size=3)
    assert got[0].tolist()[:3] == [39, 40, 41]
    assert got[1].tolist()[:3] == [69, 70, 71]


def test_snapkv_reads_only_the_last_window_queries():
    n, w = 100, 8
    keys, queries = planted(n, [[30], [50]], w=w)
    longer = torch.cat([torch.randn(4, 20, D) * 5, queries], dim=1)  # earlier queries ignored
    a = select("snapkv", keys, queries, 12, window_size=w)
    b = select("snapkv", keys, longer, 12, window_size=w)
    assert torch.equal(a, b)


def test_pyramidkv_budgets_fall_with_depth_and_average_the_budget():
    spec = validate_spec({"method": "pyramidkv", "budget": 128, "window_size": 16, "beta": 4})
    budgets = [layer_budget(spec, 1000, layer, 30) for layer in range(30)]
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > budgets[-1]
    assert abs(sum(budgets) / 30 - 128) <= 1
    assert budgets[-1] == 128 // 4  # the top layer keeps budget / beta
    keys, queries = planted(1000, [[100], [200]], w=16)
    for layer in (0, 29):
        got = select("pyramidkv", keys, queries, 128, layer, 30, window_size=16, beta=4)
        assert got.shape == (2, budgets[layer])
        assert got[0].tolist()[-16:] == list(range(984, 1000))


def test_pyramidkv_falls_back_to_snapkv_outside_its_range():
    # budget < beta * window_size: min_num would fall below the window, as in kvpress
    spec = validate_spec({"method": "pyramidkv", "budget": 128})
    assert {layer_budget(spec, 1000, layer, 30) for layer in range(30)} == {128}
    keys, queries = planted(1000, [[100], [200]], w=64)
    assert torch.equal(
        select("pyramidkv", keys, queries, 128, 5, 30), select("snapkv", keys, queries, 128)
    )


def test_h2o_keeps_recent_and_heavy_hitters():
    n = 60
    keys, _ = planted(n, [[12], [25]], w=n)
    _, queries = planted(n, [[12], [25]], w=n)
    got = select("h2o", keys, queries, 10, recent_size=4)
    assert got[0].tolist()[-4:] == list(range(56, 60)) and 12 in got[0].tolist()
    assert 25 in got[1].tolist()
    assert queries_needed(validate_spec({"method": "h2o", "budget": 10}), n) == n


def test_observed_attention_counts_the_queries_that_see_each_position():
    keys = torch.randn(1, 10, D)
    queries = torch.randn(2, 4, D)  # the last 4 of 10 positions
    attn_sum, n_observed = observed_attention(keys, queries)
    assert n_observed.tolist() == [4] * 7 + [3, 2, 1]
    assert torch.allclose(attn_sum.sum(), torch.tensor(4.0))  # each query's weights sum to 1


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"method": "lru", "budget": 8}, "method"),
        ({"method": "snapkv"}, "budget"),
        ({"method": "snapkv", "budget": 0}, "budget"),
        ({"method": "snapkv", "budget": 2.5}, "budget"),
        ({"method": "snapkv", "budget": 100, "window_size": 0}, "window_size"),
        ({"method": "snapkv", "budget": 32}, "window_size"),  # default window 64 > budget
        ({"method": "snapkv", "budget": 100, "kernel_size": 4}, "kernel_size"),
        ({"method": "snapkv", "budget": 100, "beta": 4}, "beta"),  # not a snapkv option
        ({"method": "pyramidkv", "budget": 100, "beta": 0}, "beta"),
        ({"method": "streamingllm", "budget": 8, "n_sink": 9}, "n_sink"),
        ({"method": "streamingllm", "budget": 8, "n_sink": -1}, "n_sink"),
        ({"method": "h2o", "budget": 8, "recent_size": 9}, "recent_size"),
        ({"method": "h2o", "budget": 8, "window_size": True}, "window_size"),
    ],
)
def test_bad_options_name_the_field(spec, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        validate_spec(spec)


def test_select_positions_rejects_bad_options_and_inputs():
    keys, queries = planted(100, [[3], [5]])
    with pytest.raises(ValueError, match="^kernel_size: "):
        select("snapkv", keys, queries, 20, window_size=8, kernel_size=2)
    with pytest.raises(ValueError, match="^queries: "):
        select("snapkv", keys, None, 20, window_size=8)
    with pytest.raises(ValueError, match="^queries: "):
        select("snapkv", keys, queries[:3], 20, window_size=8)  # 3 query heads over 2 KV heads


def test_defaults_are_filled_in():
    assert validate_spec({"method": "snapkv", "budget": 512}) == {
        "method": "snapkv", "budget": 512, "window_size": 64, "kernel_size": 5,
    }  # fmt: skip
    assert validate_spec({"method": "h2o", "budget": 512})["recent_size"] == 256


@pytest.fixture(scope="module")
def kvpress_record():
    with open(os.path.join(HERE, "data", "kvpress_positions.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def model_inputs(kvpress_record):
    """The default model's keys and queries on the recorded prompt, from transformers."""
    pytest.importorskip("transformers")
    from runtime.model_loader.loader import prepare_model_folder

    sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "benchmarks", "peers"))
    import hf_attention_inputs as hf

    model = hf.load_model(prepare_model_folder(None, None))
    keys, _, queries, _ = hf.keys_and_queries(model, kvpress_record["input_ids"])
    return keys, queries


def test_default_model_keeps_what_kvpress_kept(kvpress_record, model_inputs):
    keys, queries = model_inputs
    n, budget = len(kvpress_record["input_ids"]), kvpress_record["budget"]
    for run in kvpress_record["runs"]:
        spec = validate_spec({"method": run["method"], "budget": budget, **run["options"]})
        need = queries_needed(spec, n)
        for layer, theirs in run["positions"].items():
            layer = int(layer)
            ours = select_positions(
                run["method"], keys=keys[layer], queries=queries[layer][:, n - need :],
                budget=budget, layer=layer, num_layers=len(keys), options=run["options"],
            )  # fmt: skip
            assert ours.tolist() == theirs, (run["name"], layer)
