"""`rloo` stage: RLOO (no critic, leave-one-out baseline) of models/sft against the reward -> models/rloo."""

from flows.entry import run_policy_stage
from flows.grpo import knobs  # the same knobs tell RLOO runs apart


def train(cfg, out_dir, ctx, on_step):
    """The training itself (one of the training processes): SFT model, the reward, policy prompts -> out_dir."""
    from flows.online import train_online
    from tasks.rl.ppo import train_ppo

    return train_online(train_ppo, "rloo", cfg, out_dir, ctx, on_step)


if __name__ == "__main__":
    run_policy_stage("rloo", train, knobs)
