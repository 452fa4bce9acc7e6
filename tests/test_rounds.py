"""Iterated RLHF's pieces without a run: the stages `python -m flows.rounds sync` writes into dvc.yaml, the rounds
section's checks, and which prompts and pairs a later round reads (the run itself: tests/test_rounds_run.py)."""

import copy

import pytest
import yaml

from flows import rounds
from flows.round_inputs import prompt_slice
from tasks import config
from tasks.runtime.errors import PipelineError
from tests.conftest import REPO, make_project, run_cmd
from tests.import_graph import stage_modules

PARAMS = config.read_params(REPO / "params.yaml")
TEXT = (REPO / "dvc.yaml").read_text()


def with_rounds(**values) -> dict:
    params = copy.deepcopy(PARAMS)
    params["rounds"] = {**params["rounds"], **values}
    return params


def test_one_round_is_the_pipeline_as_it_was():
    assert rounds.expected_text(TEXT, 1) == TEXT  # the committed dvc.yaml: no generated block


def test_three_rounds_add_two_of_every_round_stage_and_leave_round_one_as_it_was():
    text = rounds.expected_text(TEXT, 3)
    stages = yaml.load(text, Loader=rounds.LOADER)["stages"]
    new = [s for s in stages if s not in yaml.load(TEXT, Loader=rounds.LOADER)["stages"]]
    assert new == [f"{s}_r{r}" for r in (2, 3) for s in rounds.ROUND_STAGES]
    assert text.startswith(TEXT.rstrip("\n"))  # round 1's stages byte for byte
    assert rounds.expected_text(text, 3) == text  # sync twice: no change
    assert rounds.expected_text(text, 1) == TEXT  # and back
    rm3 = stages["rm_r3"]
    assert rm3["cmd"] == "RLHF_ROUND=3 python -m flows.rm"
    assert rm3["outs"] == ["models/rounds/3/rm"] and "rounds.rm" in rm3["params"]
    assert not any(p.startswith("rounds.count") or p == "rounds" for s in stages.values() for p in s.get("params", []))
    # a retrained RM reads every round's comparisons; a continued one, round 2's RM
    for dep in ("data/comparisons", "data/rounds/2/comparisons", "data/rounds/3/comparisons", "models/rounds/2/rm"):
        assert dep in rm3["deps"]
    sample3 = stages["sample_r3"]
    assert "metrics/rounds/2/champion.json" in sample3["deps"] and "models/rounds/2/dpo" in sample3["deps"]
    assert sample3["outs"] == ["data/rounds/3/samples"]
    assert "models/sft" in stages["ppo_r2"]["deps"] and "models/rounds/2/rm" in stages["ppo_r2"]["deps"]
    assert "models/heldout_rm" in stages["eval_r2"]["deps"]  # the judges stay round 1's: one scale for all rounds
    assert "data/eval_sft" in stages["eval_r2"]["deps"]  # SFT's side of eval, sampled once
    assert {"metrics/rounds/2/eval/dpo.json": {"cache": False}} in stages["eval_r2"]["metrics"]
    assert stages["labels_r2"].get("always_changed") is True
    champion3 = stages["champion_r3"]["deps"]  # the standing champion's numbers, from whichever round it stands since
    assert "metrics/eval/ppo.json" in champion3 and "metrics/rounds/2/eval/ppo.json" in champion3


def test_generated_stages_list_every_module_they_import(tmp_path):
    path = tmp_path / "dvc.yaml"
    path.write_text(rounds.expected_text(TEXT, 2))
    for name, (listed, needed) in stage_modules(path).items():
        if name.endswith("_r2"):
            assert listed == needed, name


@pytest.mark.parametrize(
    "values, labeler, message",
    [
        ({"count": 2}, "dataset", "rounds.count: 2 rounds need new comparisons"),
        ({"count": 2, "sample_from": "grpo"}, "simulated", "rounds.sample_from: grpo does not train"),
        ({"count": 1}, "dataset", None),  # one round: a dataset labeler is the pipeline as it was
    ],
)
def test_rounds_are_checked_against_the_labeler_and_the_algorithms(values, labeler, message):
    params = with_rounds(**values)
    params["sample"] = {**params["sample"], "labeler": labeler, "dataset": "data/x.jsonl"}
    if message is None:
        assert config.rounds(params).count == 1
        return
    with pytest.raises(PipelineError, match=message):
        config.rounds(params)


def test_a_round_count_of_zero_is_refused():
    with pytest.raises(PipelineError, match="rounds.count: Input should be greater than or equal to 1"):
        config.rounds(with_rounds(count=0))


def test_each_later_round_gets_its_own_fresh_prompts():
    params, pool = with_rounds(count=3, prompts=4), [f"p{i}" for i in range(10)]
    two, three = prompt_slice(pool, params, 2), prompt_slice(pool, params, 3)
    assert two == ["p0", "p1", "p2", "p3"] and three == ["p4", "p5", "p6", "p7"]
    with pytest.raises(PipelineError, match="need 12 policy prompts; data/prepared/policy.jsonl has 10"):
        prompt_slice(pool, with_rounds(count=4, prompts=4), 2)


@pytest.mark.parametrize(
    "rounds_values, sample_values, policy_prompts, message",
    [
        ({"count": 0}, {}, 0, "params.yaml: rounds.count: Input should be greater than or equal to 1"),
        ({"count": 3, "prompts": 5}, {}, 9, "need 10 policy prompts; data/prepared/policy.jsonl has 9"),
        ({"count": 2}, {"labeler": "dataset", "dataset": "x.jsonl"}, 0, "sample.labeler: dataset cannot give"),
        ({"count": 2, "sample_from": "grpo"}, {}, 0, "rounds.sample_from: grpo does not train"),
    ],
    ids=["count-0", "pool-too-small", "dataset-labeler", "sample-from-untrained"],
)
def test_bad_rounds_are_one_line_before_any_work(tmp_path, rounds_values, sample_values, policy_prompts, message):
    """`python -m flows.rounds sync` (make repro runs it first) refuses, and dvc.yaml stays as it was."""
    root = make_project(tmp_path / "proj", profile=None)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["rounds"] |= rounds_values
    params["sample"] |= sample_values
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if policy_prompts:
        (root / "data/prepared").mkdir(parents=True)
        (root / "data/prepared/policy.jsonl").write_text('{"prompt": "p"}\n' * policy_prompts)
    proc = run_cmd(root, "python", "-m", "flows.rounds", "sync", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and message in errors[0], proc.stderr[-1500:]
    assert (root / "dvc.yaml").read_text() == TEXT


def test_a_continued_policy_starts_from_its_previous_rounds_and_a_restarted_one_from_sft():
    from flows.paths import MODELS
    from flows.round_inputs import policy_start

    go_on = with_rounds(count=3, policies="continue")
    assert policy_start("ppo", go_on, 2) == MODELS / "ppo"  # round 1's outputs keep their paths
    assert policy_start("dpo", go_on, 3) == MODELS / "rounds" / "2" / "dpo"
    assert policy_start("ppo", go_on, 1) is None and policy_start("ppo", with_rounds(count=3), 3) is None
