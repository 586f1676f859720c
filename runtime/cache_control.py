"""The Engine's hold on its prefix cache: pinned prefixes, and the tree as it stands."""

from __future__ import annotations

from runtime.io_struct import GenerateRequest

PIN_ATTEMPTS = 3  # the prefix may be evicted between its prefill and its pin


class CacheControl:
    """Mixed into `Engine`, whose `generate`, `_call`, `input_processor` and `server_args` it
    uses."""

    def pin_prefix(
        self,
        prompt: str | None = None,
        input_ids: list[int] | None = None,
        ttl_s: float | None = None,
    ) -> dict:
        """Computes (or finds) the prefix and keeps it out of eviction until `unpin_prefix` or
        `ttl_s` seconds; returns {pin_id, tokens, expires_at, pinned_tokens}. ValueError past
        `max_pinned_tokens`."""
        if ttl_s is not None and not (isinstance(ttl_s, (int, float)) and ttl_s > 0):
            raise ValueError(f"ttl_s: must be a number of seconds > 0, got {ttl_s!r}")
        ids = self.input_processor.process(
            GenerateRequest(prompt, {"max_new_tokens": 0}, input_ids)
        )[1][0].input_ids
        for _ in range(PIN_ATTEMPTS):
            self.generate(input_ids=ids, sampling_params={"max_new_tokens": 0})
            out = self._call("pin_prefix", input_ids=ids, ttl_s=ttl_s)
            if out["tokens"] >= len(ids) - len(ids) % self.server_args.page_size:
                return out
            if out["pin_id"] is not None:
                self._call("unpin_prefix", pin_id=out["pin_id"])
        raise RuntimeError("pin_prefix: the prefix was evicted before it could be pinned; retry")

    def unpin_prefix(self, pin_id: str) -> bool:
        """False when no such pin is held (it was unpinned, or expired)."""
        return self._call("unpin_prefix", pin_id=pin_id)

    def cache_tree(self, depth: int | None = None, min_tokens: int = 0) -> dict:
        """The radix tree with text excerpts, hits, locks and pins (see `/cache/tree`)."""
        return self._call("cache_tree", depth=depth, min_tokens=min_tokens)
