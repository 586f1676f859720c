"""SGLang's and vLLM's flags for things this server has no notion of, so pasted commands run.

A flag that switches on what is always on here (or off what we never do) is accepted and does
nothing. A flag that asks for what we do not have (tensor parallelism, LoRA...) is accepted only
with the value that changes nothing (`--tp-size 1`); any other value stops the launch with an
argparse error naming what is missing.
"""

from __future__ import annotations

import argparse

# (flags, why it changes nothing here)
NO_EFFECT = [
    (("--enable-metrics",), "/metrics is always served"),
    (("--enable-cache-report",), "usage always reports cached_tokens"),
    (("--trust-remote-code",), "no code is ever run from a model's folder"),
    (("--enable-prefix-caching",), "on unless --disable-radix-cache"),
    (("--enable-chunked-prefill",), "chunked by --chunked-prefill-size"),
    (("--disable-log-requests",), "requests are logged with --log-requests only"),
    (("--disable-log-stats",), "no periodic stats lines are logged"),
    (("--disable-custom-all-reduce",), "one device, no all-reduce"),
    (("--skip-server-warmup",), "the server does not warm up"),
]
# (flags, type, the value that changes nothing, what is missing)
ONLY_VALUE = [
    (("--tp-size", "--tensor-parallel-size", "--tp", "-tp"), int, 1, "tensor parallelism"),
    (("--pp-size", "--pipeline-parallel-size", "-pp"), int, 1, "pipeline parallelism"),
    (("--ep-size", "--expert-parallel-size"), int, 1, "expert parallelism"),
    (
        ("--nnodes",),
        int,
        1,
        "multi-node serving (run one server per machine behind sglang-router instead)",
    ),
    (("--node-rank",), int, 0, "multi-node serving"),
    (("--stream-interval",), int, 1, "streaming every few steps (every step streams)"),
    (("--cpu-offload-gb",), float, 0, "weight offloading to the CPU"),
    (("--load-format",), str, "auto", "a choice of load format (GGUF or safetensors by file)"),
    (("--speculative-algorithm",), str, None, "speculative decoding"),
    (("--lora-paths",), str, None, "LoRA adapters"),
]
# (flags, what is missing): refused whenever given
REFUSED = [
    (("--enable-lora",), "LoRA adapters"),
    (("--is-embedding",), "embedding models"),
    (("--skip-tokenizer-init",), "serving without a tokenizer"),
]


class _OnlyValue(argparse.Action):
    """Accepts the one value that changes nothing; any other is an argparse error."""

    def __init__(self, option_strings, dest, accepted=None, missing="", **kwargs) -> None:
        self.accepted, self.missing = accepted, missing
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if self.nargs == 0 or values != self.accepted:
            given = option_string if self.nargs == 0 else f"{option_string} {values}"
            only = "" if self.accepted is None else f"; only {self.accepted} is accepted"
            parser.error(f"{given}: this server has no {self.missing}{only}")
        setattr(namespace, self.dest, values)


def add_foreign_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "other servers' flags", "accepted so that SGLang and vLLM launch commands run unchanged"
    )
    for flags, why in NO_EFFECT:
        group.add_argument(*flags, dest=_dest(flags), action="store_true", help=f"no effect: {why}")
    for flags, kind, accepted, missing in ONLY_VALUE:
        group.add_argument(
            *flags,
            dest=_dest(flags),
            type=kind,
            metavar="N" if kind is not str else "VALUE",
            action=_OnlyValue,
            accepted=accepted,
            missing=missing,
            default=accepted,
            help=f"refused: no {missing} here"
            if accepted is None
            else f"no {missing} here: only {accepted} is accepted",
        )
    for flags, missing in REFUSED:
        group.add_argument(
            *flags,
            dest=_dest(flags),
            nargs=0,
            action=_OnlyValue,
            missing=missing,
            default=argparse.SUPPRESS,
            help=f"refused: no {missing} here",
        )


def _dest(flags: tuple[str, ...]) -> str:
    """A namespace name no server setting uses."""
    return "foreign_" + flags[0].lstrip("-").replace("-", "_")
