"""Pairwise judges (tasks/eval/judges.py): both orders asked, disagreeing orders a tie, position consistency, the
LM judge on a tiny model, function judges, and their config checks."""

import numpy as np
import pytest
import torch

from tasks import config
from tasks.eval import stats
from tasks.eval.judges import LMJudge, both_orders, function_judge
from tasks.runtime.context import SINGLE_PROCESS
from tasks.runtime.errors import PipelineError
from tests.test_generation import tiny_llama

PROMPTS = ["the movie", "a dull plot", "I loved"]


def samples(texts_per_prompt: list[list[str]]) -> list[dict]:
    return [
        {"prompt_index": p, "text": t, "response": [0] * len(t.split()), "ended": True}
        for p, ts in enumerate(texts_per_prompt)
        for t in ts
    ]


POL = samples([["great fun", "so good"], ["bad", "awful acting"], ["the the the", "fine"]])
SFT = samples([["boring", "ok"], ["fine film", "meh"], ["the end", "dull"]])


def test_a_judge_that_always_answers_a_gives_only_ties_and_no_consistency():
    calls = []

    def always_a(triples):
        calls.append(len(triples))
        return [1.0] * len(triples)

    judged = both_orders(always_a, PROMPTS, POL, SFT, k=2)
    assert calls == [12, 12]  # 3 prompts x 2 x 2 pairs, each in both orders
    assert judged["outcomes"].shape == (3, 4) and (judged["outcomes"] == 0.5).all()
    assert judged["position_consistency"] == 0.0


def test_orders_that_agree_decide_and_the_pairs_follow_pair_outcomes_order():
    def longer_wins(triples):  # P(A > B) from the word counts: consistent across orders
        return [
            1.0 if len(a.split()) > len(b.split()) else 0.0 if len(a.split()) < len(b.split()) else 0.5
            for _, a, b in triples
        ]

    judged = both_orders(longer_wins, PROMPTS, POL, SFT, k=2)
    words = lambda s: [[len(x["text"].split()) for x in s if x["prompt_index"] == p] for p in range(3)]  # noqa: E731
    want = stats.pairwise_wins(np.array(words(POL)), np.array(words(SFT)))
    assert judged["outcomes"].mean(axis=1).tolist() == pytest.approx(want.tolist())
    decided = (judged["outcomes"] != 0.5).mean()
    assert judged["position_consistency"] == pytest.approx(decided)


