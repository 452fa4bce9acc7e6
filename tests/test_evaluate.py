"""Win rate and KL against hand-computed examples."""
import pytest
import torch

from tasks.evaluate import sequence_kl, win_rate


def test_win_rate_counts_ties_as_half():
    assert win_rate([1.0, 0.0, 0.5, 0.2], [0.0, 1.0, 0.5, 0.1]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    same = [0.3, -0.2, 0.9]
    assert win_rate(same, same) == 0.5


def test_sequence_kl_hand_computed_and_zero_for_identical_policies():
    lp = [torch.tensor([-1.0, -2.0]), torch.tensor([-0.5])]
    ref = [torch.tensor([-1.5, -2.5]), torch.tensor([-1.5])]
    assert sequence_kl(lp, ref) == pytest.approx((1.0 + 1.0) / 2)
    assert sequence_kl(lp, lp) == 0.0
