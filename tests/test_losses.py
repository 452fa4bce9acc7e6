"""Losses against hand-computed values."""
import math

import pytest
import torch

from tasks.losses import IGNORE, completion_nll, sft_loss, token_logprobs


def test_completion_only_loss_matches_hand_computation():
    # One sequence of 4 tokens; the first two are prompt (masked), the last two completion.
    # Position t predicts token t+1, so only logits[1] (-> token 2) and logits[2] (-> token 1) count.
    logits = torch.zeros(1, 4, 3)
    logits[0, 2] = torch.tensor([0.0, math.log(3.0), 0.0])   # softmax = [1/5, 3/5, 1/5]
    labels = torch.tensor([[IGNORE, IGNORE, 2, 1]])
    # -(log 1/3 + log 3/5) / 2 = (ln 3 + ln 5/3) / 2 = ln(5) / 2
    assert sft_loss(logits, labels).item() == pytest.approx(math.log(5) / 2, abs=1e-6)
    total, count = completion_nll(logits, labels)
    assert count.item() == 2 and total.item() == pytest.approx(math.log(5), abs=1e-6)


def test_prompt_and_padding_logits_do_not_matter():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 1, IGNORE], [IGNORE, 2, 2, IGNORE, IGNORE, IGNORE]])
    before = sft_loss(logits, labels)
    changed = logits.clone()
    changed[0, 0] += 100.0       # predicts a prompt token
    changed[0, 5] -= 50.0        # last position predicts nothing
    changed[1, 3:] += 7.0        # predicts padding
    assert torch.allclose(sft_loss(changed, labels), before)


def test_per_token_mean_weights_every_token_equally():
    # Row 0 has 1 completion token with loss ln 3, row 1 has 3 tokens with loss ln 3 each:
    # a per-token mean is ln 3 whatever the split, and (sum, count) = (4 ln 3, 4).
    logits = torch.zeros(2, 5, 3)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, IGNORE, 0], [IGNORE, 1, 2, 0, IGNORE]])
    total, count = completion_nll(logits, labels)
    assert count.item() == 4 and total.item() == pytest.approx(4 * math.log(3), abs=1e-6)


def test_token_logprobs_use_the_sampling_temperature():
    logits = torch.tensor([[[2.0, 0.0]]])
    t = 2.0  # softmax([1, 0]) -> p(0) = e / (e + 1)
    got = token_logprobs(logits, torch.tensor([[0]]), temperature=t).item()
    assert got == pytest.approx(math.log(math.e / (math.e + 1)), abs=1e-6)
