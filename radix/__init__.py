"""Radix-tree KV manager: prefix sharing across requests, LRU eviction, lock counts."""

from radix.dfs_order import dfs_weight_order
from radix.prefix_groups import shared_prefix_groups
from radix.radix_cache import RadixCache, TreeNode

__all__ = ["RadixCache", "TreeNode", "dfs_weight_order", "shared_prefix_groups"]
