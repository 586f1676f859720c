"""Streamed text may stop half way through a tag; what of it to hold back until the next chunk."""

from __future__ import annotations


def held_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag` (0: none)."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
