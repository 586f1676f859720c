"""JSON decoding with jump-forward on and off, with both grammar backends.

A schema with many fixed keys (a user profile of 12 fields, enums and bounded numbers among
them), filled for a list of people, one request at a time through the in-process Engine so
that each request's forward passes can be read off the scheduler's step counter. Prints, per
configuration: output tokens/s, forward passes per request, tokens appended by jump-forward,
and end-to-end latency.
    .venv/bin/python benchmarks/bench_json_decode.py [--requests 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

import jsonschema

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runtime import Engine  # noqa: E402

logger = logging.getLogger("bench_json_decode")

TEXT = {"type": "string", "minLength": 1, "maxLength": 16}
SCHEMA = {
    "type": "object",
    "properties": {
        "first_name": TEXT,
        "last_name": TEXT,
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": TEXT,
        "country": TEXT,
        "occupation": TEXT,
        "employed": {"type": "boolean"},
        "marital_status": {"type": "string", "enum": ["single", "married", "divorced"]},
        "favorite_color": {"type": "string", "enum": ["red", "green", "blue", "other"]},
        "height_cm": {"type": "integer", "minimum": 50, "maximum": 250},
        "email_verified": {"type": "boolean"},
        "account_tier": {"type": "string", "enum": ["free", "pro", "enterprise"]},
    },
    "required": [
        "first_name",
        "last_name",
        "age",
        "city",
        "country",
        "occupation",
        "employed",
        "marital_status",
        "favorite_color",
        "height_cm",
        "email_verified",
        "account_tier",
    ],
}
PEOPLE = [
    "Alice Martin, 34, a nurse in Lyon, France",
    "Bob Smith, 51, a carpenter in Leeds, England",
    "Chen Wei, 28, a software engineer in Shanghai, China",
    "Dana Cruz, 45, a teacher in Austin, USA",
    "Erik Lund, 63, a retired pilot in Oslo, Norway",
    "Fatima Khan, 22, a student in Lahore, Pakistan",
    "Giulia Rossi, 39, an architect in Milan, Italy",
    "Hiro Tanaka, 30, a chef in Osaka, Japan",
]


def run_config(backend: str, jump_forward: bool, prompts: list[str], max_new: int) -> dict:
    with Engine(
        max_total_tokens=8192,
        grammar_backend=backend,
        disable_jump_forward=not jump_forward,
        log_level="warning",
    ) as engine:
        params = {"json_schema": json.dumps(SCHEMA), "temperature": 0, "max_new_tokens": max_new}
        engine.generate("Warm-up:", {**params, "max_new_tokens": 4})  # compiles the grammar
        passes, tokens, latency, jumped, valid = [], [], [], 0, 0
        for prompt in prompts:
            before = engine.get_server_info()
            t0 = time.perf_counter()
            out = engine.generate(prompt, params)
            latency.append(time.perf_counter() - t0)
            after = engine.get_server_info()
            passes.append(after["steps"] - before["steps"])
            jumped += after["jump_forward_tokens"] - before["jump_forward_tokens"]
            tokens.append(out["meta_info"]["completion_tokens"])
            try:
                jsonschema.validate(json.loads(out["text"]), SCHEMA)
                valid += 1
            except (ValueError, jsonschema.ValidationError):
                logger.warning("invalid output: %r", out["text"])
    return {
        "backend": backend,
        "jump_forward": jump_forward,
        "tok_per_s": sum(tokens) / sum(latency),
        "passes": statistics.mean(passes),
        "tokens": statistics.mean(tokens),
        "jumped": jumped / len(prompts),
        "latency": statistics.mean(latency),
        "valid": valid,
        "n": len(prompts),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=len(PEOPLE))
    ap.add_argument("--max-new-tokens", type=int, default=256)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prompts = [f"Write the profile of {p} as JSON.\n" for p in (PEOPLE * 4)[: args.requests]]
    rows = []
    for backend in ("xgrammar", "outlines"):
        for jf in (False, True):
            row = run_config(backend, jf, prompts, args.max_new_tokens)
            rows.append(row)
            logger.info("%s", row)
    logger.info(
        "\n%d requests, one at a time, greedy, a 12-field schema\n\n"
        "| backend | jump-forward | output tok/s | forward passes / request | output tokens / "
        "request | jumped tokens / request | latency (s) | valid |\n|---|---|---|---|---|---|---|---|",
        len(prompts),
    )
    for r in rows:
        logger.info(
            "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.2f | %d/%d |",
            r["backend"],
            "on" if r["jump_forward"] else "off",
            r["tok_per_s"],
            r["passes"],
            r["tokens"],
            r["jumped"],
            r["latency"],
            r["valid"],
            r["n"],
        )
    for backend in ("xgrammar", "outlines"):
        off, on = (r for r in rows if r["backend"] == backend)
        logger.info(
            "%s: jump-forward needs %.0f%% fewer forward passes, %.2fx the end-to-end speed",
            backend,
            100 * (1 - on["passes"] / off["passes"]),
            off["latency"] / on["latency"],
        )


if __name__ == "__main__":
    main()
