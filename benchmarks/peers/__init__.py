"""Our server beside the peers a user would pick (vLLM CPU, llama.cpp), one run, same prompts.

`benchmarks/bench_peers.py` is the command; this package holds its parts: `systems` (start, stop,
measure a server), `client` (streamed OpenAI completions), `prompts` (synthetic text of a known
token length), `workloads` (decode, prefill, shared prefix), `programs` (the SGLang paper's
frontend programs), `report` (records, medians, the table).
"""
