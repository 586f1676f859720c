"""Attention kernels over the paged KV pool."""
