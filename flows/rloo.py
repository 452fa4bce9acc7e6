"""`rloo` stage: RLOO (no critic, leave-one-out baseline) of models/sft against the reward -> models/rloo."""

from flows.common import skipped_early

if __name__ == "__main__" and not skipped_early("rloo"):  # off by default: skipping costs no torch import
    from flows.group import main

    main("rloo")
