"""bench_peers at tiny scale without the peers: records, medians and ratios, the plan per system,
skipping a peer that is not installed, the generated program data, and the serving workloads
against a stand-in OpenAI server (no model)."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_peers  # noqa: E402
from peers import programs, report, systems, workloads  # noqa: E402
from peers.prompts import TextMaker, shared_prefix_prompts  # noqa: E402


def rec(system, workload, level, repeat, **metrics):
    return report.make_record(system, system.upper(), workload, level, repeat, metrics)


RECORDS = [
    rec("ours", "decode", 1, 0, tokens_per_s=10.0, foreign_cores=0.1),
    rec("ours", "decode", 1, 1, tokens_per_s=14.0, foreign_cores=0.3),
    rec("ours", "decode", 1, 2, tokens_per_s=100.0),
    rec("vllm", "decode", 1, 0, tokens_per_s=30.0),
    rec("vllm", "decode", 1, 1, tokens_per_s=40.0),
    rec("llamacpp", "decode", 1, 0, tokens_per_s=80.0),
    rec("ours", "shared", 16, 0, req_per_s=3.0, ttft_p50_s=1.0),
    rec("vllm", "shared", 16, 0, req_per_s=2.0, ttft_p50_s=2.0),
    rec("vllm", "shared", 16, 1, error="boom"),
    rec("ours", "prog:mmlu", None, 0, programs_per_s=1.0, latency_p50_s=2.0, accuracy=0.5),
    rec("vllm", "prog:mmlu", None, 0, programs_per_s=2.0, latency_p50_s=1.0, accuracy=0.25),
    rec("ours", "rss", None, 0, rss_mib=900.0),
    rec("vllm", "rss", None, 0, rss_mib=3000.0),
]
SYSTEMS = [("ours", "OURS"), ("vllm", "VLLM"), ("llamacpp", "LLAMACPP")]


def test_records_round_trip(tmp_path):
    path = tmp_path / "r.jsonl"
    for r in RECORDS:
        report.append_record(str(path), r)
    assert report.read_records(str(path)) == RECORDS


def test_medians_leave_out_failures():
    med = report.medians(RECORDS)
    assert med[("ours", "decode", 1)]["tokens_per_s"] == 14.0
    assert med[("vllm", "decode", 1)]["tokens_per_s"] == 35.0
    assert med[("vllm", "shared", 16)]["req_per_s"] == 2.0


def test_ratio_picks_the_best_peer_each_way():
    assert report.ratio(14.0, [35.0, 80.0], higher_better=True) == pytest.approx(14 / 80)
    assert report.ratio(1.0, [2.0, 4.0], higher_better=False) == pytest.approx(0.5)
    assert report.ratio(None, [1.0], True) is None and report.ratio(1.0, [], True) is None


def test_table_rows_and_ratios():
    lines = report.table(RECORDS, SYSTEMS).splitlines()
    assert lines[0] == "| workload | OURS | VLLM | LLAMACPP | ours / best peer |"
    row = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert row["decode, 1 concurrent x 128 tokens: tokens/s"].endswith(
        "| 14.0 | 35.0 | 80.0 | 0.17x |"
    )
    assert row["shared prefix, 16 clients: req/s"].endswith("| 1.50x |")
    assert row["shared prefix, 16 clients: TTFT p50 s (lower is better)"].endswith("| 0.50x |")
    assert row["mmlu: accuracy"].endswith("| 0.50 | 0.25 |  |  |")  # results, not speed: no ratio
    assert row["resident memory after the run, MiB (lower is better)"].endswith("| 0.30x |")
    assert "other processes' CPU" in lines[-1] and "0.20" in lines[-1]


def test_missing_peer_is_skipped_with_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(systems, "ROOT", str(tmp_path))
    assert systems.missing_reason(systems.SYSTEMS["ours"]) is None
    reason = systems.missing_reason(systems.SYSTEMS["vllm"])
    assert ".venv-vllm" in reason and "scripts/peers.sh vllm" in reason
    out = tmp_path / "r.jsonl"
    bench_peers.main(
        ["--systems", "vllm", "llamacpp", "--out", str(out), "--log-dir", str(tmp_path)]
    )
    printed = capsys.readouterr().out
    assert "skipping vllm: vLLM CPU (bfloat16) is not installed" in printed
    assert "skipping llamacpp: llama.cpp (Q4_1) is not installed" in printed
    assert "0 records" in printed


def test_plan_per_system():
    scale = workloads.Scale()
    names = {s: [(w, lvl) for w, lvl, _ in bench_peers.plan(systems.SYSTEMS[s], bench_peers.WORKLOAD_FAMILIES, scale)] for s in ("ours", "vllm-fp32", "llamacpp")}  # fmt: skip
    assert ("decode", 32) in names["ours"] and ("prog:tot", None) in names["ours"]
    assert ("json", None) in names["ours"]
    assert not any(w.startswith("prog:") or w == "json" for w, _ in names["vllm-fp32"])
    assert ("decode", 32) not in names["llamacpp"] and ("shared", 64) not in names["llamacpp"]
    assert ("decode", 8) in names["llamacpp"] and ("shared", 16) in names["llamacpp"]


def test_peer_command_line(monkeypatch):
    monkeypatch.setattr(systems, "gguf_path", lambda: "/m/model.gguf")
    monkeypatch.setattr(systems, "converted_folder", lambda path: "/m/folder")
    cmd, env = systems.peer_command(systems.SYSTEMS["vllm-fp32"], 1234)
    assert cmd[1:3] == ["serve", "/m/folder"] and "float32" in cmd and "1234" in cmd
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    cmd, _ = systems.peer_command(systems.SYSTEMS["llamacpp"], 1234)
    assert cmd[1:3] == ["-m", "llama_cpp.server"] and "/m/model.gguf" in cmd


def test_prompts_without_a_tokenizer():
    maker = TextMaker()
    assert maker.count(maker.text(50, "s", "[tag]")) == 50
    assert maker.text(20, 1) == maker.text(20, 1) != maker.text(20, 2)
    prompts = shared_prefix_prompts(maker, groups=2, per_group=3, system_tokens=40, salt="x")
    assert len(prompts) == 6 and len({p.split("\n\n")[0] for p in prompts}) == 2


def test_program_data_has_right_answers():
    maker = TextMaker()
    for workload in programs.PROGRAM_WORKLOADS:
        program, kws, expected = programs.build(workload, maker, 3, "salt")
        assert len(kws) == len(expected) == 3
    _, kws, expected = programs.build("mmlu", maker, 4, "s")
    for kw, answer in zip(kws, expected):
        question = kw["question"]
        a, b = (int(x) for x in question.split("What is ")[1].split("?")[0].split(" + "))
        assert f"{answer.strip()}. {a + b}\n" in question
    _, kws, expected = programs.build("hellaswag", maker, 4, "s")
    for kw, ending in zip(kws, expected):
        assert ending in kw["endings"] and kw["shots"].count("Continue the series") == 20


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Streams `max_tokens` one-word chunks, then usage, like a completions server."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for _ in range(body["max_tokens"]):
            self.wfile.write(b'data: {"choices": [{"text": " w", "index": 0}]}\n\n')
        usage = {
            "prompt_tokens": len(body["prompt"].split()),
            "completion_tokens": body["max_tokens"],
        }
        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_serving_workloads_against_a_stand_in(fake_url):
    maker, scale = TextMaker(), workloads.SMOKE
    d = workloads.decode(fake_url, maker, "s", scale, 2)
    assert d["tokens"] == 2 * scale.decode_tokens and d["tokens_per_s"] > 0
    p = workloads.prefill(fake_url, maker, "s", scale)
    assert p["prompt_tokens"] == scale.prefill_prompts * scale.prefill_tokens
    s = workloads.shared_prefix(fake_url, maker, "s", scale, 2)
    assert s["requests"] == scale.shared_groups * scale.shared_per_group and s["req_per_s"] > 0


def test_plot_from_synthetic_records(tmp_path):
    pytest.importorskip("matplotlib")
    import plot

    paths = plot.plot_all(RECORDS, str(tmp_path))
    names = {Path(p).name for p in paths}
    assert {"serving.png", "programs.png", "prefill_memory.png", "headline.png"} <= names
    assert all(Path(p).stat().st_size > 1000 for p in paths)
    assert plot.headline_ratios(RECORDS)["shared prefix, 16 clients: TTFT p50 s"] == 2.0


def test_foreign_load_counts_a_child_once():
    import subprocess
    import time

    from peers import machine

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the child is also this process's descendant
        assert machine._tree_seconds([os.getpid(), child.pid]) == pytest.approx(
            machine._tree_seconds([os.getpid()]), abs=0.05
        )
    finally:
        child.kill()
        child.wait()
