"""Incremental detokenization: text grows token by token without splitting multi-byte characters."""

from __future__ import annotations


class IncrementalDecoder:
    """Decodes a growing list of token ids; `text` is everything that is safe to show so far."""

    def __init__(
        self,
        tokenizer,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.kwargs = {"skip_special_tokens": skip_special_tokens}
        if not spaces_between_special_tokens:
            self.kwargs["spaces_between_special_tokens"] = False
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # ids before this are settled into `text`
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, **self.kwargs)

    def push(self, new_ids: list[int]) -> str:
        """Adds tokens; returns the newly settled text."""
        self.ids.extend(new_ids)
        # Decode a short window with context so tokenizers that strip leading spaces stay right.
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""  # an incomplete character; wait for the next token
        delta = after[len(before) :]
        self.text += delta
        self._prefix, self._read = self._read, len(self.ids)
        return delta

    def flush(self) -> str:
        """Settles whatever is left, replacement characters included, at the end of a request."""
        rest = self._decode(self.ids[self._prefix :])[
            len(self._decode(self.ids[self._prefix : self._read])) :
        ]
        self.text += rest
        self._prefix = self._read = len(self.ids)
        return rest


def find_stop(text: str, stops: list[str], start: int = 0) -> tuple[int, str] | None:
    """The earliest stop string in text[start:], as (index, stop string)."""
    best = None
    for s in stops:
        i = text.find(s, start)
        if i != -1 and (best is None or i < best[0]):
            best = (i, s)
    return best


def stop_holdback(text: str, stops: list[str]) -> int:
    """How many trailing characters might begin a stop string and should not be streamed yet."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold
