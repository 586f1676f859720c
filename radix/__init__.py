"""Radix-tree KV manager: prefix sharing across requests, LRU eviction, lock counts."""

from radix.prefix_groups import shared_prefix_groups
from radix.radix_cache import RadixCache, TreeNode

__all__ = ["RadixCache", "TreeNode", "shared_prefix_groups"]
