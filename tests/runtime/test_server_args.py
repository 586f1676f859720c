from __future__ import annotations

import argparse
import dataclasses

import pytest

from runtime.server_args import ServerArgs


def parse(argv: list[str]) -> ServerArgs:
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return ServerArgs.from_cli_args(parser.parse_args(argv))


def test_every_setting_has_a_flag_and_defaults_match():
    assert parse([]) == ServerArgs()
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    dests = {a.dest for a in parser._actions}
    assert {f.name for f in dataclasses.fields(ServerArgs)} <= dests


def test_flags_reach_the_settings():
    args = parse(
        [
            "--disable-radix-cache",
            "--page-size",
            "4",
            "--schedule-policy",
            "dfs-weight",
            "--max-total-tokens",
            "1000",
            "--chunked-prefill-size",
            "-1",
        ]
    )
    assert (args.disable_radix_cache, args.page_size, args.schedule_policy) == (
        True,
        4,
        "dfs-weight",
    )
    assert (args.max_total_tokens, args.chunked_prefill_size) == (1000, -1)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"page_size": 0}, "page_size"),
        ({"schedule_policy": "sjf"}, "schedule_policy"),
        ({"max_total_tokens": 3}, "max_total_tokens"),
        ({"mem_fraction_static": 1.5}, "mem_fraction_static"),
        ({"chunked_prefill_size": 0}, "chunked_prefill_size"),
        ({"grammar_compile_timeout": -1}, "grammar_compile_timeout"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ServerArgs(**kwargs)
    with pytest.raises(TypeError, match="unknown server argument"):
        ServerArgs.from_kwargs(bogus=1)


def test_server_flags_of_the_http_server():
    args = parse(
        ["--host", "0.0.0.0", "--port", "8080", "--api-key", "k", "--grammar-backend", "outlines"]
        + ["--disable-jump-forward", "--served-model-name", "smol"]
    )
    assert (args.host, args.port, args.api_key, args.grammar_backend) == (
        "0.0.0.0",
        8080,
        "k",
        "outlines",
    )
    assert args.disable_jump_forward and args.served_model_name == "smol"
    assert ServerArgs().grammar_backend == "xgrammar" and ServerArgs().port == 30000
    with pytest.raises(ValueError, match="^grammar_backend: "):
        ServerArgs(grammar_backend="lark")
    with pytest.raises(ValueError, match="^port: "):
        ServerArgs(port=70000)


def test_api_key_comes_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv("RADIXSERVE_API_KEY", "from-env")
    assert ServerArgs().api_key == "from-env"
    assert ServerArgs(api_key="flag").api_key == "flag"
    assert "from-env" not in str(ServerArgs().scheduler_args())
    monkeypatch.delenv("RADIXSERVE_API_KEY")
    assert ServerArgs().api_key is None


@pytest.mark.parametrize("field", ["max_fanout", "max_queued_requests", "max_request_bytes"])
def test_limits_must_be_positive(field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        ServerArgs(**{field: 0})


def test_kv_cache_dtype_flag():
    args = parse(["--kv-cache-dtype", "int4", "--page-size", "32"])
    assert (args.kv_cache_dtype, args.page_size) == ("int4", 32)
    assert ServerArgs().kv_cache_dtype == "auto"
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        ServerArgs(kv_cache_dtype="int2")
    with pytest.raises(ValueError, match="page_size.*int4"):
        ServerArgs(kv_cache_dtype="int4")  # keys are quantized over pages: page 1 will not do
    with pytest.raises(SystemExit):
        parse(["--kv-cache-dtype", "fp4"])
