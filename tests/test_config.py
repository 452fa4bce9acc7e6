"""Config validation: a bad value is one clear line naming the field, before any work starts."""

import math
import sys

import pytest

from tasks import config
from tests.conftest import REPO, make_project, run_cmd


@pytest.fixture()
def params():
    return config.read_params(REPO / "params.yaml")


def test_default_params_are_valid(params):
    for section in config.SECTIONS:
        config.load(section, params)


@pytest.mark.parametrize("section", sorted(config.SECTIONS))
def test_config_defaults_are_the_values_of_params_yaml(params, section):
    """One source of truth: a config made in code (tests, benches) is the default run's."""
    default = config.section_type(section)().model_dump()
    assert default == config.load(section, params).model_dump(), f"tasks/config.py defaults of '{section}' differ"


def fields_missing(raw: dict, model, prefix: str) -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        if name not in raw:
            missing.append(f"{prefix}.{name}")
        elif isinstance(raw[name], dict) and hasattr(field.annotation, "model_fields"):
            missing += fields_missing(raw[name], field.annotation, f"{prefix}.{name}")
    return missing


@pytest.mark.parametrize("section", sorted(config.SECTIONS))
def test_params_yaml_holds_every_value_a_run_uses(params, section):
    """DVC tracks only what params.yaml says: no field may fall back to a code default (rto: with ppo's values)."""
    assert fields_missing(config.resolved(section, params), config.section_type(section), section) == []


def test_rto_inherits_what_it_does_not_set(params):
    ppo, rto = config.load("ppo", params), config.load("rto", params)
    assert rto.iterations == ppo.iterations and rto.generation == ppo.generation and rto.kl.target == ppo.kl.target
    assert rto.kl.coef == params["rto"]["kl"]["coef"] != ppo.kl.coef  # set in rto: its own value
    changed = config.deep_merge(params, {"ppo": {"iterations": 7, "kl": {"coef": 0.5}}})
    assert config.load("rto", changed).iterations == 7 and config.load("rto", changed).kl.coef == rto.kl.coef


@pytest.mark.parametrize(
    "section, patch, expect",
    [
        ("sft", {"lr": -1.0}, "params.yaml: sft.lr: Input should be greater than 0"),
        ("sft", {"lrr": 1e-4}, "params.yaml: sft.lrr: unknown key"),
        ("sft", {"batch_size": "eight"}, "params.yaml: sft.batch_size: Input should be a valid integer"),
        ("sft", {"max_grad_norm": math.nan}, "params.yaml: sft.max_grad_norm"),
        ("sft", {"lora": {"r": 0}}, "params.yaml: sft.lora.r: Input should be greater than or equal to 1"),
        ("prepare", {"splits": {"sft": 0.9, "eval": 0.5}}, "split shares sum to"),
        ("prepare", {"min_prompt_words": 5, "max_prompt_words": 2}, "max_prompt_words must be >="),
        ("base", {"sha256": None}, "base.sha256 is required"),
        ("compute", {"device": "tpu"}, "params.yaml: compute.device: Input should be 'auto', 'cpu' or 'cuda'"),
    ],
)
def test_bad_values_name_the_field(params, section, patch, expect):
    bad = dict(params)
    bad[section] = {**params[section], **patch}
    with pytest.raises(config.ConfigError) as e:
        config.load(section, bad)
    msg = str(e.value)
    assert expect in msg and "\n" not in msg


@pytest.mark.slow
def test_stage_exits_with_one_line_and_no_traceback(tmp_path):
    root = make_project(tmp_path / "proj")
    text = (root / "params.yaml").read_text().replace("lr: 0.001", "lr: -0.001")
    (root / "params.yaml").write_text(text)
    proc = run_cmd(root, "python", "-m", "flows.sft", check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: params.yaml: sft.lr: Input should be greater than 0 (got -0.001)"
    ]
    assert not (root / "models").exists()  # nothing was started


@pytest.mark.slow  # the collection imports torch, transformers, Prefect and MLflow in a fresh process
def test_a_test_project_never_holds_what_a_run_left_behind(tmp_path):
    """`make test` right after `make repro` in the same checkout: a test's project copy starts from the tracked
    (and not-ignored) files only, so the outputs, label store, MLflow store and UI settings of the user's run
    stay out of it (a copied data/samples/ once broke the label-pause tests with FileExistsError)."""
    checkout = make_project(tmp_path / "checkout", profile=None)
    leftovers = [
        "data/samples/completions.jsonl",
        "data/comparisons/pairs.jsonl",
        "data/eval_sft/reference.json",
        "models/sft/config.json",
        "labels.db",
        "mlflow.db",
        ".ui.env",
        "mlartifacts/1/model.pkl",
        ".prefect/prefect.db",
        ".checkpoints/sft/state.pt",
        ".cache/base/model.gguf",
        "dvc.lock",
        "metrics/eval/ppo.json",
    ]
    for rel in leftovers:
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text("left by a run\n")
    (checkout / "flows/new_stage.py").write_text('"""A new file not yet added to git: a test sees it."""\n')
    copy = make_project(tmp_path / "copy", profile=None, src=checkout)
    assert [rel for rel in leftovers if (copy / rel).exists()] == []
    assert (copy / "flows/new_stage.py").exists() and (copy / "params.yaml").read_bytes() == (
        checkout / "params.yaml"
    ).read_bytes()
    (copy / "data/samples").mkdir(parents=True)  # what the label-pause fixture does first
    collected = run_cmd(
        copy, sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "-o", "addopts="
    )
    summary = collected.stdout.strip().splitlines()[-1]  # "N tests collected in ...", or "..., M errors"
    assert "tests collected" in summary and "error" not in summary, summary
