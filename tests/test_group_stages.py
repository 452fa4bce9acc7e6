"""GRPO and RLOO on the tiny profile: the policy moves without a critic, both KL placements run, a Python
reward is optimized, and with no stage needing it the RM is skipped and eval goes on without it."""

import csv
import json

import mlflow
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tasks.runtime.files import read_jsonl
from tests.conftest import run_cmd

pytestmark = pytest.mark.slow


def set_params(root, patch: dict) -> str:
    """Apply {section: {key: value}} to params.yaml (one level deep); returns the old text to restore."""
    text = (root / "params.yaml").read_text()
    p = yaml.safe_load(text)
    for section, values in patch.items():
        p[section] = {**(p.get(section) or {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return text


def changed(a: dict, b: dict) -> int:
    return sum(not (a[k] == b[k]).all() for k in a)


def test_grpo_and_rloo_stages_train_without_a_critic(tiny_pipeline):
    root, api = tiny_pipeline["root"], tiny_pipeline["prefect_api"]
    old = set_params(root, {"pipeline": {"algorithms": ["ppo", "dpo", "rto", "grpo", "rloo"]}})
    try:
        run_cmd(root, "dvc", "repro", "grpo", "rloo", PREFECT_API_URL=api)
    finally:
        (root / "params.yaml").write_text(old)
    sft = load_file(root / "models/sft/model.safetensors")
    for stage, kl_term in (("grpo", "kl_loss"), ("rloo", None)):
        trained = load_file(root / f"models/{stage}/model.safetensors")
        assert changed(sft, trained) == len(sft), stage  # every tensor moved
        rows = list(csv.DictReader(open(root / f"metrics/{stage}_steps.csv")))
        assert len(rows) == 4 and {"score", "rm_score", "kl", "policy_loss", "clipfrac", "gold_score"} <= rows[0].keys()
        assert "value_loss" not in rows[0]  # no critic
        assert (kl_term in rows[0]) if kl_term else ("kl_loss" not in rows[0])  # GRPO: KL as a loss term (k3)
        assert json.loads((root / f"metrics/{stage}.json").read_text())["iterations"] == 4
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rlhf-pipeline"], filter_string="tags.dvc_stage = 'grpo'")
    assert runs.iloc[0]["params.algorithm"] == "grpo" and runs.iloc[0]["params.group_size"] == "4"
    assert runs.iloc[0]["params.kl_in"] == "loss" and runs.iloc[0]["params.reward"] == "rm"
    versions = mlflow.MlflowClient().search_model_versions("name = 'rlhf-policy'")
    assert {"grpo", "rloo"} <= {v.tags.get("algorithm") for v in versions}


@pytest.mark.parametrize(
    "stage, patch",
    [("grpo", {"kl_in": "reward", "scale_rewards": False}), ("rloo", {"kl_in": "loss"})],
    ids=["grpo-kl-in-reward-dr-grpo", "rloo-kl-as-loss"],
)
def test_the_other_kl_placement_runs(tiny_pipeline, tmp_path, stage, patch):
    from tasks import config
    from tasks.rl.ppo import train_ppo

    root = tiny_pipeline["root"]
    run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=tiny_pipeline["prefect_api"])
    params = config.read_params(root / "params.yaml")
    cfg = config.load(stage, params).model_copy(update={**patch, "iterations": 2})
    out = train_ppo(cfg, policy_inputs(root), tmp_path / stage, stage=stage)
    history = out.history
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(r["policy_loss"])) for r in history)
    assert ("kl_loss" in history[0]) == (cfg.kl_in == "loss")
    assert "value_loss" not in history[0]  # no critic without GAE
    sft = load_file(root / "models/sft/model.safetensors")
    assert changed(sft, load_file(tmp_path / stage / "model.safetensors")) > 0


def policy_inputs(root, rm_dir=None):
    from tasks.rl.ppo import OnlineInputs

    prompts = [json.loads(line)["prompt"] for line in open(root / "data/prepared/policy.jsonl")]
    return OnlineInputs(prompts, [], root / "models/sft", rm_dir or root / "models/rm")


