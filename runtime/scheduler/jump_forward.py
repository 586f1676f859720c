"""Jump-forward decoding: text a grammar forces is appended in one step instead of sampled.

After a sampled token, the forced continuation (say `", "age": ` in a JSON object) is
re-tokenized together with that token, so the boundary is tokenized as the model would have
written it, and the request goes back to the queue to extend those tokens as a prefill.
"""

from __future__ import annotations

from runtime.io_struct import FinishReason
from runtime.scheduler.req import Req

# Rounds of forced text per step, and the most forced tokens taken at once (the grammar
# matchers roll back at most 32 tokens).
JUMP_FORWARD_MAX_ROUNDS = 8
JUMP_FORWARD_MAX_TOKENS = 24


def accept_all(grammar, ids: list[int]) -> bool:
    """Advances the grammar past all of `ids`, or past none of them (False)."""
    n = 0
    while n < len(ids) and grammar.accept_token(ids[n]):
        n += 1
    if n < len(ids):
        grammar.rollback(n)
        return False
    return True


def can_jump(req: Req) -> bool:
    # Forced tokens have no logprobs and would bypass the incremental stop-string check.
    return req.grammar is not None and not req.return_logprob and not req.params.stop


def jump_forward(req: Req, tokenizer) -> list[int] | None:
    """Appends the forced text after the request's last (sampled) token and returns the tokens
    that replace it; None when nothing is forced."""
    grammar, last = req.grammar, req.output_ids[-1]
    forced = ""
    accepted: list[int] = []
    for _ in range(JUMP_FORWARD_MAX_ROUNDS):  # a backend may see only part of it at once
        piece = grammar.jump_forward_string()
        if not piece:
            break
        ids = tokenizer.encode(piece, add_special_tokens=False)
        if len(accepted) + len(ids) > JUMP_FORWARD_MAX_TOKENS or not accept_all(grammar, ids):
            break
        forced += piece
        accepted += ids
    if not accepted:
        return None
    grammar.rollback(len(accepted) + 1)  # back to before the sampled token
    text = tokenizer.decode([last]) + forced
    new_ids = tokenizer.encode(text, add_special_tokens=False)
    if "\ufffd" in text or tokenizer.decode(new_ids) != text:
        new_ids = [last] + accepted  # a token ending mid-character: keep the boundary
    room = req.params.max_new_tokens - (len(req.output_ids) - 1)
    new_ids = new_ids[:room]
    if not new_ids or not accept_all(grammar, new_ids):  # re-tokenized, it does not fit
        grammar.accept_token(last)
        return None
    req.output_ids[-1:] = new_ids
    if grammar.is_terminated():
        req.finished = FinishReason("stop", matched=new_ids[-1])
    elif len(req.output_ids) >= req.params.max_new_tokens:
        req.finished = FinishReason("length", length=req.params.max_new_tokens)
    return new_ids if len(new_ids) > 1 or new_ids[0] != last else None
