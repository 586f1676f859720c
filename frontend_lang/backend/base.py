"""The backend interface the interpreter calls."""

from __future__ import annotations

from collections.abc import Iterator


class BackendError(RuntimeError):
    """A call the server refused or failed; `call` names it, `status` is the HTTP status."""

    def __init__(self, call: str, status: int, message: str) -> None:
        super().__init__(f"{call} failed ({status}): {message}")
        self.call = call
        self.status = status
        self.message = message


class Backend:
    def generate(self, text: str, sampling_params: dict, **kwargs) -> dict:
        """SGLang's result dict: {"text", "output_ids", "meta_info"}."""
        raise NotImplementedError

    def generate_stream(self, text: str, sampling_params: dict, **kwargs) -> Iterator[dict]:
        """Result dicts with the cumulative text so far; the last one has finish_reason."""
        raise NotImplementedError

    def select(self, text: str, choices: list[str], method: str = "token_length_normalized"):
        """(index of the chosen choice, meta info with the scores)."""
        raise NotImplementedError

    def cache_prefix(self, text: str) -> int:
        """Computes and caches a prefix; returns its length in tokens."""
        raise NotImplementedError

    def shutdown(self) -> None:
        pass
