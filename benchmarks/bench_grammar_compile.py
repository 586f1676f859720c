"""What compiling in a separate process (`--grammar-compile-timeout`) costs an ordinary spec.

For each backend, a JSON schema of the kind clients send (a dozen fields: strings, enums,
bounded and open numbers, an array) is compiled through the scheduler's GrammarCache in the
scheduler's own thread (timeout 0) and through the compile process (timeout 10 s), interleaved
over repeats. Each repeat adds a field of its own name, so neither our cache nor the backend's
own cache has seen the spec. Prints the median time to a usable grammar, first request (a miss)
and a second request for the same spec (a hit).
    .venv/bin/python benchmarks/bench_grammar_compile.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runtime.constrained.base import GrammarCache  # noqa: E402
from runtime.constrained.registry import create_grammar_backend  # noqa: E402
from runtime.model_loader.loader import load_tokenizer, prepare_model_folder  # noqa: E402

logger = logging.getLogger("bench_grammar_compile")

VOCAB = 49152
TEXT = {"type": "string"}
FIELDS = {
    "name": TEXT,
    "city": TEXT,
    "country": TEXT,
    "population": {"type": "integer"},
    "area_km2": {"type": "number"},
    "founded": {"type": "integer", "minimum": 0, "maximum": 2100},
    "capital": {"type": "boolean"},
    "climate": {"type": "string", "enum": ["arid", "temperate", "tropical", "polar"]},
    "languages": {"type": "array", "items": TEXT, "maxItems": 5},
    "mayor": {"type": "string"},
    "website": {"type": "string", "pattern": "https://[a-z.]{3,40}"},
}


def schema(repeat: int) -> str:
    props = {**FIELDS, f"note_{repeat}": TEXT}
    return json.dumps({"type": "object", "properties": props, "required": list(props)})


def timed_get(cache: GrammarCache, spec: str) -> float:
    t = time.perf_counter()
    cache.get("json_schema", spec).result()
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tokenizer = load_tokenizer(prepare_model_folder(None))
    for name in ("xgrammar", "outlines"):
        backend = create_grammar_backend(name, tokenizer, VOCAB)
        caches = {
            "thread": GrammarCache(backend),
            "process": GrammarCache(backend, compile_timeout=10),
        }
        caches["process"].get("regex", "[0-9]+").result()  # the child started: not a spec's cost
        times = {mode: {"miss": [], "hit": []} for mode in caches}
        for r in range(args.repeats):
            order = list(caches) if r % 2 == 0 else list(reversed(caches))
            for mode in order:
                spec = schema(r)
                times[mode]["miss"].append(timed_get(caches[mode], spec))
                times[mode]["hit"].append(timed_get(caches[mode], spec))
        for mode, cache in caches.items():
            logger.info(
                "%-8s %-8s miss %7.2f ms   hit %6.3f ms   (median of %d)",
                name,
                mode,
                statistics.median(times[mode]["miss"]),
                statistics.median(times[mode]["hit"]),
                args.repeats,
            )
            cache.shutdown()


if __name__ == "__main__":
    main()
