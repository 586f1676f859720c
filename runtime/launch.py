"""`python -m runtime.launch` (or `radixserve serve`): serves a model over HTTP, SGLang's native
protocol and OpenAI's.

With no flags it serves the embedded SmolLM2-135M-Instruct on http://127.0.0.1:30000.
Ctrl-C or SIGTERM stops the server and its scheduler and detokenizer processes.
SGLang's and vLLM's flag names are accepted; `--config FILE.yaml` reads flags from a file.
"""

from __future__ import annotations

import argparse
import logging
import sys

from runtime.config_file import expand_config
from runtime.data_parallel import router_missing, serve_data_parallel
from runtime.foreign_flags import add_foreign_flags
from runtime.processes import LOG_FORMAT
from runtime.server_args import ServerArgs

REQUEST_LOGGER = "runtime.entrypoints.request_log"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser(prog: str = "python -m runtime.launch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [MODEL] [options]",
        description=__doc__,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="the model, as vLLM takes it (same as --model-path)",
    )
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="flags from a YAML file (the command line wins)"
    )
    ServerArgs.add_cli_args(parser)
    add_foreign_flags(parser)
    return parser


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> ServerArgs:
    """The settings a command line asks for; a bad flag or value exits with an argparse error."""
    parser = build_parser(prog) if prog else build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = expand_config(argv)
    except ValueError as e:
        parser.error(str(e))
    ns = parser.parse_args(argv)
    if ns.model is not None:
        if ns.model_path is not None and ns.model_path != ns.model:
            parser.error("model: given twice, as an argument and as --model-path / --model")
        ns.model_path = ns.model
    try:
        args = ServerArgs.from_cli_args(ns)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    if args.dp_size > 1 and (why := router_missing()):
        parser.error(why)
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if args.log_requests:  # whatever --log-level says
        logging.getLogger(REQUEST_LOGGER).setLevel(logging.INFO)
    if args.dp_size > 1:
        return serve_data_parallel(args, argv)

    from runtime.entrypoints.http_server import serve

    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