def test_the_lm_judge_asks_both_orders_and_batches_like_one_at_a_time():
    model, tok = tiny_llama(32)
    rows = []
    forward = model.forward

    def counting(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    model.forward = counting
    judge = LMJudge(model, tok, SINGLE_PROCESS, batch_size=5)
    judged = both_orders(judge, PROMPTS, POL, SFT, k=2)
    assert sum(rows) == 24 and judged["outcomes"].shape == (3, 4)
    assert 0.0 <= judged["position_consistency"] <= 1.0
    triples = [(PROMPTS[0], "great fun", "boring"), (PROMPTS[1], "a much longer answer than that", "meh")]
    batched = judge(triples)
    alone = [judge([t])[0] for t in triples]  # no padding: left padding must not change the answer
    assert batched == pytest.approx(alone, abs=1e-5) and all(0 < p < 1 for p in batched)
    assert judge(triples[::-1]) == pytest.approx(alone[::-1], abs=1e-5)  # batched by length, answered in order
    ids = tok(judge.render(*triples[0]), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = forward(input_ids=torch.tensor([ids])).logits[0, -1, judge.letters]
    assert batched[0] == pytest.approx(torch.softmax(logits, -1)[0].item(), abs=1e-5)


def test_function_judges_are_pairwise_or_pointwise_and_must_return_probabilities():
    pairwise, pointwise = function_judge("tests.scorers:prefer_first")
    assert pointwise is None and pairwise([("p", "a", "b")]) == [1.0]
    pairwise, pointwise = function_judge("tests.scorers:more_the")
    assert pairwise is None and pointwise("the the") == 2.0
    broken, _ = function_judge("tests.scorers:not_a_probability")
    with pytest.raises(PipelineError, match="not a probability in"):
        broken([("p", "a", "b")])


def test_a_pointwise_judge_scores_like_the_gold_win_rate():
    from tasks.eval.evaluate import outcomes_vs_sft, policy_metrics
    from tasks.eval.scoring import gold_scores

    _, more_the = function_judge("tests.scorers:more_the")
    index = [[x["prompt_index"] for x in s] for s in (POL, SFT)]
    pol = {"samples": POL, "length": np.array([[2, 2], [1, 2], [3, 1]])}
    base = {"samples": SFT, "length": np.array([[1, 1], [2, 1], [2, 1]])}
    pol["more_the"] = stats.by_prompt(gold_scores(more_the, PROMPTS, POL), index[0], 3)
    base["more_the"] = stats.by_prompt(gold_scores(more_the, PROMPTS, SFT), index[1], 3)
    indices, kl = stats.bootstrap_indices(3, 100, 0), np.zeros((3, 2))
    outcomes, _ = outcomes_vs_sft(pol, base, {}, PROMPTS, False, 2)
    m = policy_metrics(pol, base, outcomes, kl, "more_the", indices, 0.95)

    def the(s):  # what the pointwise judge reads: prompt + response, as a gold scorer does
        return [[(PROMPTS[p] + x["text"]).split().count("the") for x in s if x["prompt_index"] == p] for p in range(3)]

    want = stats.pairwise_wins(np.array(the(POL)), np.array(the(SFT))).mean()
    assert m["win_rate_more_the"] == pytest.approx(want) and 0 <= m["lc_win_rate_more_the"] <= 1
    assert m["n_wins_more_the"] + m["n_draws_more_the"] + m["n_losses_more_the"] == 3
    assert m["win_rate"] == m["win_rate_more_the"] and m["n_wins"] == m["n_wins_more_the"]  # the gate's judge
    assert m["score_more_the"] == pytest.approx(np.mean(the(POL)))
    same, _ = outcomes_vs_sft(base, base, {}, PROMPTS, True, 2)
    m = policy_metrics(base, base, same, kl, "more_the", indices, 0.95)
    assert m["win_rate_more_the"] == 0.5 and m["lc_win_rate_more_the"] == pytest.approx(0.5)


def test_the_proxy_gap_is_the_rm_win_rate_minus_the_other_judge_s_per_prompt():
    from tasks.eval.evaluate import policy_metrics

    pol = {"samples": POL, "length": np.ones((3, 2))}
    rm = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # (3 prompts, 2 x 2 pairs)
    outcomes = {"rm": rm, "heldout_rm": np.array([[0.0, 1.0, 0.0, 1.0]] * 3)}
    m = policy_metrics(pol, pol, outcomes, np.zeros((3, 2)), "heldout_rm", stats.bootstrap_indices(3, 200, 0), 0.9)
    assert m["win_rate_rm"] == pytest.approx(5 / 6) and m["win_rate"] == m["win_rate_heldout_rm"] == 0.5
    assert m["proxy_gap_heldout_rm"] == pytest.approx(5 / 6 - 0.5)
    assert m["proxy_gap_heldout_rm_ci_low"] <= m["proxy_gap_heldout_rm"] <= m["proxy_gap_heldout_rm_ci_high"]
    assert "proxy_gap_rm" not in m


@pytest.mark.parametrize(
    "eval_patch, says",
    [
        (
            {"judges": ["gold", "oracle"]},
            "params.yaml: eval.judges: 'oracle' is not gold, rm, heldout_rm, lm or 'module:function'",
        ),
        ({"judges": ["gold", "lm"]}, "eval.judges has lm: set eval.judge_model"),
        ({"judges": []}, "no judge"),
        ({"heldout_share": 0.6}, "eval.heldout_share: Input should be less than or equal to 0.5"),
        ({"heldout_share": 0}, "eval.heldout_share: Input should be greater than 0"),
    ],
)
def test_bad_judge_settings_are_one_line(eval_patch, says):
    params = config.read_params(config.Path(__file__).resolve().parent.parent / "params.yaml")
    params["eval"] = {**params["eval"], **eval_patch}
    with pytest.raises(config.ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        config.load("eval", params)


@pytest.mark.parametrize(
    "labeler, judges, gate, resolved, gate_judge",
    [
        ("simulated", "auto", "auto", ["gold", "heldout_rm", "rm"], "gold"),
        ("dataset", "auto", "auto", ["heldout_rm", "rm"], "heldout_rm"),  # never a silent gold on a team's data
        ("people", "auto", "auto", ["heldout_rm", "rm"], "heldout_rm"),
        ("dataset", ["rm", "lm"], "auto", ["rm", "lm"], "lm"),
        ("dataset", ["rm"], "auto", ["rm"], "rm"),
        ("simulated", ["gold", "rm"], "rm", ["gold", "rm"], "rm"),
    ],
)
def test_judges_resolve_by_labeler_and_the_gate_prefers_a_judge_not_optimized(
    labeler, judges, gate, resolved, gate_judge
):
    params = config.read_params(config.Path(__file__).resolve().parent.parent / "params.yaml")
    params["sample"] = {**params["sample"], "labeler": labeler, "dataset": "x.jsonl"}
    params["eval"] = {**params["eval"], "judges": judges, "judge_model": "models/sft"}
    params["champion"] = {**params["champion"], "judge": gate}
    assert config.judges(params) == resolved and config.gate_judge(params) == gate_judge


@pytest.mark.parametrize(
    "sample_patch, eval_patch, gate, says",
    [
        (
            {"labeler": "dataset", "gold_scorer": None},
            {"judges": ["gold", "rm"]},
            "auto",
            "eval.judges has gold, but sample",
        ),
        ({}, {}, "lm", "champion.judge: 'lm' is not one of eval.judges (gold, heldout_rm, rm)"),
        ({"gold_scorer": None}, {}, "auto", "params.yaml: sample: labeler simulated labels with the gold scorer"),
    ],
)
def test_judges_that_cannot_judge_are_refused_in_one_line(sample_patch, eval_patch, gate, says):
    params = config.read_params(config.Path(__file__).resolve().parent.parent / "params.yaml")
    params["sample"] = {**params["sample"], "dataset": "x.jsonl", **sample_patch}
    params["eval"] = {**params["eval"], **eval_patch}
    params["champion"] = {**params["champion"], "judge": gate}
    with pytest.raises(config.ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        config.gate_judge(params)
