"""Bad input: one clear error line, exit code 2, no traceback, and the previous outputs untouched.

Each row of BAD is one row of the README's table: what is wrong, the stage that meets it, and the message.
"""

import hashlib
import math
import os

import pytest
import yaml

from tests.conftest import run_cmd

pytestmark = pytest.mark.slow

GOOD_PAIR = '{"prompt": "The film", "chosen": " was great.", "rejected": " was dull."}\n'

# (id, stage module, params patch {section: {field: value}}, file to write {name: text}, expected message)
BAD = [
    ("unknown-key", "flows.sft", {"sft": {"lrr": 1e-4}}, None, "params.yaml: sft.lrr: unknown key"),
    (
        "wrong-type",
        "flows.rm",
        {"rm": {"batch_size": "eight"}},
        None,
        "params.yaml: rm.batch_size: Input should be a valid integer",
    ),
    ("negative-lr", "flows.dpo", {"dpo": {"lr": -1e-5}}, None, "params.yaml: dpo.lr: Input should be greater than 0"),
    (
        "kl-coef-zero",
        "flows.dpo",
        {"dpo": {"kl_coef": 0.0}},
        None,
        "params.yaml: dpo.kl_coef: Input should be greater than 0",
    ),
    (
        "k-below-2",
        "flows.sample",
        {"sample": {"k": 1}},
        None,
        "params.yaml: sample.k: Input should be greater than or equal to 2",
    ),
    (
        "negative-ptx",
        "flows.ppo",
        {"ppo": {"ptx_coef": -0.5}},
        None,
        "params.yaml: ppo.ptx_coef: Input should be greater than or equal to 0",
    ),
    (
        "max-length-zero",
        "flows.sft",
        {"sft": {"max_length": 0}},
        None,
        "params.yaml: sft.max_length: Input should be greater than or equal to",
    ),
    ("nan", "flows.sft", {"sft": {"max_grad_norm": math.nan}}, None, "params.yaml: sft.max_grad_norm"),
    (
        "missing-model-path",
        "flows.base",
        {"base": {"model": "./no/such/model.gguf", "sha256": None}},
        None,
        "base.model: ./no/such/model.gguf not found",
    ),
    (
        "hub-id-offline",
        "flows.base",
        {"base": {"model": "someorg/no-such-model", "sha256": None}},
        None,
        "base.model: cannot load someorg/no-such-model",
    ),
    (
        "unknown-algorithm",
        "flows.ppo",
        {"pipeline": {"algorithms": ["ppo", "sac"]}},
        None,
        "params.yaml: pipeline.algorithms.1: Input should be 'ppo', 'dpo', 'rto', 'grpo' or 'rloo'",
    ),
    (
        "rto-without-dpo",
        "flows.rto",
        {"pipeline": {"algorithms": ["ppo", "rto"]}},
        None,
        "rto uses the dpo stage's model",
    ),
    (
        "unknown-loss-type",
        "flows.dpo",
        {"dpo": {"loss_type": "hinge"}},
        None,
        "params.yaml: dpo.loss_type: Input should be 'sigmoid' or 'ipo'",
    ),
    (
        "unknown-kl-estimator",
        "flows.ppo",
        {"ppo": {"kl": {"estimator": "k9"}}},
        None,
        "params.yaml: ppo.kl.estimator: Input should be 'k1', 'k2' or 'k3'",
    ),
    (
        "labeler-does-not-import",
        "flows.sample",
        {"sample": {"labeler": "no_such_module:Labeler"}},
        None,
        "params.yaml: sample.labeler: unknown labeler 'no_such_module:Labeler'",
    ),
    (
        "scorer-does-not-import",
        "flows.sample",
        {"sample": {"gold_scorer": "tasks.label.gold:no_such_scorer"}},
        None,
        "params.yaml: sample.gold_scorer: cannot import 'tasks.label.gold:no_such_scorer'",
    ),
    (
        "malformed-jsonl",
        "flows.sample",
        {"sample": {"labeler": "dataset", "dataset": "prefs.jsonl"}},
        {"prefs.jsonl": GOOD_PAIR + "{not json\n"},
        "prefs.jsonl:2: not valid JSON",
    ),
    (
        "record-missing-field",
        "flows.sample",
        {"sample": {"labeler": "dataset", "dataset": "prefs.jsonl"}},
        {"prefs.jsonl": GOOD_PAIR + '{"prompt": "A", "rejected": " b"}\n'},
        "prefs.jsonl:2: missing or empty 'chosen'",
    ),
    (
        "chat-data-without-template",
        "flows.sample",
        {"sample": {"labeler": "dataset", "dataset": "prefs.jsonl"}},
        {
            "prefs.jsonl": '{"prompt": [{"role": "user", "content": "The film"}], '
            '"chosen": [{"role": "assistant", "content": "Great."}], '
            '"rejected": [{"role": "assistant", "content": "Dull."}]}\n'
        },
        "prefs.jsonl: conversational records (lists of messages) need a chat template, and the tokenizer of "
        "models/sft has none",
    ),
    (
        "chat-template-file-missing",
        "flows.base",
        {"base": {"chat_template": "no/such/chat.jinja"}},
        None,
        "params.yaml: base.chat_template: no/such/chat.jinja not found",
    ),
    (
        "empty-jsonl",
        "flows.sample",
        {"sample": {"labeler": "dataset", "dataset": "prefs.jsonl"}},
        {"prefs.jsonl": ""},
        "prefs.jsonl: no records",
    ),
    (
        "splits-over-one",
        "flows.prepare",
        {"prepare": {"splits": {"sft": 0.9, "eval": 0.5}}},
        None,
        "split shares sum to",
    ),
    (
        "missing-split-source",
        "flows.prepare",
        {"prepare": {"sources": {"sft": "no_such_file.jsonl"}}},
        None,
        "no_such_file.jsonl: file not found",
    ),
    (
        "duplicate-prompts",
        "flows.prepare",
        {"prepare": {"sources": {"eval": "ev.jsonl"}}},
        {"ev.jsonl": '{"prompt": "A film"}\n{"prompt": "The plot"}\n{"prompt": "A film"}\n'},
        "ev.jsonl:3: duplicate prompt 'A film' (first at record 1) in the eval split",
    ),
    (
        "duplicate-chat-prompts",
        "flows.prepare",
        {"prepare": {"sources": {"eval": "ev.jsonl"}}},
        {"ev.jsonl": '{"prompt": [{"role": "user", "content": "A film"}]}\n' * 2},
        """ev.jsonl:2: duplicate prompt '[{"content": "A film", "role": "user"}]' (first at record 1) in the eval""",
    ),
    (
        "overlapping-splits",
        "flows.prepare",
        {"prepare": {"sources": {"eval": "ev.jsonl", "policy": "ev.jsonl"}}},
        {"ev.jsonl": '{"prompt": "A film"}\n{"prompt": "The plot"}\n'},
        "prepare: 2 example(s) of the eval split also appear in the policy split",
    ),
    (
        "prompt-too-long",
        "flows.sample",
        {"pipeline": {"prompt_overflow": "refuse"}, "sample": {"max_prompt_len": 2}},
        None,
        "prompt(s) longer than sample.max_prompt_len=2 tokens (pipeline.prompt_overflow is 'refuse'",
    ),
    (
        "cuda-without-gpu",
        "flows.sft",
        {"compute": {"device": "cuda"}},
        None,
        "compute.device is 'cuda' but no CUDA device is visible",
    ),
    ("params-not-yaml", "flows.sft", "sft: [unclosed\n", None, "params.yaml:"),
    (
        "no-samples-per-prompt",
        "flows.eval",
        {"eval": {"samples_per_prompt": 0}},
        None,
        "params.yaml: eval.samples_per_prompt: Input should be greater than or equal to 1",
    ),
    (
        "unknown-judge",
        "flows.eval",
        {"eval": {"judges": ["gold", "oracle"]}},
        None,
        "params.yaml: eval.judges: 'oracle' is not gold, rm, heldout_rm, lm or 'module:function'",
    ),
    (
        "heldout-share-too-big",
        "flows.labels",
        {"eval": {"heldout_share": 0.7}},
        None,
        "params.yaml: eval.heldout_share: Input should be less than or equal to 0.5",
    ),
    (
        "gate-judge-not-a-judge",
        "flows.champion",
        {"champion": {"judge": "lm"}},
        None,
        "params.yaml: champion.judge: 'lm' is not one of eval.judges (gold, heldout_rm, rm)",
    ),
    (
        "gold-judge-without-scorer",
        "flows.eval",
        {"sample": {"labeler": "people", "gold_scorer": None}, "eval": {"judges": ["gold", "rm"]}},
        None,
        "params.yaml: eval.judges has gold, but sample.gold_scorer is null: name one or drop gold",
    ),
    (
        "judge-not-a-probability",
        "flows.eval",
        {"eval": {"judges": ["gold", "tests.scorers:not_a_probability"]}},
        None,
        "params.yaml: eval.judges: tests.scorers:not_a_probability returned 1.5, not a probability in [0, 1]",
    ),
    (
        "judge-model-missing",
        "flows.judge",
        {"eval": {"judges": ["gold", "lm"], "judge_model": "./models/no-such-judge"}},
        None,
        "eval.judge_model: ./models/no-such-judge not found",
    ),
    (
        "level-of-one",
        "flows.eval",
        {"eval": {"ci_level": 1.0}},
        None,
        "params.yaml: eval.ci_level: Input should be less",
    ),
    (
        "level-of-zero",
        "flows.seeds",
        {"seeds": {"level": 0}},
        None,
        "params.yaml: seeds.level: Input should be greater",
    ),
    (
        "no-seeds",
        "flows.seeds",
        {"seeds": {"values": []}},
        None,
        "params.yaml: seeds: seeds.values needs at least one seed",
    ),
    (
        "duplicate-seeds",
        "flows.seeds",
        {"seeds": {"values": [0, 1, 1]}},
        None,
        "params.yaml: seeds.values: seeds must be distinct; repeated: [1]",
    ),
    (
        "duplicate-frontier-seeds",
        "flows.frontier",
        {"frontier": {"seeds": [3, 3]}},
        None,
        "seeds must be distinct; repeated: [3]",
    ),
    (
        "reward-not-importable",
        "flows.ppo",
        {"ppo": {"reward": {"rm": 1.0, "no_such_module:score": 0.5}}},
        None,
        "params.yaml: ppo.reward: cannot import 'no_such_module:score'",
    ),
    (
        "reward-returns-nan",
        "flows.grpo",
        {"pipeline": {"algorithms": ["grpo"]}, "grpo": {"reward": "tests.scorers:nan_reward"}},
        None,
        "reward tests.scorers:nan_reward returned nan, not a finite number, on sample 0 (prompt ",
    ),
]


