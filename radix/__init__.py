"""Radix-tree KV manager (prefix sharing across requests)."""
