"""Which prompt positions a compressed request keeps: StreamingLLM, SnapKV, PyramidKV and H2O.

The one place the selection rules live; the runtime feeds it one layer's keys and queries and
keeps what it returns. The rules follow NVIDIA kvpress 0.5.5 (StreamingLLMPress, SnapKVPress,
PyramidKVPress, ObservedAttentionPress) so the two can be compared position for position:
`budget` is what kvpress calls `int(n * (1 - compression_ratio))`, the tokens kept per KV head.
H2O keeps going during decoding; that rule (accumulated attention per private slot, eviction
in steps) lives with the runtime's state in `runtime.kv_compression.h2o`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METHODS = ("streamingllm", "snapkv", "pyramidkv", "h2o")
_OPTIONS = {
    "streamingllm": {"n_sink": 4},
    "snapkv": {"window_size": 64, "kernel_size": 5},
    "pyramidkv": {"window_size": 64, "kernel_size": 5, "beta": 20},
    # recent_size None: half the budget, as in the H2O paper; window_size None: every prompt query
    "h2o": {"recent_size": None, "window_size": None},
}
_QUERY_CHUNK = 256  # observation queries scored at once, so [heads, chunk, n] stays small


def _field(name: str, msg: str) -> ValueError:
    """Names the field alone ("budget: ..."); callers prefix where it came from."""
    return ValueError(f"{name}: {msg}")


def _int_field(spec: dict, name: str, minimum: int) -> int:
    value = spec[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise _field(name, f"must be {kind} (got {value!r})")
    return value


def validate_spec(spec: dict) -> dict:
    """The request's `kv_compression` object with every option filled in.

    Options per method (defaults as kvpress): streamingllm n_sink=4; snapkv window_size=64,
    kernel_size=5 (odd); pyramidkv the same and beta=20; h2o recent_size=budget//2 and
    window_size=None (every prompt query scores; an int: only the last ones). A ValueError
    names the field first ("budget: must be ...") so callers can prefix where it came from.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"kv_compression: must be an object with method and budget, got {spec!r}")
    method = spec.get("method")
    if method not in METHODS:
        raise _field("method", f"must be one of {', '.join(METHODS)} (got {method!r})")
    if "budget" not in spec:
        raise _field("budget", "is required (the KV tokens kept per layer and head)")
    unknown = sorted(set(spec) - {"method", "budget", *_OPTIONS[method]})
    if unknown:
        allowed = ", ".join(_OPTIONS[method]) or "none"
        raise _field(unknown[0], f"is not an option of {method} (options: {allowed})")
    out = {"method": method, **_OPTIONS[method], **spec}
    budget = _int_field(out, "budget", 1)
    if "n_sink" in out:
        if _int_field(out, "n_sink", 0) > budget:
            raise _field("n_sink", f"must not exceed budget ({budget}), got {out['n_sink']}")
    if out.get("window_size") is not None:
        if _int_field(out, "window_size", 1) > budget and method != "h2o":
            raise _field(
                "window_size", f"must not exceed budget ({budget}), got {out['window_size']}"
            )
    if "kernel_size" in out and _int_field(out, "kernel_size", 1) % 2 == 0:
        raise _field(
            "kernel_size", f"must be odd, so pooling keeps the length (got {out['kernel_size']})"
        )
    if "beta" in out:
        _int_field(out, "beta", 1)
    if "recent_size" in out:
        if out["recent_size"] is None:
            out["recent_size"] = budget // 2
        if _int_field(out, "recent_size", 0) > budget:
            raise _field(
                "recent_size", f"must not exceed budget ({budget}), got {out['recent_size']}"
            )
    return out


def queries_needed(spec: dict, prompt_len: int) -> int:
    """How many of the last prompt positions' queries `select_positions` reads (0: none)."""
    if spec["budget"] >= prompt_len or spec["method"] == "streamingllm":
        return 0
    window = spec["window_size"]
    # h2o without a window: every prompt query votes, as in kvpress's ObservedAttentionPress
    return prompt_len if window is None else min(window, prompt_len)


def layer_budget(spec: dict, prompt_len: int, layer: int, num_layers: int) -> int:
    """Positions kept per KV head in `layer`; the prompt length when it fits the budget.

    PyramidKV follows kvpress's schedule: a straight line from `max_num` at layer 0 down to
    `min_num = budget / beta` at the last layer, averaging the budget, and the flat SnapKV budget
    when the line would leave the range [window_size, prompt_len] (for example budget <
    beta * window_size).
    """
    n, budget = prompt_len, spec["budget"]
    if budget >= n:
        return n
    if spec["method"] != "pyramidkv":
        return budget
    window, kept = spec["window_size"], float(budget)
    min_num = kept / spec["beta"]
    max_num = kept * 2 - min_num
    if max_num >= n - window:
        max_num = n - window
        min_num = kept * 2 - max_num
    if not (n >= max_num >= min_num >= window):
        return max(1, round(kept))
    steps = (max_num - min_num) / (num_layers - 1) if num_layers > 1 else 0.0
    return round(max_num - layer * steps)


