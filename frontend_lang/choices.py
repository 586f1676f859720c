"""How `select` picks a choice from the model's logprobs of each choice's tokens.

Each method gets, per choice, the logprobs of the tokens from just before the prefix's end to
the end of the choice (`[logprob, token_id, text]` entries, as SGLang's `/generate` returns
them), and returns the index of the choice it picks and the scores it compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChoiceScores:
    decision: int
    normalized_prompt_logprobs: list[float]
    input_token_logprobs: list[list] = field(default_factory=list)
    unconditional_token_logprobs: list[list] | None = None

    def meta_info(self) -> dict:
        meta = {
            "normalized_prompt_logprobs": self.normalized_prompt_logprobs,
            "input_token_logprobs": self.input_token_logprobs,
        }
        if self.unconditional_token_logprobs is not None:
            meta["unconditional_token_logprobs"] = self.unconditional_token_logprobs
        return meta


def _values(entries: list) -> list[float]:
    return [e[0] for e in entries if e[0] is not None]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("-inf")


def _argmax(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda i: scores[i])


def token_length_normalized(entries: list[list], unconditional=None) -> ChoiceScores:
    """The mean logprob per token: long choices are not penalized for their length (default)."""
    scores = [_mean(_values(e)) for e in entries]
    return ChoiceScores(_argmax(scores), scores, entries)


def greedy_token_selection(entries: list[list], unconditional=None) -> ChoiceScores:
    """What greedy decoding would pick: compare the choices token by token, the first
    difference deciding; choices that run out compare as their mean (SGLang's rule)."""
    rows = [_values(e) for e in entries]
    width = max(len(r) for r in rows)
    padded = [r + [_mean(r)] * (width - len(r)) for r in rows]
    decision = max(range(len(padded)), key=lambda i: padded[i])  # lexicographic
    return ChoiceScores(decision, [_mean(r) for r in rows], entries)


def unconditional_likelihood_normalized(
    entries: list[list], unconditional: list[list]
) -> ChoiceScores:
    """How much the context raises each choice over the choice alone: the mean of
    log p(token | context) - log p(token | choice so far), over the choice's tokens."""
    scores = []
    for cond, uncond in zip(entries, unconditional):
        c = [e[0] for e in cond[len(cond) - len(uncond) :]]
        u = [e[0] if e[0] is not None else 0.0 for e in uncond]
        scores.append(_mean([a - b for a, b in zip(c, u) if a is not None]))
    return ChoiceScores(_argmax(scores), scores, entries, unconditional)


METHODS = {
    "token_length_normalized": token_length_normalized,
    "greedy_token_selection": greedy_token_selection,
    "unconditional_likelihood_normalized": unconditional_likelihood_normalized,
}
