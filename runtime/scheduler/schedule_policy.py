"""Orders the waiting queue: longest cached prefix, heaviest subtree, arrival, or random."""

from __future__ import annotations

import random

from radix import dfs_weight_order
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
        ends = [node for _, node in matches]
        return [waiting[i] for i in dfs_weight_order(ends)]
