"""Records of a run (one JSON line per system, workload, level and repeat), their medians, and the
Markdown table with the ratio of ours to the best peer, all from the same run."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

# the frontend workloads in the order the table shows them (peers.programs.PROGRAM_WORKLOADS)
PROGRAM_ORDER = ("mmlu", "hellaswag", "chat-short", "chat-long", "tot", "agent")


@dataclass(frozen=True)
class Row:
    """One table row: a metric of one workload (at one level) and which way is better."""

    workload: str
    level: int | None
    metric: str
    title: str
    higher_better: bool = True


def make_record(
    system: str, label: str, workload: str, level: int | None, repeat: int, metrics: dict
) -> dict:
    return {
        "system": system,
        "label": label,
        "workload": workload,
        "level": level,
        "repeat": repeat,
        "metrics": metrics,
    }


def append_record(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_records(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def medians(records: list[dict]) -> dict[tuple, dict[str, float]]:
    """{(system, workload, level): {metric: median over repeats}}; failed runs are left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if "error" in r["metrics"]:
            continue
        groups.setdefault((r["system"], r["workload"], r["level"]), []).append(r["metrics"])
    out = {}
    for key, runs in groups.items():
        names = {k for m in runs for k, v in m.items() if isinstance(v, int | float)}
        out[key] = {
            k: statistics.median(m[k] for m in runs if isinstance(m.get(k), int | float))
            for k in names
        }
    return out


def default_rows(records: list[dict]) -> list[Row]:
    """The rows the records have data for, in a fixed order."""
    titles = {
        "decode": ("tokens_per_s", "decode, {} concurrent x 128 tokens: tokens/s", True),
        "prefill": ("prompt_tokens_per_s", "prefill, 8 x 2,000-token prompts: tokens/s", True),
        "rss": ("rss_mib", "resident memory after the run, MiB (lower is better)", False),
    }
    levels = sorted({(r["workload"], r["level"] or 0) for r in records})
    rows: list[Row] = []
    for w, lvl in levels:
        level = lvl or None
        if w in titles:
            metric, title, hb = titles[w]
            rows.append(Row(w, level, metric, title.format(level), hb))
        elif w == "shared":
            rows.append(Row(w, level, "req_per_s", f"shared prefix, {level} clients: req/s"))
            rows.append(
                Row(
                    w,
                    level,
                    "ttft_p50_s",
                    f"shared prefix, {level} clients: TTFT p50 s (lower is better)",
                    False,
                )
            )
        elif w == "json":
            rows.append(Row(w, level, "programs_per_s", "JSON with a schema: req/s"))
            rows.append(Row(w, level, "valid", "JSON with a schema: valid share"))
        elif w.startswith("prog:"):
            name = w.removeprefix("prog:")
            rows.append(Row(w, level, "programs_per_s", f"{name}: programs/s"))
            rows.append(
                Row(w, level, "latency_p50_s", f"{name}: latency p50 s (lower is better)", False)
            )
            if any(r["workload"] == w and "accuracy" in r["metrics"] for r in records):
                rows.append(Row(w, level, "accuracy", f"{name}: accuracy"))
    order = ["decode", "prefill", "shared", *(f"prog:{w}" for w in PROGRAM_ORDER), "prog:"]
    order += ["json", "rss"]  # a stable sort: levels stay ascending within a workload
    return sorted(
        rows, key=lambda r: next(i for i, p in enumerate(order) if r.workload.startswith(p))
    )


def ratio(ours: float | None, peers: list[float], higher_better: bool) -> float | None:
    """ours / best peer (the best is the highest, or the lowest where lower is better)."""
    if ours is None or not peers:
        return None
    best = max(peers) if higher_better else min(peers)
    return ours / best if best else None


def is_peer(system: str) -> bool:
    """Another project's server; our own variants (ours-mixed, ours-compile...) are not peers."""
    return not system.startswith("ours")


def fmt(v: float | None) -> str:
    if v is None:
        return ""
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(records: list[dict], systems: list[tuple[str, str]], ours: str = "ours") -> str:
    """Markdown: a row per metric, a column per system (median over repeats), ours / best peer.
    Accuracy and valid share are results, not speed: no ratio for them."""
    med = medians(records)
    peers = [s for s, _ in systems if is_peer(s)]
    head = "| workload | " + " | ".join(label for _, label in systems) + " | ours / best peer |"
    lines = [head, "|---|" + "---:|" * (len(systems) + 1)]
    for row in default_rows(records):
        vals = {s: med.get((s, row.workload, row.level), {}).get(row.metric) for s, _ in systems}
        if all(v is None for v in vals.values()):
            continue
        r = None
        if row.metric not in ("accuracy", "valid"):
            r = ratio(
                vals.get(ours), [vals[p] for p in peers if vals[p] is not None], row.higher_better
            )
        cells = " | ".join(fmt(vals[s]) for s, _ in systems)
        lines.append(f"| {row.title} | {cells} | {'' if r is None else f'{r:.2f}x'} |")
    load = foreign_load(records)
    if load:
        cells = " | ".join(fmt(load.get(s)) for s, _ in systems)
        lines.append(f"| other processes' CPU during its workloads, cores (median) | {cells} | |")
    return "\n".join(lines)


def foreign_load(records: list[dict]) -> dict[str, float]:
    """Per system, the median over its workloads of the cores other processes used meanwhile."""
    per: dict[str, list[float]] = {}
    for r in records:
        v = r["metrics"].get("foreign_cores")
        if isinstance(v, int | float):
            per.setdefault(r["system"], []).append(v)
    return {s: statistics.median(vs) for s, vs in per.items()}
