"""Figures from `bench_peers.py`'s JSON records: what a reader wants at a glance.

    .venv/bin/python benchmarks/plot.py [benchmarks/results/peers.jsonl] [--out benchmarks/figures]

Each point is the median over the run's repeats; the whiskers span the repeats. Needs the
`bench` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peers.report import PROGRAM_ORDER, read_records  # noqa: E402

COLORS = {
    "ours": "#d62728",
    "ours-bf16": "#ff9896",
    "ours-compile": "#8c1515",
    "ours-mixed": "#e377c2",
    "ours-fp32": "#f7b6d2",
    "vllm": "#1f77b4",
    "vllm-fp32": "#9ecae1",
    "llamacpp": "#2ca02c",
}


def series(records: list[dict], workload: str, metric: str) -> dict[str, dict]:
    """{system: {level: [values over repeats]}} for one workload's metric, failures left out."""
    out: dict[str, dict] = {}
    for r in records:
        v = r["metrics"].get(metric)
        if r["workload"] == workload and isinstance(v, int | float):
            out.setdefault(r["system"], {}).setdefault(r["level"], []).append(v)
    return out


def labels(records: list[dict]) -> dict[str, str]:
    return {r["system"]: r["label"] for r in records}


def _lines(ax, records, workload, metric, title, xlabel, ylabel) -> None:
    names = labels(records)
    for system, by_level in series(records, workload, metric).items():
        xs = sorted(by_level)
        med = [statistics.median(by_level[x]) for x in xs]
        lo = [m - min(by_level[x]) for m, x in zip(med, xs)]
        hi = [max(by_level[x]) - m for m, x in zip(med, xs)]
        ax.errorbar(
            xs, med, yerr=[lo, hi], marker="o", capsize=3, label=names[system],
            color=COLORS.get(system),
        )  # fmt: skip
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _bars(ax, records, workloads: list[str], metric: str, title: str, ylabel: str) -> None:
    names = labels(records)
    per = {w: series(records, w, metric) for w in workloads}
    systems = [s for s in COLORS if any(s in per[w] for w in workloads)]
    width = 0.8 / max(len(systems), 1)
    for i, system in enumerate(systems):
        meds = []
        for w in workloads:
            vals = [v for vs in per[w].get(system, {}).values() for v in vs]
            meds.append(statistics.median(vals) if vals else 0)
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(workloads))]
        ax.bar(xs, meds, width, label=names.get(system, system), color=COLORS.get(system))
    ax.set_xticks(range(len(workloads)), [w.removeprefix("prog:") for w in workloads])
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    if systems:
        ax.legend(fontsize=8)


def plot_all(records: list[dict], out_dir: str) -> list[str]:
    """Writes the PNGs that the records have data for; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    have = {r["workload"] for r in records if "error" not in r["metrics"]}
    if "decode" in have or "shared" in have:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        _lines(axes[0], records, "decode", "tokens_per_s", "Decode, 128 tokens per stream",
               "concurrent streams", "output tokens/s")  # fmt: skip
        _lines(axes[1], records, "shared", "req_per_s", "Shared-prefix load: throughput",
               "clients", "requests/s")  # fmt: skip
        _lines(axes[2], records, "shared", "ttft_p50_s", "Shared-prefix load: TTFT p50",
               "clients", "seconds, log scale (lower is better)")  # fmt: skip
        axes[2].set_yscale("log")
        save(fig, "serving.png")
    progs = [f"prog:{w}" for w in PROGRAM_ORDER if f"prog:{w}" in have]
    progs += ["json"] if "json" in have else []
    if progs:
        fig, ax = plt.subplots(figsize=(10, 4))
        _bars(ax, records, progs, "programs_per_s", "Frontend programs (run_batch, 8 threads)",
              "programs/s")  # fmt: skip
        save(fig, "programs.png")
    if "prefill" in have or "rss" in have:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        _bars(axes[0], records, ["prefill"], "prompt_tokens_per_s", "Prefill, 8 x 2,000 tokens",
              "prompt tokens/s")  # fmt: skip
        _bars(axes[1], records, ["rss"], "rss_mib", "Resident memory after the run",
              "MiB, all processes (lower is better)")  # fmt: skip
        save(fig, "prefill_memory.png")
    headline = headline_ratios(records)
    if headline:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(headline) + 1.2))
        names = list(headline)
        vals = [headline[n] for n in names]
        colors = ["#2ca02c" if v >= 1 else "#d62728" for v in vals]
        ax.barh(names, [v - 1 for v in vals], left=1, color=colors)  # from 1: lead or trail
        ax.axvline(1, color="black", lw=1)
        ax.set_xscale("log", base=2)
        ax.invert_yaxis()
        ax.set(title="Ours / best peer (right of 1: we lead)", xlabel="ratio of medians, log scale")
        for y, v in enumerate(vals):
            ax.text(max(v, 1), y, f" {v:.2f}x", va="center", fontsize=8)
        save(fig, "headline.png")
    return written


def headline_ratios(records: list[dict]) -> dict[str, float]:
    """Speed rows of the table as ours / best peer (TTFT inverted so right is better)."""
    from peers.report import default_rows, is_peer, medians

    med = medians(records)
    systems = {r["system"] for r in records}
    peers = [s for s in systems if is_peer(s)]
    out = {}
    for row in default_rows(records):
        if row.metric in ("accuracy", "valid", "rss_mib", "latency_p50_s"):
            continue
        ours = med.get(("ours", row.workload, row.level), {}).get(row.metric)
        vals = [med.get((p, row.workload, row.level), {}).get(row.metric) for p in peers]
        vals = [v for v in vals if v]
        if not ours or not vals:
            continue
        name = row.title.replace(" (lower is better)", "")
        out[name] = ours / max(vals) if row.higher_better else min(vals) / ours
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", nargs="?", default=os.path.join(HERE, "results", "peers.jsonl"))
    ap.add_argument("--out", default=os.path.join(HERE, "figures"))
    args = ap.parse_args(argv)
    for path in plot_all(read_records(args.records), args.out):
        print(path)


if __name__ == "__main__":
    main()
