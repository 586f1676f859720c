"""Our KV compression selection against kvpress 0.5.5, position for position, and greedy output.

    scripts/peers.sh kvpress      # once: kvpress into .venv-kvpress
    PYTHONPATH=$PWD .venv/bin/python benchmarks/kv_compression_vs_kvpress.py [--lengths 500 1300]
        [--budgets 128 512] [--url http://127.0.0.1:PORT]   # --url: also our server's output

On the default model (the safetensors folder our loader writes from the GGUF file), float32:
kvpress runs in its own environment (`peers/kvpress_positions.py`) and reports, per prompt,
press and budget, the positions each layer and KV head keeps and its greedy output. Here the
same model under transformers gives every layer's post-rotary keys and queries, which
`select_positions` turns into our choice; the table shows the share of kvpress's kept positions
we keep too, the share of (layer, head) sets that are equal, and whether greedy output over the
cache pruned to our positions equals kvpress's. With --url, our server's output with
`sampling_params.kv_compression` is compared as well (start it with `--dtype float32
--quantization none` so it computes what transformers does).
`--fixture PATH` writes the small kvpress record that tests/runtime/kv_compression reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))
import hf_attention_inputs as hf  # noqa: E402
import kv_tasks  # noqa: E402

logger = logging.getLogger("kv_compression_vs_kvpress")

# (name, kvpress press, its options, our method, our options): the same rule both sides.
CONFIGS = [
    ("streamingllm", "StreamingLLMPress", {"n_sink": 4}, "streamingllm", {"n_sink": 4}),
    ("snapkv", "SnapKVPress", {"window_size": 64, "kernel_size": 5}, "snapkv", {}),
    ("pyramidkv", "PyramidKVPress", {"window_size": 64, "kernel_size": 5, "beta": 20}, "pyramidkv", {}),
    ("pyramidkv-w16-b4", "PyramidKVPress", {"window_size": 16, "kernel_size": 5, "beta": 4},
     "pyramidkv", {"window_size": 16, "beta": 4}),
    ("observed-attention", "ObservedAttentionPress", {}, "h2o", {"recent_size": 0}),
]  # fmt: skip
FIXTURE_CONFIGS = [
    ("streamingllm", "StreamingLLMPress", {"n_sink": 4}, "streamingllm", {"n_sink": 4}),
    ("snapkv-w16", "SnapKVPress", {"window_size": 16, "kernel_size": 5}, "snapkv",
     {"window_size": 16}),
    ("pyramidkv-w16-b2", "PyramidKVPress", {"window_size": 16, "kernel_size": 5, "beta": 2},
     "pyramidkv", {"window_size": 16, "beta": 2}),
    ("observed-attention", "ObservedAttentionPress", {}, "h2o", {"recent_size": 0}),
]  # fmt: skip
FIXTURE_LAYERS = (0, 9, 19, 29)


def run_kvpress_worker(script: str, request: dict):
    """Runs `peers/<script>` in kvpress's own virtual environment on `request`; its JSON out."""
    py = os.path.join(os.path.dirname(HERE), ".venv-kvpress", "bin", "python")
    if not os.path.exists(py):
        raise SystemExit(f"{py} is missing: `scripts/peers.sh kvpress` installs kvpress")
    with tempfile.TemporaryDirectory() as tmp:
        req_path, out_path = os.path.join(tmp, "req.json"), os.path.join(tmp, "out.json")
        with open(req_path, "w") as f:
            json.dump(request, f)
        worker = os.path.join(HERE, "peers", script)
        subprocess.run([py, worker, req_path, out_path], check=True)
        with open(out_path) as f:
            return json.load(f)


def run_kvpress(folder, prompts, configs, budgets, new_tokens: int, extra=()) -> dict:
    """`extra`: (config name, budget) pairs run besides every config at every budget."""
    plan = [(c, b) for b in budgets for c in configs]
    plan += [(c, b) for name, b in extra for c in configs if c[0] == name]
    request = {
        "folder": folder,
        "prompts": prompts,
        "new_tokens": new_tokens,
        "configs": [
            {"name": name, "press": press, "kwargs": kw, "budget": b}
            for (name, press, kw, _, _), b in plan
        ],
    }
    return run_kvpress_worker("kvpress_positions.py", request)


def ours(method, options, keys, queries, budget):
    """Our kept positions per layer, [Hkv, k_l] each."""
    import torch

    from runtime.kv_compression.methods import queries_needed, select_positions, validate_spec

    n = keys[0].shape[1]
    need = queries_needed(validate_spec({"method": method, "budget": budget, **options}), n)
    out = []
    for layer, (k, q) in enumerate(zip(keys, queries)):
        out.append(
            select_positions(
                method, keys=k, queries=q[:, n - need :] if need else None, budget=budget,
                layer=layer, num_layers=len(keys), options=options,
            ).to(torch.long)
        )  # fmt: skip
    return out


