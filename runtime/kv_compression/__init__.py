"""Token-level KV compression: a request keeps only the prompt positions that matter, per layer
and KV head (StreamingLLM, SnapKV, PyramidKV), in private slots beside the exact radix cache."""
