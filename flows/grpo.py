"""`grpo` stage: GRPO (no critic, group-normalized advantages) of models/sft against the reward -> models/grpo."""

from flows.group import main

if __name__ == "__main__":
    main("grpo")
