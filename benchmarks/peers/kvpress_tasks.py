"""The long-context tasks of `bench_kv_compression.py` through kvpress, for reference.

Runs in kvpress's own environment, started by the benchmark:
    .venv-kvpress/bin/python benchmarks/peers/kvpress_tasks.py REQUEST.json OUT.json

REQUEST: {"folder", "new_tokens", "tasks": [{"kind", "n_tokens", "depth", "seed"}],
          "configs": [{"method", "press" (None: exact KV), "kwargs", "budget"}]}.
A conversation keeps its compressed cache: the first turn's prompt is pruned by the press
after its prefill; the second turn's new tokens (the first answer, the next question) are
appended uncompressed to that pruned cache, one token at a time, as kvpress's pipeline asks a
further question over a compressed context.
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
sys.path.insert(0, os.path.dirname(HERE))
import kv_tasks  # noqa: E402
from kvpress_positions import greedy, prefill, ratio_for, sdpa, start_worker  # noqa: E402

logger = logging.getLogger("kvpress_tasks")


def answer(model, tok, tokens: list[int]) -> str:
    """The text up to the end of the turn, as our server stops there: the next turn's prompt
    holds this answer, and text decoded past it would make that prompt differ from ours."""
    eos = model.generation_config.eos_token_id
    eos = {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
    end = next((i for i, t in enumerate(tokens) if t in eos), len(tokens))
    return tok.decode(tokens[:end], skip_special_tokens=True)


def run_task(model, tok, task, cfg, new_tokens: int) -> list[dict]:
    ids = kv_tasks.turn_ids(tok, task, [])
    press = None
    if cfg["press"] is not None and cfg["budget"] < len(ids):
        ratio = ratio_for(len(ids), cfg["budget"])
        press = getattr(kvpress, cfg["press"])(compression_ratio=ratio, **cfg["kwargs"])
    t0 = time.time()
    cache, logits = prefill(model, ids, press)
    kept = [layer.keys.shape[2] for layer in cache.layers]
    out = greedy(model, cache, logits, len(ids), new_tokens)
    records, answers, full = [], [], ids
    for turn, (_, expected) in enumerate(task.turns):
        if turn:
            for layer, length in zip(cache.layers, kept):  # the answer's decode KV goes
                layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]
            full = kv_tasks.turn_ids(tok, task, answers)
            assert full[: len(ids)] == ids, "the conversation must extend the first prompt"
            with sdpa(model):
                for i, token in enumerate(full[len(ids) :]):
                    logits = model(
                        input_ids=torch.tensor([[token]]), past_key_values=cache,
                        position_ids=torch.tensor([[len(ids) + i]]),
                    ).logits[0, -1]  # fmt: skip
            out = greedy(model, cache, logits, len(full), new_tokens)
        text = answer(model, tok, out)
        answers.append(text)
        records.append(
            {"turn": turn, "prompt_tokens": len(full), "text": text,
             "correct": kv_tasks.correct(text, expected),
             "kv_kept": sum(kept) / len(kept), "seconds": time.time() - t0}
        )  # fmt: skip
    return records


def main(request_path: str, out_path: str) -> None:
    req, model = start_worker(request_path, "eager")
    tok = AutoTokenizer.from_pretrained(req["folder"])
    results = []
    with torch.no_grad():
        for spec in req["tasks"]:
            task = kv_tasks.KINDS[spec["kind"]](tok, spec["n_tokens"], spec["depth"], spec["seed"])
            for cfg in req["configs"]:
                for rec in run_task(model, tok, task, cfg, req["new_tokens"]):
                    results.append(
                        {**spec, "method": cfg["method"], "budget": cfg["budget"], **rec}
                    )
                    logger.info("kvpress %s %s: %s", spec["kind"], cfg["method"], rec["correct"])
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
