"""The figure of `bench_kv_compression.py`: accuracy against KV budget, one panel per task (the
two-turn task's turns apart), one line per method (drawn a hair apart where they share values),
the exact KV as a dashed reference.

    .venv/bin/python benchmarks/plot_kv_compression.py [benchmarks/results/kv_compression.jsonl]
        [--run TAG] [--table] [--out benchmarks/figures/kv_compression_accuracy.png]

Draws one run (the latest in the file unless `--run` names one), our server's answers only.
Needs the `bench` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
METHOD_COLORS = {
    "snapkv": "#d62728",
    "pyramidkv": "#ff7f0e",
    "streamingllm": "#1f77b4",
    "h2o": "#2ca02c",
}
PANELS = [
    ("needle", 0, "Pass code in filler"),
    ("documents", 0, "One of four documents"),
    ("two_keys", 0, "Two keys, turn 1"),
    ("two_keys", 1, "Two keys, turn 2 (the other key)"),
]


def read_run(path: str, run: str | None) -> list[dict]:
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if r.get("system") == "ours" and not r.get("smoke")]
    tags = sorted({r["run"] for r in records if "run" in r})
    if not tags:
        raise SystemExit(f"{path}: no tagged run of our server")
    run = run or tags[-1]
    return [r for r in records if r.get("run") == run]


def accuracy(records: list[dict]) -> dict:
    """{(kind, turn, method, budget): (correct, total)}"""
    cells = defaultdict(lambda: [0, 0])
    for r in records:
        cell = cells[(r["kind"], r["turn"], r["method"], r["budget"])]
        cell[0] += bool(r["correct"])
        cell[1] += 1
    return {k: tuple(v) for k, v in cells.items()}


def plot(records: list[dict], out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = accuracy(records)
    panels = [p for p in PANELS if any(k[:2] == p[:2] for k in acc)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), squeeze=False)
    for ax, (kind, turn, title) in zip(axes[0], panels):
        full = acc.get((kind, turn, "full", 0))
        if full:
            ax.axhline(full[0] / full[1], color="black", ls="--", lw=1.2, label="full KV")
        for i, (method, color) in enumerate(METHOD_COLORS.items()):
            shift = (i - 1.5) * 0.015  # lines on the same values stay apart
            pts = sorted((b, c / n + shift) for (k, t, m, b), (c, n) in acc.items()
                         if (k, t, m) == (kind, turn, method))  # fmt: skip
            if pts:
                ax.plot(*zip(*pts), marker="os^D"[i], color=color, label=method, alpha=0.85)
        n = full[1] if full else max(v[1] for k, v in acc.items() if k[:2] == (kind, turn))
        ax.set(title=f"{title} (n={n})", xlabel="KV budget (tokens per layer and head)",
               ylim=(-0.05, 1.05))  # fmt: skip
        ax.set_xscale("log", base=2)
        budgets = sorted({k[3] for k in acc if k[2] != "full"})
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
    cols = [p for p in PANELS if any(k[:2] == p[:2] for k in acc)]
    order = ["full", *METHOD_COLORS]
    rows = sorted({(m, b) for (_, _, m, b) in acc}, key=lambda x: (order.index(x[0]), x[1]))
    out = ["| method | budget | " + " | ".join(c[2] for c in cols) + " |"]
    out.append("|---|---:|" + "---:|" * len(cols))
    for m, b in rows:
        cells = [acc.get((k, t, m, b)) for k, t, _ in cols]
        vals = [f"{c}/{n}" if n else "" for c, n in (x or (0, 0) for x in cells)]
        out.append(f"| {m} | {b or 'exact'} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "records", nargs="?", default=os.path.join(HERE, "results", "kv_compression.jsonl")
    )
    ap.add_argument("--run", help="the run's tag (its start time); default: the latest")
    ap.add_argument("--out", default=os.path.join(HERE, "figures", "kv_compression_accuracy.png"))
    ap.add_argument("--table", action="store_true", help="also print a Markdown table")
    args = ap.parse_args(argv)
    records = read_run(args.records, args.run)
    if args.table:
        print(table(records))
    print(plot(records, args.out))


if __name__ == "__main__":
    main()
