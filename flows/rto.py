"""`rto` stage: PPO with the dpo model's token-wise implicit reward added (RTO) -> models/rto."""

from flows.entry import run_policy_stage


def train(cfg, out_dir, ctx, on_step):
    """The training itself (one of the training processes): SFT, RM and DPO models, policy prompts -> out_dir."""
    from flows.online import train_online
    from flows.paths import model_dir
    from tasks.rl.rto import train_rto

    return train_online(train_rto, "rto", cfg, out_dir, ctx, on_step, dpo_dir=model_dir("dpo"))


def knobs(cfg) -> dict:
    from flows.online import reward_label

    return {
        "kl_coef": cfg.kl.coef,
        "token_beta": cfg.token_beta,
        "token_clip": cfg.token_clip,
        "reward": reward_label(cfg.reward),
    }


if __name__ == "__main__":
    run_policy_stage("rto", train, knobs)
