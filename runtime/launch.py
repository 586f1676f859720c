"""`python -m runtime.launch`: serves a model over HTTP, SGLang's native protocol and OpenAI's.

With no flags it serves the embedded SmolLM2-135M-Instruct on http://127.0.0.1:30000.
Ctrl-C or SIGTERM stops the server and its scheduler and detokenizer processes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from runtime.processes import LOG_FORMAT
from runtime.server_args import ServerArgs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ServerArgs.add_cli_args(parser)
    args = ServerArgs.from_cli_args(parser.parse_args(argv))
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)

    from runtime.entrypoints.http_server import serve

    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
