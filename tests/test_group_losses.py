"""GRPO's and RLOO's pure functions (group advantages, loss aggregation) and the reward spec, against
hand-computed values."""

import math

import pytest
import torch

from tasks import config, losses
from tasks.rl.reward_spec import combined, function_scores, reward_parts
from tasks.runtime.errors import PipelineError
from tests.conftest import REPO


def test_grpo_advantages_hand_computed():
    # group 1: r = 1, 2, 3, 6: mean 3, unbiased std sqrt((4 + 1 + 0 + 9) / 3) = sqrt(14/3)
    # group 2: r = 0, 0, 1, 1: mean 0.5, std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 1.0, 1.0])
    s1, s2 = math.sqrt(14 / 3), math.sqrt(1 / 3)
    want = [-2 / s1, -1 / s1, 0.0, 3 / s1, -0.5 / s2, -0.5 / s2, 0.5 / s2, 0.5 / s2]
    assert losses.grpo_advantages(r, 4, scale=True, eps=0.0).tolist() == pytest.approx(want, abs=1e-6)
    # Dr. GRPO: the mean alone
    assert losses.grpo_advantages(r, 4, scale=False).tolist() == pytest.approx([-2, -1, 0, 3, -0.5, -0.5, 0.5, 0.5])


@pytest.mark.parametrize("scale", [True, False])
def test_a_group_of_equal_rewards_has_zero_advantage_not_nan(scale):
    r = torch.tensor([0.7, 0.7, 0.7, -2.0, 1.0, 4.0])
    a = losses.grpo_advantages(r, 3, scale=scale)
    assert torch.isfinite(a).all() and a[:3].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    b = losses.rloo_advantages(r, 3)
    assert torch.isfinite(b).all() and b[:3].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_rloo_advantages_hand_computed():
    # r = 1, 2, 3, 6: baselines (2+3+6)/3, (1+3+6)/3, (1+2+6)/3, (1+2+3)/3 = 11/3, 10/3, 3, 2
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, -1.0])
    want = [1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0, 6.0, -6.0]  # group 2 (K = 2): 5 − (−1), −1 − 5
    assert losses.rloo_advantages(r[:4], 4).tolist() == pytest.approx(want[:4], abs=1e-6)
    assert losses.rloo_advantages(r[4:], 2).tolist() == pytest.approx(want[4:])
    # K/(K−1) · (r − mean): the identity the docstring states
    assert losses.rloo_advantages(r[:4], 4).tolist() == pytest.approx((4 / 3 * (r[:4] - 3)).tolist(), abs=1e-6)


