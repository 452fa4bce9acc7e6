"""`rloo` stage: RLOO (no critic, leave-one-out baseline) of models/sft against the reward -> models/rloo."""

from flows.entry import run_policy_stage


def train(cfg, out_dir, ctx, on_step):
    """The training itself (one of the training processes): SFT model, the reward, policy prompts -> out_dir."""
    from flows.online import train_online
    from tasks.rl.ppo import train_ppo

    return train_online(train_ppo, "rloo", cfg, out_dir, ctx, on_step)


def knobs(cfg) -> dict:
    from flows.online import reward_label

    return {
        "kl_coef": cfg.kl.coef,
        "group_size": cfg.group_size,
        "kl_in": cfg.kl_in,
        "reward": reward_label(cfg.reward),
    }


if __name__ == "__main__":
    run_policy_stage("rloo", train, knobs)
