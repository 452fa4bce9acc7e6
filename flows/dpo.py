"""`dpo` stage: DPO / cDPO / IPO of models/sft on data/comparisons (the RM's pairs) -> models/dpo."""

from flows.entry import run_policy_stage


def train(cfg, out_dir, ctx, on_step):
    """The training itself (one of the training processes): SFT model + labeled pairs -> out_dir."""
    from flows.common import read_params
    from flows.paths import MODELS, ROUND
    from flows.round_inputs import dpo_inputs
    from flows.stages import checkpoint_dir
    from tasks import config
    from tasks.train.dpo import train_dpo

    params = read_params()
    start, pairs = dpo_inputs(params)
    if ROUND > 1:
        cfg = cfg.model_copy(update={"pairs": config.rounds(params).dpo_pairs})
    return train_dpo(cfg, start, pairs, out_dir, ctx, on_step, checkpoint_dir("dpo"), ref_dir=MODELS / "sft")


def knobs(cfg) -> dict:
    variant = "ipo" if cfg.loss_type == "ipo" else ("cdpo" if cfg.label_smoothing > 0 else "dpo")
    return {"kl_coef": cfg.kl_coef, "loss_type": cfg.loss_type, "variant": variant}


if __name__ == "__main__":
    run_policy_stage("dpo", train, knobs)
