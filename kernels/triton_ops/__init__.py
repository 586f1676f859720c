"""Triton kernels over the paged KV pool.

Every kernel reads K/V through a flat list of pool slots (`kv_indices`, with `kv_indptr` marking
where each item's slots begin), so a request's own KV, a shared radix prefix and a whole prompt
are all addressed the same way. They run on CUDA, and on the CPU under `TRITON_INTERPRET=1`.
"""
