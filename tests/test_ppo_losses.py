"""PPO's pure functions against hand-computed values or a plain reference loop."""

import math

import pytest
import torch

from tasks import losses


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([[math.log(0.5), math.log(0.2)]]), torch.tensor([[math.log(0.25), math.log(0.4)]])
    # k1 = log(p/q): ln 2, ln 0.5 ; k2 = ½ (ln 2)² ; k3 = q/p − 1 − ln(q/p): 0.5 − 1 + ln 2, 2 − 1 − ln 2
    assert losses.kl_estimate(logp, ref, "k1").tolist()[0] == pytest.approx([math.log(2), math.log(0.5)], abs=1e-6)
    assert losses.kl_estimate(logp, ref, "k2").tolist()[0] == pytest.approx([0.5 * math.log(2) ** 2] * 2, abs=1e-6)
    assert losses.kl_estimate(logp, ref, "k3").tolist()[0] == pytest.approx(
        [-0.5 + math.log(2), 1 - math.log(2)], abs=1e-6
    )
    with pytest.raises(ValueError):
        losses.kl_estimate(logp, ref, "k9")


def test_kl_estimators_are_unbiased_on_samples():
    torch.manual_seed(0)
    p, q = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    true_kl = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True)
    for kind in ("k1", "k3"):
        est = losses.kl_estimate(p.log()[x], q.log()[x], kind).mean().item()
        assert est == pytest.approx(true_kl, abs=0.01), kind


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 9.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    r = losses.token_rewards(kl, torch.tensor([1.0, -2.0]), mask, beta=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.25 - 2.0, 0.0, 0.0]]))
    extra = torch.tensor([[1.0, 1, 1], [1, 1, 1]])
    r2 = losses.token_rewards(kl, torch.tensor([1.0, -2.0]), mask, beta=0.5, extra=extra)
    assert torch.allclose(r2 - r, torch.tensor([[1.0, 1, 1], [1, 0, 0]]))


def gae_loop(rewards, values, gamma, lam):
    """The textbook loop for one unpadded sequence."""
    T, adv, last = len(rewards), [0.0] * len(rewards), 0.0
    for t in reversed(range(T)):
        nv = values[t + 1] if t + 1 < T else 0.0
        delta = rewards[t] + gamma * nv - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


def test_gae_matches_a_reference_loop_and_ignores_padding():
    torch.manual_seed(1)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    lengths = [5, 3, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths])
    rewards = rewards * mask
    adv, ret = losses.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for i, n in enumerate(lengths):
        ref = gae_loop(rewards[i, :n].tolist(), values[i, :n].tolist(), 0.9, 0.8)
        assert adv[i, :n].tolist() == pytest.approx(ref, abs=1e-5)
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0
        assert ret[i, :n].tolist() == pytest.approx((adv[i, :n] + values[i, :n]).tolist(), abs=1e-5)
    # hand value: one token, r = 1, V = 0.25 -> A = 0.75
    a, _ = losses.gae(torch.tensor([[1.0]]), torch.tensor([[0.25]]), torch.tensor([[1.0]]))
    assert a.item() == pytest.approx(0.75)


def test_whiten_uses_only_unmasked_entries():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w = losses.whiten(x, mask)
    assert w.tolist()[0] == pytest.approx([-1.0, 1.0, 0.0], abs=1e-3)


def test_whiten_over_processes_uses_the_global_batch():
    # Two processes holding rows {0} and {1}: all_sum adds both processes' partial sums. Simulated by
    # running the processes in lockstep: each all_sum call returns the sum of both sides' arguments.
    x = torch.tensor([[1.0, 3.0, 100.0], [5.0, 7.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    global_w = losses.whiten(x, mask)
    partials = {0: [], 1: []}

    def record(rank):
        def all_sum(t):
            partials[rank].append(t)
            return t

        return all_sum

    for r in (0, 1):  # pass 1: each side's local sums, in call order
        losses.whiten(x[r : r + 1], mask[r : r + 1], all_sum=record(r))
    # pass 2 needs the global mean first, so replay with the other side's values added (3 calls per side:
    # count, sum, squared deviations -- the last depends on the mean, recomputed from the other side's x)
    n = partials[0][0] + partials[1][0]
    mean = (partials[0][1] + partials[1][1]) / n
    for r in (0, 1):
        o = 1 - r
        other = iter([partials[o][0], partials[o][1], ((x[o : o + 1] - mean) ** 2 * mask[o : o + 1]).sum()])
        w = losses.whiten(x[r : r + 1], mask[r : r + 1], all_sum=lambda t: t + next(other))
        assert torch.allclose(w, global_w[r : r + 1], atol=1e-6)
    assert mean.item() == pytest.approx(5.0)  # (1 + 3 + 5 + 7 + 9) / 5: the padded 100 never counts


def test_clipped_policy_loss_hand_computed():
    old = torch.zeros(1, 3)
    logp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1)]])  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3)
    loss, stats = losses.ppo_policy_loss(logp, old, adv, mask, clip=0.2)
    # t0: max(-1.5, -1.2) = -1.2 ; t1: max(-0.5, -0.8) = -0.5 ; t2: max(2.2, 2.2) = 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(2 / 3)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3
    assert stats["approx_kl"] == pytest.approx(expected_kl, abs=1e-6)


