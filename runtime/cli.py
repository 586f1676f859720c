"""The `radixserve` command: `radixserve serve [MODEL] [flags]`, the flags of runtime.launch."""

from __future__ import annotations

import argparse
import sys

from runtime.version import __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="radixserve",
        description="An LLM server with a radix-tree prefix cache (SGLang's and OpenAI's APIs).",
    )
    parser.add_argument("--version", action="version", version=f"radixserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve", add_help=False, help="serve a model over HTTP (radixserve serve --help)"
    )
    if not argv or argv[0] not in ("serve",):
        parser.parse_args(argv)  # --version, --help, or an error naming the command
        parser.print_help()
        return 2
    from runtime.launch import main as launch

    return launch(argv[1:], prog="radixserve serve")


if __name__ == "__main__":
    sys.exit(main())
