"""`rloo` stage: RLOO (no critic, leave-one-out baseline) of models/sft against the reward -> models/rloo."""

from flows.group import main

if __name__ == "__main__":
    main("rloo")