def test_clipped_value_loss_hand_computed():
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.5]])
    loss, _ = losses.value_loss(v, old, ret, torch.ones(1, 2), clip=0.2)
    # t0: V_clip = 0.2: max((1-2)², (0.2-2)²) = 3.24 ; t1: max(0.25, 0.25) = 0.25
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.25) / 2, abs=1e-6)


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    up = losses.adaptive_kl_update(0.1, kl=12.0, target=6.0, horizon=100, n_steps=10)
    down = losses.adaptive_kl_update(0.1, kl=3.0, target=6.0, horizon=100, n_steps=10)
    assert up == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped to +0.2
    assert down == pytest.approx(0.1 * (1 - 0.2 * 0.1))  # error -0.5 clipped to -0.2
    assert losses.adaptive_kl_update(0.1, 6.6, 6.0, 100, 10) == pytest.approx(0.1 * (1 + 0.1 * 0.1))
    assert losses.adaptive_kl_update(0.1, 6.0, 6.0, 100, 10) == pytest.approx(0.1)


def test_entropy_of_uniform_and_peaked():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    assert losses.entropy_from_logits(logits).tolist()[0] == pytest.approx([math.log(4), 0.0], abs=1e-5)


def test_ptx_loss_is_the_lm_loss_on_every_text_token():
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[1, 2, 3]])  # the first token is never predicted
    assert losses.sft_loss(logits, labels).item() == pytest.approx(math.log(4))


def test_extreme_rewards_stay_finite():
    from types import SimpleNamespace

    from tasks.rl.actors import RunningMoments, process_scores

    cfg = SimpleNamespace(missing_eos_penalty=-1.0, running_reward_norm=True, reward_clip=5.0)
    raw = torch.tensor([1e30, -1e30, 3.0, float("1e38")])
    s = process_scores(raw, torch.tensor([True, False, True, True]), cfg, RunningMoments())
    assert torch.isfinite(s).all() and s.abs().max() <= 5.0
    kl = torch.tensor([[1e4, -1e4, 0.0, 0.0]]).expand(4, 4)
    mask = torch.ones(4, 4)
    rewards = losses.token_rewards(kl, s, mask, beta=0.1)
    adv, ret = losses.gae(rewards, torch.zeros(4, 4), mask)
    adv = losses.whiten(adv, mask)
    loss, _ = losses.ppo_policy_loss(torch.full((4, 4), 50.0), torch.zeros(4, 4), adv, mask)
    vloss, _ = losses.value_loss(torch.zeros(4, 4), torch.zeros(4, 4), ret, mask)
    assert all(torch.isfinite(t).all() for t in (rewards, adv, ret, loss, vloss))


def test_dpo_loss_is_log2_when_policy_equals_reference():
    x = torch.tensor([-5.0, -9.0])
    for eps in (0.0, 0.2):
        loss, rc, rr = losses.dpo_loss(x, x - 1, x, x - 1, beta=0.1, label_smoothing=eps)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
        assert rc.abs().sum() == 0 and rr.abs().sum() == 0


def test_dpo_sigmoid_cdpo_and_ipo_hand_computed():
    pc, pr = torch.tensor([-10.0]), torch.tensor([-12.0])
    rc, rr = torch.tensor([-11.0]), torch.tensor([-11.0])
    # h = (−10 + 11) − (−12 + 11) = 2 ; β = 0.5 -> βh = 1
    loss, c, r = losses.dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert (c.item(), r.item()) == (0.5, -0.5)
    loss, _, _ = losses.dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * math.log(1 + math.exp(-1)) + 0.1 * math.log(1 + math.e), abs=1e-6)
    # IPO: lengths 2 and 4 -> h̄ = 1/2 − (−1/4) = 3/4 ; target 1/(2β) = 1 -> (3/4 − 1)² = 1/16
    loss, _, _ = losses.dpo_loss(
        pc, pr, rc, rr, beta=0.5, loss_type="ipo", lengths=(torch.tensor([2.0]), torch.tensor([4.0]))
    )
    assert loss.item() == pytest.approx(1 / 16, abs=1e-6)


def test_rto_token_reward_hand_computed():
    dpo = torch.tensor([[-1.0, -2.0, -3.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    r = losses.rto_token_reward(dpo, ref, mask, beta1=0.05, clip=0.02)
    # β₁·Δ = 0.025 -> clipped 0.02 ; −0.05 -> −0.02 ; 0.01 ; padding 0
    assert torch.allclose(r, torch.tensor([[0.02, -0.02, 0.01, 0.0]]))
