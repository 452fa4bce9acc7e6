"""`ppo` stage: PPO-ptx (PPO when ppo.ptx_coef = 0) of models/sft against models/rm -> models/ppo."""

from flows.entry import run_policy_stage


def train(cfg, out_dir, ctx, on_step):
    """The training itself (one of the training processes): SFT model, RM, policy prompts -> out_dir."""
    from flows.online import train_online
    from tasks.rl.ppo import train_ppo

    return train_online(train_ppo, "ppo", cfg, out_dir, ctx, on_step)


def knobs(cfg) -> dict:
    """What tells this stage's runs apart in MLflow (params and tags)."""
    from flows.online import reward_label

    algorithm = "ppo-ptx" if cfg.ptx_coef > 0 else "ppo"
    return {
        "algorithm": algorithm,
        "kl_coef": cfg.kl.coef,
        "ptx_coef": cfg.ptx_coef,
        "reward": reward_label(cfg.reward),
    }


if __name__ == "__main__":
    run_policy_stage("ppo", train, knobs)
