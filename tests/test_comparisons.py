"""Which labeled pairs DPO trains on: all of a prompt's, or RLHFlow's best vs worst; how an RM's rewards are scored
against them (hand-computed groups)."""

from tasks.train.comparisons import ComparisonGroup, Pair, accuracies, best_vs_worst, prompt_hits


def group(*pairs) -> ComparisonGroup:
    return ComparisonGroup("p", [1], [[2], [3], [4], [5]], [Pair(c, r, 0.0, g, h) for c, r, g, h in pairs])


def test_best_vs_worst_keeps_the_most_winning_over_the_least():
    # shares: 0 wins 2/2, 1 wins 0/3, 2 wins 1/2, 3 wins 1/1 -> 0 (first of the two at 1.0) over 1
    g = group((0, 1, 0.9, 0.1), (0, 2, 0.9, 0.5), (2, 1, 0.5, 0.1), (3, 1, 0.7, 0.1))
    kept = best_vs_worst(g)
    assert kept.pairs == [Pair(0, 1, 0.0, 0.9, 0.1)]
    assert kept.responses == g.responses and kept.query == g.query  # the completions stay; one pair trains


def test_best_vs_worst_builds_the_pair_even_when_it_was_not_labeled_and_keeps_a_cycle():
    # 0 beat 1 and 2; 3 lost to 1 and 2: 0 over 3, a pair no one labeled directly (no gold known: None)
    kept = best_vs_worst(group((0, 1, None, None), (0, 2, None, None), (1, 3, None, None), (2, 3, None, None)))
    assert kept.pairs == [Pair(0, 3, 0.0, None, None)]
    cycle = group((0, 1, None, None), (1, 2, None, None), (2, 0, None, None))  # every share 1/2
    assert best_vs_worst(cycle).pairs == [Pair(0, 1, 0.0, None, None)]


def test_prompt_hits_count_label_and_gold_agreement_per_prompt_and_accuracies_sum_them():
    # prompt 1: rewards order 0 > 1 > 2; labels 0>1 (right), 2>1 (wrong), 0>2 (right); gold agrees with the
    # labels on 0>1, says 1>2 on the second (right for the rewards) and ties on the third (skipped).
    # prompt 2: one pair, rewards 1 > 0, label 0>1 (wrong), no gold.
    one = ComparisonGroup(
        "a", [1], [[2], [3], [4]], [Pair(0, 1, 0.0, 0.9, 0.1), Pair(2, 1, 0.0, 0.1, 0.5), Pair(0, 2, 0.0, 0.3, 0.3)]
    )
    two = ComparisonGroup("b", [1], [[2], [3]], [Pair(0, 1, 0.0, None, None)])
    rewards = [[3.0, 2.0, 1.0], [0.0, 1.0]]
    assert prompt_hits([one, two], rewards) == {
        "hits": [2, 0],
        "totals": [3, 1],
        "gold_hits": [2, 0],
        "gold_totals": [2, 0],
    }
    assert accuracies([one, two], rewards) == {"accuracy": 0.5, "n_pairs": 4, "gold_accuracy": 1.0}
