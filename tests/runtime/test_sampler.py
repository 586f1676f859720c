"""The sampler on hand-made logits: filters, penalties, seeds, bans, logprobs."""

from __future__ import annotations

import torch

from runtime.sampling.sampler import Sampler, SampleRow, apply_penalties, filter_probs
from runtime.sampling.sampling_params import SamplingParams


def row(seed=None, banned=(), inp=(), out=(), **params) -> SampleRow:
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return SampleRow(SamplingParams(**params), list(inp), list(out), gen, list(banned))


def test_filter_probs_top_k_top_p_min_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3)
    kept, ids = filter_probs(
        probs,
        top_k=torch.tensor([2, 4, 4]),
        top_p=torch.tensor([1.0, 0.7, 1.0]),
        min_p=torch.tensor([0.0, 0.0, 0.2]),
    )
    assert ids[0].tolist() == [0, 1, 2, 3]
    assert (kept > 0).tolist() == [
        [True, True, False, False],  # top_k = 2
        [True, True, False, False],  # top_p = 0.7 keeps 0.5 + 0.3
        [True, True, True, False],  # min_p = 0.2 keeps p >= 0.1
    ]


def test_top_p_always_keeps_the_best_token():
    kept, _ = filter_probs(
        torch.tensor([[0.9, 0.1]]), torch.tensor([2]), torch.tensor([0.01]), torch.tensor([0.0])
    )
    assert (kept > 0).tolist() == [[True, False]]


def test_greedy_and_banned():
    logits = torch.tensor([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0]])
    res = Sampler(3).sample(
        logits, [row(temperature=0), row(temperature=0, banned=[1])], [0, 0], False
    )
    assert res.token_ids == [1, 2]


def test_top_k_one_is_greedy_and_sampling_respects_filters():
    logits = torch.tensor([[0.0, 5.0, 4.9, -1.0]])
    s = Sampler(4)
    assert s.sample(logits, [row(top_k=1)], [0], False).token_ids == [1]
    seen = {s.sample(logits, [row(seed=i, top_k=2)], [0], False).token_ids[0] for i in range(50)}
    assert seen == {1, 2}


def test_seeded_rows_are_reproducible_whatever_the_batch():
    logits = torch.randn(4, 100)
    s = Sampler(100)
    alone = [s.sample(logits[i : i + 1], [row(seed=7)], [0], False).token_ids[0] for i in range(4)]
    together = s.sample(logits, [row(seed=7) for _ in range(4)], [0] * 4, False).token_ids
    assert alone == together


def test_temperature_sharpens():
    logits = torch.tensor([[0.0, 1.0]])
    s = Sampler(2)
    cold = sum(
        s.sample(logits, [row(seed=i, temperature=0.1)], [0], False).token_ids[0]
        for i in range(200)
    )
    warm = sum(
        s.sample(logits, [row(seed=i, temperature=2.0)], [0], False).token_ids[0]
        for i in range(200)
    )
    assert cold > 190 and 100 < warm < 170


def test_penalties():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.0])
    rep = logits.clone()
    apply_penalties(rep, row(repetition_penalty=2.0, inp=[0], out=[1]))
    assert rep.tolist() == [1.0, -4.0, 1.0, 0.0]
    fp = logits.clone()
    apply_penalties(fp, row(frequency_penalty=0.5, presence_penalty=1.0, inp=[3], out=[2, 2, 0]))
    assert fp.tolist() == [2.0 - 1.5, -2.0, 1.0 - 2.0, 0.0]


def test_logprobs_are_of_the_raw_distribution():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    res = Sampler(3).sample(logits, [row(temperature=0, banned=[2])], [2], True)
    lp = torch.log_softmax(logits[0], -1)
    assert res.token_ids == [1]
    assert abs(res.logprobs[0] - lp[1].item()) < 1e-6
    assert [t for _, t in res.top_logprobs[0]] == [2, 1]


def test_allowed_mask_constrains_greedy_and_sampled_rows_but_not_logprobs():
    logits = torch.tensor([[5.0, 1.0, 0.5, 0.0], [5.0, 1.0, 0.5, 0.0], [5.0, 1.0, 0.5, 0.0]])
    allowed = torch.tensor(
        [[False, True, True, False], [False, False, False, True], [True, True, True, True]]
    )
    rows = [row(temperature=0), row(seed=1, temperature=1.0), row(temperature=0)]
    res = Sampler(4).sample(logits, rows, [0, 0, 0], True, allowed)
    assert res.token_ids == [1, 3, 0]
    # logprobs are those of the model's distribution, not of the masked one
    assert abs(res.logprobs[0] - torch.log_softmax(logits[0], -1)[1].item()) < 1e-6
    for seed in range(20):
        r = Sampler(4).sample(
            logits[:1], [row(seed=seed, temperature=2.0)], [0], False, allowed[:1]
        )
        assert r.token_ids[0] in (1, 2)


def test_logit_bias_moves_greedy_and_sampled_choices_but_not_logprobs():
    logits = torch.tensor([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0]])
    rows = [
        row(temperature=0, logit_bias={0: 100.0}),
        row(seed=1, top_k=2, logit_bias={1: -100.0}),  # top 2 after the bias: 2 and 0
    ]
    res = Sampler(3).sample(logits, rows, [0, 0], want_logprobs=True)
    assert res.token_ids[0] == 0 and res.token_ids[1] in (0, 2)
    raw = torch.log_softmax(logits[0], -1)[0].item()
    assert abs(res.logprobs[0] - raw) < 1e-6
