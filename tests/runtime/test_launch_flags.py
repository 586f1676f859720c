"""The command line: SGLang's and vLLM's flag names, --config files, argparse errors."""

from __future__ import annotations

import pytest

from runtime.config_file import config_flags, expand_config
from runtime.launch import build_parser, parse_args
from runtime.server_args import ServerArgs


def refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_vllm_and_sglang_names_reach_the_same_settings():
    vllm = parse_args(
        ["m.gguf", "--max-model-len", "2048", "--max-num-seqs", "8", "--enforce-eager"]
        + ["--seed", "3", "--block-size", "4", "--max-num-batched-tokens", "1024"]
        + ["--gpu-memory-utilization", "0.9", "--tensor-parallel-size", "1", "--tokenizer", "t"]
        + ["--no-enable-prefix-caching", "--enable-log-requests", "--trust-remote-code"]
    )
    sglang = parse_args(
        ["--model-path", "m.gguf", "--context-length", "2048", "--max-running-requests", "8"]
        + ["--disable-cuda-graph", "--random-seed", "3", "--page-size", "4"]
        + ["--max-prefill-tokens", "1024", "--tp-size", "1", "--tokenizer-path", "t"]
        + ["--disable-radix-cache", "--log-requests", "--enable-metrics", "--enable-cache-report"]
    )
    assert vllm.gpu_memory_utilization == 0.9
    vllm.gpu_memory_utilization = None
    assert vllm == sglang
    assert sglang.model_path == "m.gguf" and sglang.context_length == 2048
    assert sglang.log_requests and sglang.disable_cuda_graph and sglang.random_seed == 3


def test_flags_asking_for_what_we_lack_are_refused_by_name(capsys):
    assert "no tensor parallelism; only 1" in refused(["--tp-size", "2"], capsys)
    assert "-tp 4: this server has no tensor parallelism" in refused(["-tp", "4"], capsys)
    assert "--enable-lora: this server has no LoRA" in refused(["--enable-lora"], capsys)
    assert "speculative decoding" in refused(["--speculative-algorithm", "EAGLE"], capsys)
    assert "port: must be in [0, 65535]" in refused(["--port", "70000"], capsys)
    assert "invalid int value: 'x'" in refused(["--max-num-seqs", "x"], capsys)
    assert "chat_template: 'chatml' is neither a file" in refused(
        ["--chat-template", "chatml"], capsys
    )
    assert "model: given twice" in refused(["a.gguf", "--model", "b.gguf"], capsys)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 30000)" in out and "(default: lpm)" in out and "(default: 1)" in out


def test_config_file_gives_flags_the_command_line_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model-path: m.gguf\nport: 31000\ntrust_remote_code: true\nenable-metrics: false\n"
        "max-running-requests: 4\n"
    )
    assert config_flags(str(cfg)) == [
        "--model-path", "m.gguf", "--port", "31000", "--trust-remote-code",
        "--max-running-requests", "4",
    ]  # fmt: skip
    args = parse_args(["--config", str(cfg), "--port", "32000"])
    assert (args.model_path, args.port, args.max_running_requests) == ("m.gguf", 32000, 4)
    assert expand_config(["--x", "1"]) == ["--x", "1"]
    assert "--config: no such file" in refused(["--config", str(tmp_path / "no.yaml")], capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    assert "must hold a mapping" in refused([f"--config={bad}"], capsys)
    bad.write_text("tp-size: 2\n")
    assert "no tensor parallelism" in refused(["--config", str(bad)], capsys)


def test_every_setting_keeps_its_default_through_the_parser():
    assert parse_args([]) == ServerArgs()
