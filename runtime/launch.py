"""`python -m runtime.launch`: loads the model and answers chat prompts from the command line.

The HTTP server comes in its own module; until then this entry point runs the engine in-process
and streams each answer to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time

from runtime.server_args import ServerArgs

logger = logging.getLogger("runtime.launch")

DEMO_PROMPTS = ["What is the capital of France?", "Give me three tips for writing clear code."]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ServerArgs.add_cli_args(parser)
    parser.add_argument("--prompt", action="append", help="a chat prompt to answer (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest answer")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 for greedy")
    args = parser.parse_args(argv)
    server_args = ServerArgs.from_cli_args(args)

    from runtime.engine import Engine

    t0 = time.perf_counter()
    with Engine(**dataclasses.asdict(server_args)) as engine:
        logger.info("ready in %.1fs", time.perf_counter() - t0)
        params = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
        for prompt in args.prompt or DEMO_PROMPTS:
            ids = engine.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            sys.stdout.write(f"\n>>> {prompt}\n")
            shown = ""
            for chunk in engine.generate(input_ids=ids, sampling_params=params, stream=True):
                sys.stdout.write(chunk["text"][len(shown) :])
                sys.stdout.flush()
                shown = chunk["text"]
            meta = chunk["meta_info"]
            sys.stdout.write(
                f"\n[{meta['completion_tokens']} tokens, finish: {meta['finish_reason']}]\n"
            )


if __name__ == "__main__":
    main()
