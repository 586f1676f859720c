"""Shared by the examples: `--url` for a running server, else a server started for the run."""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import frontend_lang as sgl  # noqa: E402


def backend_from_args(description: str):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--url", help="a running server (default: start one for this run)")
    args = ap.parse_args()
    if args.url:
        return sgl.RuntimeEndpoint(args.url)
    return sgl.Runtime(max_total_tokens=16384, log_level="warning")
