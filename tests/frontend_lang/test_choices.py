"""The select scoring methods on hand-made logprob entries."""

from __future__ import annotations

from frontend_lang.choices import (
    greedy_token_selection,
    token_length_normalized,
    unconditional_likelihood_normalized,
)


def entries(*logprobs):
    return [[lp, i, f"t{i}"] for i, lp in enumerate(logprobs)]


def test_length_normalized_prefers_the_best_mean_and_skips_none():
    e = [entries(None, -1.0, -3.0), entries(None, -1.0, -1.0, -1.0), entries(-0.1, -6.0)]
    s = token_length_normalized(e)
    assert s.decision == 1
    assert s.normalized_prompt_logprobs == [-2.0, -1.0, -3.05]


def test_greedy_follows_the_first_difference():
    # choice 0 wins on the first token although its mean is worse
    e = [entries(-0.5, -9.0), entries(-0.6, -0.1)]
    assert greedy_token_selection(e).decision == 0
    assert token_length_normalized(e).decision == 1


def test_unconditional_normalization_removes_the_choice_prior():
    # choice 1 is likelier in context, but much likelier anyway without it
    cond = [entries(-1.0, -2.0, -2.0), entries(-1.0, -1.0, -1.0)]
    uncond = [entries(None, -4.0), entries(None, -0.5)]
    s = unconditional_likelihood_normalized(cond, uncond)
    assert s.decision == 0
    assert s.normalized_prompt_logprobs == [(-2.0 + -2.0 + 4.0) / 2, (-1.0 + -1.0 + 0.5) / 2]