def test_a_new_advantage_estimator_runs_through_config_alone(tiny_pipeline, tmp_path):
    """A toy estimator (every token's advantage: the response's summed reward minus the batch mean), registered
    in tasks/losses.py and named in the section: the PPO loop runs it, no critic is built, the policy changes."""
    from tasks import config, losses
    from tasks.rl.ppo import train_ppo

    calls = []

    @losses.register_advantage("toy")
    def toy(rewards, values, mask, cfg):
        calls.append((rewards.shape, values))
        total = rewards.sum(1)
        return (total - total.mean())[:, None] * mask, None

    try:
        root = tiny_pipeline["root"]
        run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=tiny_pipeline["prefect_api"])
        cfg = config.load("ppo", config.read_params(root / "params.yaml"))
        cfg = cfg.model_copy(update={"advantage": "toy", "iterations": 2, "ptx_coef": 0.0})
        out = train_ppo(cfg, policy_inputs(root), tmp_path / "toy", stage="ppo")
    finally:
        losses.ADVANTAGE_ESTIMATORS.pop("toy")
    assert len(calls) == 2 and all(values is None for _, values in calls)  # no critic: no values
    assert calls[0][0][0] == cfg.rollout_batch_size
    assert "value_loss" not in out.history[0]
    sft = load_file(root / "models/sft/model.safetensors")
    assert changed(sft, load_file(tmp_path / "toy" / "model.safetensors")) > 0


def test_ppo_on_a_python_reward_without_an_rm_starts_its_critic_from_sft(tiny_pipeline, tmp_path):
    """No RM trained (models/rm records 'skipped'): PPO's critic is SFT with a fresh head, the reward a function."""
    from tasks import config
    from tasks.rl.ppo import train_ppo

    root = tiny_pipeline["root"]
    skipped_rm = tmp_path / "rm"
    skipped_rm.mkdir()
    (skipped_rm / "SKIPPED").write_text("rm: no stage optimizes it\n")
    params = config.read_params(root / "params.yaml")
    update = {"reward": {"tasks.label.gold:shorter": 1.0}, "iterations": 1, "ptx_coef": 0.0}
    cfg = config.load("ppo", params).model_copy(update=update)
    history = train_ppo(cfg, policy_inputs(root, skipped_rm), tmp_path / "ppo").history
    assert (
        "rm_score" not in history[0] and "value_loss" in history[0] and "reward_tasks.label.gold.shorter" in history[0]
    )


def mean_rule_reward(model_dir, tok, prompts, gen) -> float:
    """tasks.label.gold:shorter on 2 seeded samples of each prompt: the same draws for every model."""
    from tasks.label.gold import scored_text, shorter
    from tasks.lm.generation import sample
    from tasks.lm.models import load_lm
    from tasks.runtime.context import SINGLE_PROCESS

    model, _ = load_lm(model_dir)
    samples = sample(model, tok, prompts, 2, gen, 7, SINGLE_PROCESS, 64)
    return sum(shorter(scored_text(prompts[x["prompt_index"]], x["text"])) for x in samples) / len(samples)


def test_a_rule_reward_is_optimized_and_the_rm_is_skipped(tiny_pipeline):
    """GRPO on `tasks.label.gold:shorter` (minus the word count): the policy's responses to held-out prompts get
    shorter than SFT's on the same draws; no stage uses the RM, so the rm stage records 'skipped' and eval
    reports without RM numbers."""
    from tasks import config
    from tasks.lm.models import load_lm

    root, api = tiny_pipeline["root"], tiny_pipeline["prefect_api"]
    kl = {"estimator": "k3", "coef": 0.01, "adaptive": False, "target": 5.0, "horizon": 10000}
    patch = {
        "pipeline": {"algorithms": ["grpo"]},
        "grpo": {"reward": "tasks.label.gold:shorter", "iterations": 6, "ppo_epochs": 4, "kl": kl},
    }
    old = set_params(root, patch)
    try:
        run_cmd(root, "dvc", "repro", "eval", PREFECT_API_URL=api)
        gen = config.load("grpo", config.read_params(root / "params.yaml")).generation
    finally:
        (root / "params.yaml").write_text(old)
    assert (root / "models/rm/SKIPPED").exists()
    assert json.loads((root / "metrics/rm.json").read_text()) == {"skipped": 1}
    rows = list(csv.DictReader(open(root / "metrics/grpo_steps.csv")))
    assert len(rows) == 6 and "reward_tasks.label.gold.shorter" in rows[0] and "rm_score" not in rows[0]
    prompts = [json.loads(line)["prompt"] for line in open(root / "data/prepared/eval.jsonl")][:64]
    tok = load_lm(root / "models/sft")[1]
    before, after = (mean_rule_reward(root / f"models/{m}", tok, prompts, gen) for m in ("sft", "grpo"))
    print(f"tasks.label.gold:shorter on 64 held-out prompts x 2: SFT {before:.3f}, GRPO {after:.3f}")
    assert after > before  # 4 seeds of this run in-process: +0.57 to +1.25 words
    grpo = json.loads((root / "metrics/eval/grpo.json").read_text())
    assert "rm_score" not in grpo and "win_rate_rm" not in grpo and "kl" in grpo


