"""Losses against hand-computed values."""

import math

import pytest
import torch

from tasks.losses import IGNORE, completion_nll, sft_loss, token_logprobs


def test_completion_only_loss_matches_hand_computation():
    # One sequence of 4 tokens; the first two are prompt (masked), the last two completion.
    # Position t predicts token t+1, so only logits[1] (-> token 2) and logits[2] (-> token 1) count.
    logits = torch.zeros(1, 4, 3)
    logits[0, 2] = torch.tensor([0.0, math.log(3.0), 0.0])  # softmax = [1/5, 3/5, 1/5]
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
    changed[0, 0] += 100.0  # predicts a prompt token
    changed[0, 5] -= 50.0  # last position predicts nothing
    changed[1, 3:] += 7.0  # predicts padding
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


def test_bradley_terry_loss_hand_computed():
    from tasks.losses import reward_model_loss

    # Prompt 0 has two pairs with reward gaps 0 and ln 3; prompt 1 one pair with gap -ln 3.
    # -log σ(0) = ln 2; -log σ(ln 3) = ln(4/3); -log σ(-ln 3) = ln 4.
    rc = torch.tensor([1.0, math.log(3.0), 0.0])
    rr = torch.tensor([1.0, 0.0, math.log(3.0)])
    group = torch.tensor([0, 0, 1])
    per_prompt = [(math.log(2) + math.log(4 / 3)) / 2, math.log(4)]
    assert reward_model_loss(rc, rr, group).item() == pytest.approx(sum(per_prompt) / 2, abs=1e-6)
    # margin m = ln 3 on the second pair turns its gap into 0 -> ln 2.
    margin = torch.tensor([0.0, math.log(3.0), 0.0])
    expect = ((math.log(2) + math.log(2)) / 2 + math.log(4)) / 2
    assert reward_model_loss(rc, rr, group, margin).item() == pytest.approx(expect, abs=1e-6)
    # centering adds η · mean((r_c + r_r)²) = 0.1 · (4 + 3·(ln 3)² ... computed directly)
    sq = ((rc + rr) ** 2).mean().item()
    got = reward_model_loss(rc, rr, group, center_coef=0.1).item()
    assert got == pytest.approx(sum(per_prompt) / 2 + 0.1 * sq, abs=1e-6)


def test_simulated_annotator_probabilities():
    from tasks.losses import preference_probability

    ga, gb = torch.tensor([0.5, 0.2, 0.3]), torch.tensor([0.5, 0.4, 0.3 - 0.1 * math.log(3)])
    p = preference_probability(ga, gb, tau=0.1)
    # σ(0) = 1/2; σ(-2) = 1/(1+e²); σ(ln 3) = 3/4
    assert p.tolist() == pytest.approx([0.5, 1 / (1 + math.e**2), 0.75], abs=1e-6)
    assert preference_probability(ga, gb, tau=0).tolist() == [0.5, 0.0, 1.0]  # noiseless, ties 1/2


def test_simulated_labeler_follows_the_probabilities():
    from types import SimpleNamespace

    from tasks.label.labelers import SimulatedLabeler

    comps = [{"text": t, "ended": True, "gold": g} for t, g in [("a", 1.0), ("b", 0.0), ("c", 0.5), ("d", 0.9)]]
    groups = [{"prompt_id": f"p{i}", "prompt": "x", "completions": comps} for i in range(500)]
    pairs = SimulatedLabeler(SimpleNamespace(tau=0.5, seed=0)).label(groups)
    assert len(pairs) == 500 * 6  # all K-choose-2 pairs
    ab = [p for p in pairs if {p["chosen"], p["rejected"]} == {"a", "b"}]
    share = sum(p["chosen"] == "a" for p in ab) / len(ab)
    assert share == pytest.approx(1 / (1 + math.exp(-2)), abs=0.05)  # σ((1 - 0) / 0.5)
