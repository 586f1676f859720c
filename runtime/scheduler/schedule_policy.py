"""Orders the waiting queue: longest cached prefix, heaviest subtree, arrival, or random."""

from __future__ import annotations

import random

from runtime.scheduler.prefix_cache import PrefixCache

POLICIES = ("lpm", "dfs-weight", "fcfs", "random")
# Past this many waiting requests, matching each against the tree costs more than it saves.
MAX_PREFIX_MATCHED_QUEUE = 256


class SchedulePolicy:
    def __init__(self, policy: str, cache: PrefixCache, seed: int = 0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"schedule_policy: must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.cache = cache
        self.rng = random.Random(seed)

    def order(self, waiting: list) -> list:
        """Returns the waiting requests in admission order; fills each one's prefix match."""
        policy = self.policy
        if policy in ("lpm", "dfs-weight") and len(waiting) > MAX_PREFIX_MATCHED_QUEUE:
            policy = "fcfs"
        if policy == "fcfs":
            return list(waiting)
        if policy == "random":
            out = list(waiting)
            self.rng.shuffle(out)
            return out
        # Matches only order the queue; admission matches again and locks what it uses.
        matches = [self.cache.match_prefix(req.match_ids()) for req in waiting]
        if policy == "lpm":
            order = sorted(range(len(waiting)), key=lambda i: -len(matches[i][0]))  # stable
            return [waiting[i] for i in order]
        return self._dfs_weight(waiting, [node for _, node in matches])

    @staticmethod
    def _dfs_weight(waiting: list, ends: list) -> list:
        """Walks the tree heaviest subtree first (weight: waiting requests below a node), so
        requests that share a prefix run together while it is cached."""
        by_node: dict[int, list] = {}
        weight: dict[int, int] = {}
        nodes = {}
        for req, node in zip(waiting, ends):
            by_node.setdefault(id(node), []).append(req)
            while node is not None:
                weight[id(node)] = weight.get(id(node), 0) + 1
                nodes[id(node)] = node
                node = node.parent
        root = next((n for n in nodes.values() if n.parent is None), None)
        if root is None:  # no tree: arrival order
            return list(waiting)
        out: list = []
        stack = [root]
        while stack:
            node = stack.pop()
            out.extend(by_node.get(id(node), []))
            kids = [c for c in node.children.values() if id(c) in weight]
            stack.extend(sorted(kids, key=lambda c: weight[id(c)]))  # heaviest popped first
        return out