def agreement(our_pos, their_pos) -> tuple[float, float]:
    """(share of their kept positions we keep, share of (layer, head) sets equal)."""
    kept = total = equal = sets = 0
    for ours_l, theirs_l in zip(our_pos, their_pos):
        for o, t in zip(ours_l.tolist(), theirs_l):
            common = len(set(o) & set(t))
            kept, total = kept + common, total + len(t)
            equal, sets = equal + (o == t), sets + 1
    return kept / total, equal / sets


def server_output(url: str, ids, spec, new_tokens: int) -> list[int]:
    import urllib.request

    body = {
        "input_ids": ids,
        "sampling_params": {"temperature": 0, "max_new_tokens": new_tokens,
                            "ignore_eos": True, "kv_compression": spec},
    }  # fmt: skip
    req = urllib.request.Request(
        f"{url}/generate", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)["output_ids"]


def write_fixture(path, folder, tok) -> None:
    task = kv_tasks.needle(tok, 140, 0.4, 0)
    ids = kv_tasks.turn_ids(tok, task, [])
    budget = 48
    res = run_kvpress(folder, [ids], FIXTURE_CONFIGS, [budget], 4)
    runs = [
        {"name": name, "press": press, "press_options": kw, "method": method, "options": opts,
         "positions": {str(layer): run["positions"][layer] for layer in FIXTURE_LAYERS}}
        for (name, press, kw, method, opts), run in zip(FIXTURE_CONFIGS, res["runs"])
    ]  # fmt: skip
    record = {
        "generated_by": "PYTHONPATH=$PWD .venv/bin/python benchmarks/kv_compression_vs_kvpress.py"
        f" --fixture {os.path.relpath(path, os.path.dirname(HERE))}",
        "kvpress": res["kvpress"], "transformers": res["transformers"],
        "model": "SmolLM2-135M-Instruct (float32, from the default GGUF)",
        "input_ids": ids, "budget": budget, "runs": runs,
    }  # fmt: skip
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, separators=(",", ":"))
    logger.info("wrote %s (%d tokens, %d presses)", path, len(ids), len(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[500, 1300])
    ap.add_argument("--budgets", type=int, nargs="+", default=[128, 512])
    ap.add_argument(
        "--pyramid-budget",
        type=int,
        default=1280,
        help="also PyramidKV's defaults at this budget, where its schedule leaves the SnapKV"
        " fallback (budget >= beta * window_size = 1280); on prompts longer than it",
    )
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--url", help="our server, for its greedy output with the same spec")
    ap.add_argument("--fixture", help="write the small test record here and stop")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from runtime.model_loader.loader import load_tokenizer, prepare_model_folder

    folder = prepare_model_folder(None, None)
    tok = load_tokenizer(folder)
    if args.fixture:
        return write_fixture(args.fixture, folder, tok)
    tasks = [kv_tasks.needle(tok, args.lengths[0], 0.3, 0)]
    tasks += [kv_tasks.documents(tok, n, 0.5, i) for i, n in enumerate(args.lengths[1:])]
    prompts = [kv_tasks.turn_ids(tok, t, []) for t in tasks]
    extra = [("pyramidkv", args.pyramid_budget), ("snapkv", args.pyramid_budget)]
    res = run_kvpress(folder, prompts, CONFIGS, args.budgets, args.new_tokens, extra)
    logger.info("kvpress %s, transformers %s there; key match error %.1e", res["kvpress"],
                res["transformers"], res["key_match_max_error"])  # fmt: skip
    by_name = {c[0]: c for c in CONFIGS}
    model = hf.load_model(folder)
    print(f"{'prompt':>6} {'press':<20} {'budget':>6} {'kept':>7} {'sets':>7} {'greedy':>7}"
          + (f" {'server':>7}" if args.url else ""))  # fmt: skip
    for p, ids in enumerate(prompts):
        keys, values, queries, logits = hf.keys_and_queries(model, ids)
        base = res["baseline"][p]["output_ids"]
        ours_base = hf.greedy_pruned(
            model, keys, values, logits, [None] * len(keys), args.new_tokens
        )
        print(
            f"{p:>6} {'(exact KV)':<20} {len(ids):>6} {'':>7} {'':>7} {str(ours_base == base):>7}"
        )
        for run in (r for r in res["runs"] if r["prompt"] == p and r["budget"] < len(ids)):
            _, _, _, method, opts = by_name[run["config"]]
            pos = ours(method, opts, keys, queries, run["budget"])
            kept, sets = agreement(pos, run["positions"])
            out = hf.greedy_pruned(model, keys, values, logits, pos, args.new_tokens)
            line = (f"{p:>6} {run['config']:<20} {run['budget']:>6} {kept:>7.4f} {sets:>7.4f}"
                    f" {str(out == run['output_ids']):>7}")  # fmt: skip
            if args.url:
                spec = {"method": method, "budget": run["budget"], **opts}
                served = server_output(args.url, ids, spec, args.new_tokens)
                line += f" {str(served == run['output_ids']):>7}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
