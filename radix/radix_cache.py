"""A radix tree over token ids whose values are KV slot indices.

Requests that share a prefix share the tree path that stores it. A path in use is locked
(`inc_lock_ref`) and never evicted; unlocked leaves are evicted least recently used first, from
a heap kept up to date lazily (stale entries are skipped when popped). With `page_size > 1` keys
and evictions move in whole pages. This module is a data structure: it imports nothing from the
runtime, and it frees nothing itself; `evict` returns the slots for the caller to free.
"""

from __future__ import annotations

import heapq
import itertools

import torch


class TreeNode:
    __slots__ = ("children", "parent", "key", "value", "lock_ref", "last_access", "alive", "hits")

    def __init__(
        self, parent: TreeNode | None, key: list[int], value: torch.Tensor, time: int
    ) -> None:
        self.children: dict[tuple[int, ...], TreeNode] = {}
        self.parent = parent
        self.key = key  # token ids on the edge into this node
        self.value = value  # their KV slots, int64, same length
        self.lock_ref = 0
        self.last_access = time
        self.alive = True
        self.hits = 0  # requests that reused this node's tokens

    def __lt__(self, other: TreeNode) -> bool:  # heap ties
        return id(self) < id(other)


class RadixCache:
    def __init__(self, page_size: int = 1) -> None:
        if page_size < 1:
            raise ValueError(f"page_size: must be >= 1, got {page_size}")
        self.page_size = page_size
        self.reset()

    # ---- sizes ----

    def reset(self) -> None:
        self._clock = itertools.count(1)
        self.root = TreeNode(None, [], torch.empty(0, dtype=torch.int64), 0)
        self.root.lock_ref = 1  # the root is never evicted
        self._evictable = 0
        self._protected = 0
        self._heap: list[tuple[int, TreeNode]] = []
        self._num_nodes = 1

    def evictable_size(self) -> int:
        return self._evictable

    def protected_size(self) -> int:
        return self._protected

    def total_size(self) -> int:
        return self._evictable + self._protected

    # ---- lookup and insertion ----

    def _child_key(self, key: list[int]) -> tuple[int, ...]:
        return tuple(key[: self.page_size])

    def _match_len(self, a: list[int], b: list[int]) -> int:
        """Common prefix length of two keys, in whole pages."""
        n = 0
        limit = min(len(a), len(b))
        while n < limit and a[n] == b[n]:
            n += 1
        return n - n % self.page_size

    def _page_aligned(self, key: list[int]) -> list[int]:
        return key[: len(key) - len(key) % self.page_size]

    def match_prefix(self, token_ids: list[int]) -> tuple[torch.Tensor, TreeNode]:
        """The longest cached prefix: (its KV slots, the node where it ends). Touches the path."""
        key = self._page_aligned(list(token_ids))
        now = next(self._clock)
        node = self.root
        values = []
        while key:
            child = node.children.get(self._child_key(key))
            if child is None:
                break
            n = self._match_len(child.key, key)
            if n == 0:
                break
            if n < len(child.key):
                child = self._split(child, n)
            values.append(child.value)
            node = child
            key = key[n:]
        self._touch(node, now)
        if not values:
            return torch.empty(0, dtype=torch.int64), node
        return torch.cat(values), node

    def insert(self, token_ids: list[int], kv_indices: torch.Tensor) -> int:
        """Adds the (page-aligned part of the) sequence; returns how many leading tokens were
        already cached: the caller's slots for those are duplicates for it to free."""
        key = self._page_aligned(list(token_ids))
        value = kv_indices[: len(key)].to(torch.int64)
        now = next(self._clock)
        node, done = self.root, 0
        while done < len(key):
            rest = key[done:]
            child = node.children.get(self._child_key(rest))
            n = 0 if child is None else self._match_len(child.key, rest)
            if n == 0:
                break
            if n < len(child.key):
                child = self._split(child, n)
            node, done = child, done + n
        cached = done
        if done < len(key):
            rest = key[done:]
            new = TreeNode(node, rest, value[done:].clone(), now)
            node.children[self._child_key(rest)] = new
            self._num_nodes += 1
            self._evictable += len(rest)
            node = new
        self._touch(node, now)
        return cached

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Cuts child's edge after n tokens; returns the new upper node."""
        upper = TreeNode(child.parent, child.key[:n], child.value[:n], child.last_access)
        upper.lock_ref = child.lock_ref  # every lock through child passes through upper
        upper.hits = child.hits
        upper.children = {self._child_key(child.key[n:]): child}
        child.parent.children[self._child_key(child.key)] = upper
        child.parent = upper
        child.key = child.key[n:]
        child.value = child.value[n:]
        self._num_nodes += 1
        return upper

    def _touch(self, node: TreeNode, now: int) -> None:
        """Marks the path as used now; the node itself may be an evictable leaf."""
        self._push_if_evictable(node, now)
        while node is not None:
            node.last_access = now
            node = node.parent

    # ---- locking ----

    def inc_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root:
            if node.lock_ref == 0:
                self._evictable -= len(node.key)
                self._protected += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root:
            assert node.lock_ref > 0, "lock count went below zero"
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._evictable += len(node.key)
                self._protected -= len(node.key)
                self._push_if_evictable(node, node.last_access)
            node = node.parent

    # ---- eviction ----

    def _push_if_evictable(self, node: TreeNode, time: int) -> None:
        if node is not self.root and not node.children and node.lock_ref == 0:
            heapq.heappush(self._heap, (time, node))
            if len(self._heap) > 2 * self._num_nodes + 64:
                self._heap = [e for e in self._heap if self._valid(e)]
                heapq.heapify(self._heap)

    @staticmethod
    def _valid(entry: tuple[int, TreeNode]) -> bool:
        time, node = entry
        return node.alive and not node.children and node.lock_ref == 0 and node.last_access == time

    def evict(self, num_tokens: int) -> torch.Tensor:
        """Removes least recently used unlocked leaves until `num_tokens` slots are freed (or
        nothing is left to evict); returns the freed slots."""
        freed: list[torch.Tensor] = []
        count = 0
        while count < num_tokens and self._heap:
            entry = heapq.heappop(self._heap)
            if not self._valid(entry):
                continue
            node = entry[1]
            freed.append(node.value)
            count += len(node.value)
            self._evictable -= len(node.key)
            del node.parent.children[self._child_key(node.key)]
            node.alive = False
            self._num_nodes -= 1
            self._push_if_evictable(node.parent, node.parent.last_access)
        return torch.cat(freed) if freed else torch.empty(0, dtype=torch.int64)

    # ---- inspection ----

    def record_hit(self, node: TreeNode) -> None:
        """Counts one request that reused the path ending at `node`."""
        while node is not self.root:
            node.hits += 1
            node = node.parent

    def path(self, node: TreeNode) -> list[TreeNode]:
        """The nodes from the root's child down to `node` (empty for the root)."""
        nodes = []
        while node is not self.root:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def snapshot(self, max_depth: int | None = None, min_tokens: int = 0) -> dict:
        """The tree as nested dicts (id, token ids, hits, last access, lock count, children),
        down to `max_depth` levels, leaving out subtrees holding fewer than `min_tokens`."""

        def size(node: TreeNode) -> int:
            return len(node.key) + sum(size(c) for c in node.children.values())

        def dump(node: TreeNode, depth: int) -> dict:
            kids = [] if max_depth is not None and depth >= max_depth else node.children.values()
            shown = [(size(c), c) for c in kids]
            return {
                "id": id(node),
                "token_ids": list(node.key),
                "subtree_tokens": size(node),
                "hits": node.hits,
                "last_access": node.last_access,
                "lock_ref": node.lock_ref if node is not self.root else 0,
                "children": [
                    dump(c, depth + 1)
                    for n, c in sorted(shown, key=lambda x: -x[0])
                    if n >= min_tokens
                ],
            }

        return dump(self.root, 0)

    def pretty_print(self, max_tokens: int = 8) -> str:
        lines = [f"root (evictable {self._evictable}, protected {self._protected})"]

        def walk(node: TreeNode, depth: int) -> None:
            for child in sorted(node.children.values(), key=lambda c: c.key):
                shown = child.key[:max_tokens]
                more = "..." if len(child.key) > max_tokens else ""
                lines.append(
                    f"{'  ' * depth}- {shown}{more} len={len(child.key)} "
                    f"lock={child.lock_ref} t={child.last_access}"
                )
                walk(child, depth + 1)

        walk(self.root, 1)
        return "\n".join(lines)