def digest(root) -> dict:
    out = {}
    for top in ("models", "data", "metrics"):
        for d, _, files in os.walk(root / top):
            for f in files:
                p = os.path.join(d, f)
                out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def patched(params: dict, patch: dict) -> dict:
    out = dict(params)
    for sec, over in patch.items():
        merged = dict(out.get(sec) or {})
        for k, v in over.items():
            merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        out[sec] = merged
    return out


@pytest.mark.parametrize("name, module, patch, files, expect", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gives_one_line_and_loses_nothing(tiny_pipeline, name, module, patch, files, expect):
    root = tiny_pipeline["root"]
    text = (root / "params.yaml").read_text()
    before = digest(root)
    try:
        for fname, content in (files or {}).items():
            (root / fname).write_text(content)
        new = patch if isinstance(patch, str) else yaml.safe_dump(patched(yaml.safe_load(text), patch), sort_keys=False)
        (root / "params.yaml").write_text(new)
        proc = run_cmd(
            root,
            "python",
            "-m",
            module,
            check=False,
            timeout=180,
            HF_HUB_OFFLINE="1",
            CUDA_VISIBLE_DEVICES="",
            PREFECT_API_URL=tiny_pipeline["prefect_api"],
        )
    finally:
        (root / "params.yaml").write_text(text)
        for fname in files or {}:
            (root / fname).unlink()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and expect in errors[0], lines[-5:]
    assert digest(root) == before  # previous outputs untouched


def test_a_stage_refused_inside_a_pipeline_run_is_its_failed_node(tiny_pipeline):
    """A stage DVC starts for a pipeline flow run and that stops at its checks still shows in the run's graph:
    its node Failed, with the one-line error."""
    from uuid import UUID

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Running

    root, api = tiny_pipeline["root"], tiny_pipeline["prefect_api"]

    @flow(name="rlhf-pipeline")
    def pipeline_stand_in():
        """Only its flow run is used: the parent the stage links to."""

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        parent = client.create_flow_run(pipeline_stand_in, state=Running())
    text = (root / "params.yaml").read_text()
    try:
        (root / "params.yaml").write_text(yaml.safe_dump(patched(yaml.safe_load(text), {"dpo": {"kl_coef": 0.0}})))
        proc = run_cmd(
            root,
            "python",
            "-m",
            "flows.dpo",
            check=False,
            PREFECT_API_URL=api,
            RLHF_PIPELINE_FLOW_RUN_ID=str(parent.id),
        )
    finally:
        (root / "params.yaml").write_text(text)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        nodes = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(parent.id))])))
    assert [n.name for n in nodes] == ["dpo"]
    assert nodes[0].state.type.value == "FAILED" and "dpo.kl_coef" in nodes[0].state.message
