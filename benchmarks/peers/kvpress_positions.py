"""The prompt positions kvpress's presses keep, per layer and KV head, and their greedy output.

Runs in kvpress's own environment (scripts/peers.sh kvpress), started by
`benchmarks/kv_compression_vs_kvpress.py`, which writes the request and compares:
    .venv-kvpress/bin/python benchmarks/peers/kvpress_positions.py REQUEST.json OUT.json

REQUEST: {"folder": model folder, "prompts": [[ids]], "new_tokens": N,
          "configs": [{"name", "press", "kwargs", "budget"}]}.
The model runs in float32, eager attention for the prefill (ObservedAttentionPress reads its
weights), SDPA for decoding. Positions are read from the pruned cache: each
kept key is found, bit for bit, among the keys of an uncompressed prefill of the same prompt.
Greedy decoding follows the prefill the way kvpress's pipeline does: the prompt's last logits
come from the exact prefill, later tokens attend over the pruned cache at their true positions.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import sys
import time

import kvpress
import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache

logger = logging.getLogger("kvpress_positions")


def ratio_for(n: int, budget: int) -> float:
    """The compression_ratio with int(n * (1 - ratio)) == budget (kvpress keeps that many)."""
    ratio = 1.0 - budget / n
    for _ in range(64):
        kept = int(n * (1 - ratio))
        if kept == budget:
            return ratio
        ratio = math.nextafter(ratio, 0.0 if kept < budget else 1.0)
    raise ValueError(f"no compression_ratio keeps {budget} of {n}")


def prefill(model, ids: list[int], press=None):
    cache = DynamicCache()
    x = torch.tensor([ids])
    if press is None:
        out = model(input_ids=x, past_key_values=cache)
    else:
        with press(model):
            out = model(input_ids=x, past_key_values=cache)
    return cache, out.logits[0, -1]


@contextlib.contextmanager
def sdpa(model):
    """Past the prefill: eager attention's mask does not fit layers of different lengths."""
    before = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def greedy(model, cache, last_logits, n: int, new_tokens: int) -> list[int]:
    with sdpa(model):
        return _greedy(model, cache, last_logits, n, new_tokens)


def _greedy(model, cache, last_logits, n: int, new_tokens: int) -> list[int]:
    token = int(last_logits.argmax())
    out = [token]
    for i in range(new_tokens - 1):
        logits = model(
            input_ids=torch.tensor([[token]]),
            past_key_values=cache,
            position_ids=torch.tensor([[n + i]]),
        ).logits
        token = int(logits[0, -1].argmax())
        out.append(token)
    return out


def kept_positions(full_keys: torch.Tensor, kept_keys: torch.Tensor) -> tuple[list, float]:
    """full_keys [Hkv, n, D], kept_keys [Hkv, k, D] -> sorted positions per head, worst error."""
    heads, worst = [], 0.0
    for h in range(full_keys.shape[0]):
        dist = torch.cdist(kept_keys[h], full_keys[h], compute_mode="donot_use_mm_for_euclid_dist")
        best = dist.min(dim=1)
        worst = max(worst, float(best.values.max()))
        heads.append(sorted(best.indices.tolist()))
    return heads, worst


def start_worker(request_path: str, attn_implementation: str = "eager") -> tuple[dict, object]:
    """What every kvpress worker begins with: its request file and the float32 model it names.
    (A worker is a script run in kvpress's own virtual environment; it logs to its stderr.)"""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with open(request_path) as f:
        req = json.load(f)
    transformers.utils.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(
        req["folder"], dtype=torch.float32, attn_implementation=attn_implementation
    ).eval()
    return req, model


def main(request_path: str, out_path: str) -> None:
    req, model = start_worker(request_path)
    result = {
        "kvpress": importlib.metadata.version("kvpress"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "baseline": [],
        "runs": [],
        "key_match_max_error": 0.0,
    }
    with torch.no_grad():
        for p, ids in enumerate(req["prompts"]):
            n = len(ids)
            t0 = time.time()
            cache, logits = prefill(model, ids)
            full = [layer.keys[0].clone() for layer in cache.layers]
            base = greedy(model, cache, logits, n, req["new_tokens"])
            result["baseline"].append({"prompt": p, "output_ids": base})
            logger.info("prompt %d: %d tokens, exact prefill+decode %.1fs", p, n, time.time() - t0)
            for cfg in req["configs"]:
                ratio = ratio_for(n, cfg["budget"]) if cfg["budget"] < n else 0.0
                press = getattr(kvpress, cfg["press"])(compression_ratio=ratio, **cfg["kwargs"])
                cache, logits = prefill(model, ids, press)
                positions = []
                for layer, kept in zip(full, cache.layers):
                    heads, worst = kept_positions(layer, kept.keys[0])
                    positions.append(heads)
                    result["key_match_max_error"] = max(result["key_match_max_error"], worst)
                output = greedy(model, cache, logits, n, req["new_tokens"])
                result["runs"].append(
                    {"prompt": p, "config": cfg["name"], "budget": cfg["budget"], "ratio": ratio,
                     "positions": positions, "output_ids": output}
                )  # fmt: skip
                logger.info("  %s budget %d: done", cfg["name"], cfg["budget"])
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
