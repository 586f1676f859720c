"""The requests of `bench_kv_compression_capacity.py` through kvpress on transformers, for
reference: one request at a time (kvpress prunes one request's cache; it has no batching),
every config in turn per request so the configs meet the same load.

Runs in kvpress's own environment, started by the benchmark:
    .venv-kvpress/bin/python benchmarks/peers/kvpress_capacity.py REQUEST.json OUT.json

REQUEST: {"folder", "new_tokens", "requests": [{"ids", "expected"}],
          "configs": [{"name", "press" (None: exact KV), "budget", "kwargs"}]}.
OUT: per config and request, TTFT (prefill and the first token), seconds, kept KV tokens, text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import kvpress
import torch
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from kvpress_positions import greedy, prefill, ratio_for, start_worker  # noqa: E402

logger = logging.getLogger("kvpress_capacity")


def run_one(model, tok, ids: list[int], cfg: dict, new_tokens: int) -> dict:
    press = None
    if cfg["press"] is not None and cfg["budget"] < len(ids):
        ratio = ratio_for(len(ids), cfg["budget"])
        press = getattr(kvpress, cfg["press"])(compression_ratio=ratio, **cfg["kwargs"])
    t0 = time.perf_counter()
    cache, logits = prefill(model, ids, press)
    first = int(logits.argmax())  # the first token is the prefill's argmax
    ttft = time.perf_counter() - t0
    kept = [layer.keys.shape[2] for layer in cache.layers]
    out = greedy(model, cache, logits, len(ids), new_tokens)
    assert out[0] == first
    return {
        "ttft": ttft,
        "seconds": time.perf_counter() - t0,
        "kept": sum(kept) / len(kept),
        "prompt": len(ids),
        "text": tok.decode(out, skip_special_tokens=True),
    }


def main(request_path: str, out_path: str) -> None:
    req, model = start_worker(request_path, "sdpa")
    tok = AutoTokenizer.from_pretrained(req["folder"])
    results = []
    with torch.no_grad():
        for i, r in enumerate(req["requests"]):
            for cfg in req["configs"]:
                rec = run_one(model, tok, r["ids"], cfg, req["new_tokens"])
                rec.update(name=cfg["name"], request=i, correct=r["expected"] in rec["text"])
                results.append(rec)
                logger.info("kvpress %s request %d: %.1f s, %s", cfg["name"], i,
                            rec["seconds"], rec["correct"])  # fmt: skip
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
