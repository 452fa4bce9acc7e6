"""Gold scorers used by tests to show that swapping the scorer changes what the RM learns."""


def more_the(text: str) -> float:
    """Prefers completions with more occurrences of the word 'the' (learnable even by a tiny model)."""
    return float(text.lower().split().count("the"))
