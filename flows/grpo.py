"""`grpo` stage: GRPO (no critic, group-normalized advantages) of models/sft against the reward -> models/grpo."""

from flows.common import skipped_early

if __name__ == "__main__" and not skipped_early("grpo"):  # off by default: skipping costs no torch import
    from flows.group import main

    main("grpo")
