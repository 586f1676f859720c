"""The figure of `bench_kv_compression.py`: accuracy against KV budget, one panel per task and
filler length (the two-turn task's turns apart), one line per method and options (drawn a hair
apart where they share values), the exact KV as a dashed reference.

    .venv/bin/python benchmarks/plot_kv_compression.py [benchmarks/results/kv_compression.jsonl]
        [--run TAG [TAG ...]] [--table] [--out benchmarks/figures/kv_compression_accuracy.png]

Draws the runs `--run` names (default: the latest in the file) together, our server's answers
only. Needs the `bench` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
METHOD_COLORS = {
    "snapkv": "#d62728",
    "snapkv:window_size=16": "#9467bd",
    "pyramidkv": "#ff7f0e",
    "streamingllm": "#1f77b4",
    "h2o": "#2ca02c",
}
TITLES = {
    ("needle", 0): "Pass code in filler",
    ("documents", 0): "One of four documents",
    ("two_keys", 0): "Two keys, turn 1",
    ("two_keys", 1): "Two keys, turn 2 (the other key)",
}


def filler_tokens(record: dict) -> int:
    """The task's filler length; records older than the field ran one length (`--lengths
    2000`), whose prompts are that length plus the template and question, to the thousand."""
    return record.get("n_tokens") or 1000 * round(record["prompt_tokens"] / 1000)


def panels(acc: dict) -> list[tuple[str, int, int, str]]:
    """(kind, turn, filler tokens, title) of every panel with answers, in TITLES' order."""
    have = sorted({k[:3] for k in acc}, key=lambda k: (list(TITLES).index(k[:2]), k[2]))
    return [(k, t, n, f"{TITLES[(k, t)]}, {n:,} tok") for k, t, n in have]


def read_run(path: str, runs: list[str] | None) -> list[dict]:
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if r.get("system") == "ours" and not r.get("smoke")]
    tags = sorted({r["run"] for r in records if "run" in r})
    if not tags:
        raise SystemExit(f"{path}: no tagged run of our server")
    runs = runs or tags[-1:]
    missing = set(runs) - set(tags)
    if missing:
        raise SystemExit(f"{path}: no run of our server tagged {sorted(missing)}")
    return [r for r in records if r.get("run") in runs]


def accuracy(records: list[dict]) -> dict:
    """{(kind, turn, filler tokens, method, budget): (correct, total)}"""
    cells = defaultdict(lambda: [0, 0])
    for r in records:
        cell = cells[(r["kind"], r["turn"], filler_tokens(r), r["method"], r["budget"])]
        cell[0] += bool(r["correct"])
        cell[1] += 1
    return {k: tuple(v) for k, v in cells.items()}


def plot(records: list[dict], out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = accuracy(records)
    shown = panels(acc)
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.9), squeeze=False)
    for ax, (kind, turn, length, title) in zip(axes[0], shown):
        full = acc.get((kind, turn, length, "full", 0))
        if full:
            ax.axhline(full[0] / full[1], color="black", ls="--", lw=1.2, label="full KV")
        for i, (method, color) in enumerate(METHOD_COLORS.items()):
            shift = (i - 2) * 0.015  # lines on the same values stay apart
            pts = sorted((b, c / n + shift) for (k, t, ln, m, b), (c, n) in acc.items()
                         if (k, t, ln, m) == (kind, turn, length, method))  # fmt: skip
            if pts:
                label = method.replace(":window_size=", " window ")
                ax.plot(*zip(*pts), marker="osv^D"[i], color=color, label=label, alpha=0.85)
        cell = (kind, turn, length)
        n = full[1] if full else max(v[1] for k, v in acc.items() if k[:3] == cell)
        ax.set(title=f"{title} (n={n})", xlabel="KV budget (tokens per layer and head)",
               ylim=(-0.05, 1.05))  # fmt: skip
        ax.title.set_fontsize(9)
        ax.set_xscale("log", base=2)
        budgets = sorted({k[4] for k in acc if k[3] != "full"})
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def table(records: list[dict]) -> str:
    """The run as a Markdown table: a row per method and budget, a column per panel."""
    acc = accuracy(records)
    cols = panels(acc)
    order = ["full", *METHOD_COLORS]
    rows = sorted({k[3:] for k in acc}, key=lambda x: (order.index(x[0]), x[1]))
    out = ["| method | budget | " + " | ".join(c[3] for c in cols) + " |"]
    out.append("|---|---:|" + "---:|" * len(cols))
    for m, b in rows:
        cells = [acc.get((k, t, n, m, b)) for k, t, n, _ in cols]
        vals = [f"{c}/{n}" if n else "" for c, n in (x or (0, 0) for x in cells)]
        out.append(f"| {m} | {b or 'exact'} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "records", nargs="?", default=os.path.join(HERE, "results", "kv_compression.jsonl")
    )
    ap.add_argument("--run", nargs="+", help="runs' tags (start times); default: the latest")
    ap.add_argument("--out", default=os.path.join(HERE, "figures", "kv_compression_accuracy.png"))
    ap.add_argument("--table", action="store_true", help="also print a Markdown table")
    args = ap.parse_args(argv)
    records = read_run(args.records, args.run)
    if args.table:
        print(table(records))
    print(plot(records, args.out))


if __name__ == "__main__":
    main()