def select_positions(
    method: str,
    *,
    keys: torch.Tensor,
    queries: torch.Tensor | None,
    budget: int,
    layer: int,
    num_layers: int,
    options: dict,
) -> torch.Tensor:
    """The prompt positions one layer keeps, per KV head.

    keys: [num_kv_heads, n, head_dim] post-rotary prompt keys of the layer (float32).
    queries: [num_q_heads, w, head_dim] post-rotary queries of the last w prompt positions
    (w >= `queries_needed`; None for streamingllm). Returns LongTensor [num_kv_heads, k_layer],
    sorted ascending; k_layer = `layer_budget(...)`. ValueError names a bad option.
    """
    extra = {k: v for k, v in options.items() if k not in ("method", "budget")}
    spec = validate_spec({"method": method, "budget": budget, **extra})
    if keys.dim() != 3:
        raise ValueError(
            f"keys: expected [num_kv_heads, n, head_dim], got shape {tuple(keys.shape)}"
        )
    num_kv_heads, n, _ = keys.shape
    kept = layer_budget(spec, n, layer, num_layers)
    if kept >= n:
        return torch.arange(n, device=keys.device).expand(num_kv_heads, n).clone()
    if method == "streamingllm":
        scores = _streaming_scores(num_kv_heads, n, kept, spec["n_sink"], keys.device)
    else:
        need = queries_needed(spec, n)
        if queries is None or queries.dim() != 3 or queries.shape[1] < need:
            got = None if queries is None else tuple(queries.shape)
            raise ValueError(
                f"queries: {method} needs [num_q_heads, >={need}, head_dim], got {got}"
            )
        if queries.shape[0] % num_kv_heads:
            raise ValueError(
                f"queries: {queries.shape[0]} query heads do not group over {num_kv_heads} KV heads"
            )
        queries = queries[:, queries.shape[1] - need :]
        if method == "h2o":
            scores = _h2o_scores(keys, queries, spec["recent_size"])
        else:
            scores = _snapkv_scores(keys, queries, spec["kernel_size"])
    return scores.topk(kept, dim=-1).indices.sort(dim=-1).values


def _streaming_scores(heads: int, n: int, kept: int, n_sink: int, device) -> torch.Tensor:
    """1 for the sinks and the last `kept - n_sink` positions, 0 between."""
    scores = torch.ones(heads, n, device=device)
    scores[:, n_sink : n_sink + n - kept] = 0
    return scores


def _attention_chunks(keys: torch.Tensor, queries: torch.Tensor):
    """Softmax attention of the queries (the last w prompt positions) over all n keys, causal.

    Yields (first query row, probs [num_q_heads, chunk, n] float32) so long prompts stay small.
    """
    num_kv_heads, n, head_dim = keys.shape
    groups = queries.shape[0] // num_kv_heads
    k = keys.float().repeat_interleave(groups, dim=0)  # [num_q_heads, n, head_dim]
    q = queries.float()
    w = q.shape[1]
    scale = 1.0 / math.sqrt(head_dim)
    cols = torch.arange(n, device=keys.device)
    for start in range(0, w, _QUERY_CHUNK):
        block = q[:, start : start + _QUERY_CHUNK]
        logits = torch.matmul(block, k.transpose(1, 2)) * scale  # [Hq, c, n]
        rows = n - w + start + torch.arange(block.shape[1], device=keys.device)
        logits = logits.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
        yield start, torch.softmax(logits, dim=-1)


def _group_mean(scores: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """[num_q_heads, n] -> [num_kv_heads, n]: a KV head's score is the mean over its query heads."""
    return scores.view(num_kv_heads, -1, scores.shape[-1]).mean(dim=1)


def _snapkv_scores(keys: torch.Tensor, queries: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Mean window attention per position, average-pooled over neighbours (zero padding counted),
    then averaged over each KV head's query heads; the window itself scores above everything."""
    num_kv_heads, n, _ = keys.shape
    w = queries.shape[1]
    total = torch.zeros(queries.shape[0], n - w, device=keys.device)
    for _, probs in _attention_chunks(keys, queries):
        total += probs[..., : n - w].sum(dim=1)
    mean = total / w  # [Hq, n - w]
    pooled = F.avg_pool1d(mean.unsqueeze(0), kernel_size, stride=1, padding=kernel_size // 2)
    scores = _group_mean(pooled.squeeze(0), num_kv_heads)
    return F.pad(scores, (0, w), value=float("inf"))


def observed_attention(
    keys: torch.Tensor, queries: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention each prompt position received from the given (last w) prompt queries.

    Returns (attn_sum [num_kv_heads, n], n_observed [n]): the sum over queries, averaged over each
    KV head's query heads, and how many of the queries saw the position (causal). H2O's running
    score of a position is attn_sum / n_observed, kvpress's ObservedAttentionPress score.
    """
    num_kv_heads, n, _ = keys.shape
    w = queries.shape[1]
    total = torch.zeros(queries.shape[0], n, device=keys.device)
    for _, probs in _attention_chunks(keys, queries):
        total += probs.sum(dim=1)
    first_row = n - w
    n_observed = n - torch.clamp(torch.arange(n, device=keys.device), min=first_row)
    return _group_mean(total, num_kv_heads), n_observed.float()


def _h2o_scores(keys: torch.Tensor, queries: torch.Tensor, recent_size: int) -> torch.Tensor:
    attn_sum, n_observed = observed_attention(keys, queries)
    positions = torch.arange(keys.shape[1], device=keys.device).expand_as(attn_sum)
    return _h2o_scores_of(attn_sum, n_observed.expand_as(attn_sum), positions, recent_size)


def _h2o_scores_of(attn_sum, n_observed, positions, recent_size: int) -> torch.Tensor:
    """Mean attention received; the `recent_size` newest positions of each head above all."""
    scores = attn_sum / n_observed.clamp(min=1)
    if recent_size:
        newest = positions.topk(min(recent_size, positions.shape[-1]), dim=-1).indices
        scores = scores.scatter(-1, newest, float("inf"))
    return scores
