"""Which requests compress their prompt KV, and how: the request's own spec, or the server's
default for every prompt longer than a threshold."""

from __future__ import annotations

from runtime.kv_compression.methods import validate_spec

FIELD = "sampling_params.kv_compression"


def _prefixed(prefix: str, spec: dict) -> dict:
    try:
        return validate_spec(spec)
    except ValueError as e:  # "budget: must be >= 1" -> "<prefix>.budget: must be >= 1"
        raise ValueError(f"{prefix}.{e}") from None


def request_spec(value) -> dict | None:
    """`sampling_params.kv_compression`, validated and normalized (None: exact KV)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(
            f'{FIELD}: must be an object such as {{"method": "snapkv", "budget": 512}}, '
            f"got {value!r}"
        )
    return _prefixed(FIELD, value)


def server_spec(method: str | None, budget: int) -> dict | None:
    """The default of `--kv-compression METHOD --kv-compression-budget N`."""
    if method is None:
        return None
    try:
        return validate_spec({"method": method, "budget": budget})
    except ValueError as e:
        name = str(e).split(":", 1)[0]
        flag = {"method": "kv_compression", "budget": "kv_compression_budget"}.get(name, name)
        raise ValueError(f"{flag}: {str(e).split(':', 1)[-1].strip()}") from None


def spec_for(own: dict | None, default: dict | None, prompt_len: int, min_tokens: int):
    """A request's own spec wins; the server's applies to prompts longer than `min_tokens`."""
    if own is not None:
        return own
    return default if default is not None and prompt_len > min_tokens else None
