"""Radix-tree KV manager: prefix sharing across requests, LRU eviction, lock counts."""

from radix.radix_cache import RadixCache, TreeNode

__all__ = ["RadixCache", "TreeNode"]
