"""Pinned prefixes: cached paths held out of eviction by a lock each, until unpinned or expired.

A pin is one more lock on the radix path of a prefix (an agent's system prompt and tools, say),
so the cache counts its slots as protected and the KV accounting stays whole. Pinned tokens are
counted once however many pins share them, and capped by `--max-pinned-tokens`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from runtime.scheduler.prefix_cache import RadixPrefixCache


@dataclass
class Pin:
    pin_id: str
    node: object  # the radix node where the pinned prefix ends
    tokens: int
    expires_at: float | None  # time.time() seconds; None: until unpinned

    def info(self) -> dict:
        return {"pin_id": self.pin_id, "tokens": self.tokens, "expires_at": self.expires_at}


class PinTable:
    def __init__(self, cache: RadixPrefixCache, max_tokens: int) -> None:
        self.cache = cache
        self.max_tokens = max_tokens
        self.pins: dict[str, Pin] = {}

    def _nodes(self, pins) -> set[int]:
        return {id(n) for p in pins for n in self.cache.tree.path(p.node)}

    def pinned_tokens(self) -> int:
        seen: dict[int, int] = {}
        for p in self.pins.values():
            for n in self.cache.tree.path(p.node):
                seen[id(n)] = len(n.key)
        return sum(seen.values())

    def pinned_node_ids(self) -> set[int]:
        return self._nodes(self.pins.values())

    def pin(self, token_ids: list[int], ttl_s: float | None) -> dict:
        """Pins the cached prefix of `token_ids`. Returns its info with `tokens` < the whole
        length when part of it is not cached (the caller prefills it first); ValueError when
        the cap would be passed."""
        self.expire()
        slots, node = self.cache.match_prefix(token_ids)
        if len(slots) == 0:
            return {"pin_id": None, "tokens": 0}
        new = sum(
            len(n.key) for n in self.cache.tree.path(node) if id(n) not in self.pinned_node_ids()
        )
        held = self.pinned_tokens()
        if held + new > self.max_tokens:
            raise ValueError(
                f"max_pinned_tokens: pinning {new} more tokens would hold {held + new}, over the "
                f"cap of {self.max_tokens} (see --max-pinned-tokens; unpin something first)"
            )
        self.cache.inc_lock_ref(node)
        expires = time.time() + ttl_s if ttl_s is not None else None
        pin = Pin(uuid.uuid4().hex, node, len(slots), expires)
        self.pins[pin.pin_id] = pin
        return {**pin.info(), "pinned_tokens": self.pinned_tokens()}

    def unpin(self, pin_id: str) -> bool:
        pin = self.pins.pop(pin_id, None)
        if pin is None:
            return False
        self.cache.dec_lock_ref(pin.node)
        return True

    def unpin_all(self) -> None:
        for pin_id in list(self.pins):
            self.unpin(pin_id)

    def expire(self) -> None:
        now = time.time()
        for pin in [
            p for p in self.pins.values() if p.expires_at is not None and p.expires_at <= now
        ]:
            self.unpin(pin.pin_id)

    def list(self) -> list[dict]:
        return [p.info() for p in self.pins.values()]
