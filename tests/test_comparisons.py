"""Which labeled pairs DPO trains on: all of a prompt's, or RLHFlow's best vs worst (hand-computed groups)."""

from tasks.train.comparisons import ComparisonGroup, Pair, best_vs_worst


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