def test_eval_reports_every_judge_with_lc_and_position_consistency(tiny_pipeline):
    """The eval task with every kind of judge — gold, the RM, the held-out RM, an LM judge (the SFT model itself), a
    pairwise function that always answers A and a pointwise function: each gets a win rate, an LC win rate and
    W/D/L vs SFT, and its agreement with the held-out labels (and gold); the always-A judge only ties. The
    held-out RM trained on prompts no pair of rm's or dpo's has (read from the files)."""
    from tasks import config
    from tasks.data.splits import is_heldout
    from tasks.eval.evaluate import Judging, evaluate_policies
    from tasks.runtime.context import SINGLE_PROCESS

    root = tiny_pipeline["root"]
    run_cmd(root, "dvc", "repro", "rm", "heldout_rm", PREFECT_API_URL=tiny_pipeline["prefect_api"])
    train, held = (read_jsonl(root / f"data/comparisons/{f}.jsonl") for f in ("pairs", "heldout"))
    assert held and not {p["prompt_id"] for p in train} & {p["prompt_id"] for p in held}
    assert len(train) + len(held) == len(read_jsonl(root / "data/samples/pairs.jsonl"))
    heldout_rm = json.loads((root / "metrics/heldout_rm.json").read_text())
    own_validation = {p["prompt_id"] for p in held if is_heldout(p["prompt_id"], 0.25)}
    assert heldout_rm["heldout_n_pairs"] == sum(p["prompt_id"] in own_validation for p in held) > 0

    params = config.read_params(root / "params.yaml")
    judges = ["gold", "rm", "heldout_rm", "lm", "tests.scorers:prefer_first", "tests.scorers:more_the"]
    patch = {"max_prompts": 4, "bootstrap_resamples": 100, "judges": judges, "judge_model": "models/sft"}
    cfg = config.load("eval", params).model_copy(update=patch)
    prompts = [json.loads(line)["prompt"] for line in open(root / "data/prepared/eval.jsonl")]
    texts = [json.loads(line)["text"] for line in open(root / "data/prepared/pretrain.jsonl")]
    rm_dirs = {"rm": root / "models/rm", "heldout_rm": root / "models/heldout_rm"}
    judging = Judging(
        judges, "heldout_rm", "tasks.label.gold:vader", rm_dirs, held, 0.25, (24, 24), root / "models/sft"
    )
    out = evaluate_policies(
        {"sft_copy": root / "models/sft"}, root / "models/sft", cfg, judging, prompts, texts, SINGLE_PROCESS
    )
    m = out["policies"]["sft_copy"]["metrics"]
    names = ("gold", "rm", "heldout_rm", "lm", "tests.scorers.prefer_first", "tests.scorers.more_the")
    for name in names:
        assert 0 <= m[f"win_rate_{name}"] <= 1 and 0 <= m[f"lc_win_rate_{name}"] <= 1, name
        assert m[f"win_rate_{name}_ci_low"] <= m[f"win_rate_{name}"] <= m[f"win_rate_{name}_ci_high"], name
    assert m["win_rate"] == m["win_rate_heldout_rm"] and "proxy_gap_heldout_rm_ci_low" in m
    assert m["win_rate_tests.scorers.prefer_first"] == 0.5 and m["position_consistency_tests.scorers.prefer_first"] == 0
    assert 0 <= m["position_consistency_lm"] <= 1 and "position_consistency_tests.scorers.more_the" not in m
    assert m["n_wins_lm"] + m["n_draws_lm"] + m["n_losses_lm"] == 4 and "length_diff_ci_low" in m
    sft = out["policies"]["sft"]["metrics"]
    assert sft["win_rate_lm"] == 0.5 and sft["lc_win_rate_gold"] == pytest.approx(0.5)
    agree = out["judges"]
    assert agree["n_pairs_heldout_rm"] == heldout_rm["heldout_n_pairs"]  # never a pair it trained on
    assert agree["label_agreement_heldout_rm"] == pytest.approx(heldout_rm["heldout_accuracy"], abs=1e-6)
    for name in names:
        assert 0 <= agree[f"label_agreement_{name}_ci_low"] <= agree[f"label_agreement_{name}_ci_high"] <= 1, name
        if name != "heldout_rm":
            assert agree[f"n_pairs_{name}"] == len(held), name
    assert agree["label_agreement_tests.scorers.prefer_first"] == 0.5  # an always-A judge agrees with nothing
    assert "gold_agreement_gold" not in agree and 0 <= agree["gold_agreement_rm"] <= 1