def test_token_and_sequence_aggregation_hand_computed():
    x = torch.tensor([[1.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert losses.aggregate(x, mask, "token").item() == pytest.approx((1 + 3 + 4) / 3)
    assert losses.aggregate(x, mask, "sequence").item() == pytest.approx((2 + 4) / 2)
    with pytest.raises(ValueError):
        losses.aggregate(x, mask, "mean")


def test_grpo_kl_loss_term_is_k3_on_current_log_probs():
    # k3 with log π = ln 0.5, log π_ref = ln 0.25: π_ref/π − 1 − ln(π_ref/π) = 0.5 − 1 + ln 2
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    kl = losses.kl_estimate(logp, ref, "k3")
    assert losses.aggregate(kl, torch.ones(1, 1), "sequence").item() == pytest.approx(-0.5 + math.log(2), abs=1e-6)


def _two_args(prompt, response):
    return float(len(response))


def test_reward_terms_and_weighted_sum():
    spec = {"rm": 1.0, "tests.test_group_losses:_two_args": 0.5, "tasks.label.gold:shorter": 2.0}
    functions = {
        "tests.test_group_losses:_two_args": _two_args,
        "tasks.label.gold:shorter": lambda text: -len(text.split()),
    }
    raw = torch.tensor([1.0, -1.0])
    parts = reward_parts(spec, raw, {"gain": 2.0, "bias": 0.5}, functions, ["a b", "c"], ["xy", "zzz w"])
    assert parts["rm"].tolist() == [2.5, -1.5]  # gain · raw + bias
    assert parts["tests.test_group_losses:_two_args"].tolist() == [2.0, 5.0]  # f(prompt, response)
    assert parts["tasks.label.gold:shorter"].tolist() == [-2.0, -2.0]  # f(prompt + response): "a bxy", "czzz w"
    assert combined(spec, parts).tolist() == pytest.approx([2.5 + 1.0 - 4.0, -1.5 + 2.5 - 4.0])


@pytest.mark.parametrize(
    "fn, says",
    [
        (lambda p, r: float("nan"), "returned nan, not a finite number, on sample 1"),
        (lambda p, r: "good", "returned 'good', not a finite number, on sample 1"),
        (lambda p, r: None, "returned None"),
        (lambda p, r: 1 / 0 if r == "bad" else 1.0, "raised ZeroDivisionError: division by zero on sample 1"),
    ],
)
def test_a_bad_reward_function_is_one_line_naming_it_and_the_sample(fn, says):
    calls = [0]

    def f(p, r):
        calls[0] += 1
        return 1.0 if calls[0] == 1 else fn(p, r)

    with pytest.raises(PipelineError) as e:
        function_scores("my.mod:fn", f, ["ok prompt", "the prompt"], ["fine", "bad"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("reward my.mod:fn ") and says in msg and "'the prompt'" in msg


def test_reward_spec_forms_and_inheritance():
    params = config.read_params(REPO / "params.yaml")
    patched = config.deep_merge(params, {"ppo": {"reward": {"rm": 1.0, "tasks.label.gold:shorter": 0.5}}})
    patched["grpo"]["reward"] = "tasks.label.gold:vader"
    assert config.load("ppo", patched).reward == {"rm": 1.0, "tasks.label.gold:shorter": 0.5}
    assert config.load("grpo", patched).reward == {"tasks.label.gold:vader": 1.0}  # replaced, not merged into ppo's
    patched["rloo"].pop("reward")
    assert config.load("rloo", patched).reward == {"rm": 1.0, "tasks.label.gold:shorter": 0.5}  # inherited whole
    assert (
        config.load("grpo", patched).kl.estimator == "k3"
        and not losses.ADVANTAGE_ESTIMATORS[config.load("grpo", patched).advantage].critic
    )
    for bad, says in (
        ({"rloo": {"reward": "shorter"}}, "params.yaml: rloo.reward: 'shorter' is neither 'rm' nor 'module:function'"),
        ({"grpo": {"reward": {}}}, "params.yaml: grpo.reward: name at least one reward"),
        ({"grpo": {"group_size": 5}}, "rollout_batch_size=32 must be a multiple of group_size=5"),
        ({"rloo": {"group_size": 1}}, "params.yaml: rloo.group_size: Input should be greater than or equal to 2"),
    ):
        section = next(iter(bad))
        with pytest.raises(config.ConfigError) as e:
            config.load(section, config.deep_merge(params, bad))
        assert says in str(e.value), str(e.value)


def test_each_process_samples_whole_groups():
    from flows.launch import check_divisible

    params = config.read_params(REPO / "params.yaml")
    grpo = config.load("grpo", params)  # 32 responses = 8 prompts x 4
    check_divisible("grpo", grpo, 2)
    check_divisible("grpo", grpo, 8)
    with pytest.raises(PipelineError, match="32 / group_size=4 prompts must be a multiple of compute.num_processes=3"):
        check_divisible("grpo", grpo, 3)
    with pytest.raises(PipelineError, match="rollout_batch_size=32 / group_size=8 prompts must be a multiple"):
        check_divisible("rloo", grpo.model_copy(update={"group_size": 8}), 8)


def test_stages_that_inherit_take_ppos_seed_unless_they_set_their_own():
    from flows.experiments import seed_settings

    params = config.read_params(REPO / "params.yaml")
    assert seed_settings(["ppo", "dpo", "grpo", "rloo", "rto"], 3, params) == {"ppo.seed": 3, "dpo.seed": 3}
    own = config.deep_merge(params, {"grpo": {"seed": 0}})
    assert seed_settings(["grpo"], 5, own) == {"grpo.seed": 5}
    with pytest.raises(PipelineError, match="rloo takes ppo.seed unless rloo.seed is set"):
        seed_settings(["dpo", "rloo"], 1, params)
