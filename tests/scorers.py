"""Gold scorers used by tests to show that swapping the scorer changes what the RM learns."""


def more_the(text: str) -> float:
    """Prefers completions with more occurrences of the word 'the' (learnable even by a tiny model)."""
    return float(text.lower().split().count("the"))


def nan_reward(prompt, response: str) -> float:
    """A broken reward function: NaN for every response (the stage must stop with one line)."""
    return float("nan")


def fewer_words(prompt, response: str) -> float:
    """A rule reward of (prompt, response): minus the response's word count (shorter is better)."""
    return -float(len(response.split()))


def prefer_first(prompt, a: str, b: str) -> float:
    """A pairwise judge that always prefers response A: position bias and nothing else."""
    return 1.0


def not_a_probability(prompt, a: str, b: str) -> float:
    """A broken pairwise judge (eval must stop with one line)."""
    return 1.5
