"""The deployment's Custom run form: params.yaml's values as defaults, the config's descriptions and bounds;
a value out of bounds stops the run in one line; a second run in one checkout waits for the first."""

import threading
import time

import pytest
from prefect.utilities.callables import parameter_schema

from flows.common import read_params
from flows.pipeline import check_knob, checkout_lock, pipeline
from tasks import config
from tasks.runtime.errors import PipelineError


def test_the_form_shows_params_yaml_values_with_descriptions_and_bounds():
    props = parameter_schema(pipeline).model_dump()["properties"]
    params = read_params()
    ppo, dpo, rto = (config.load(s, params) for s in ("ppo", "dpo", "rto"))
    assert props["algorithms"]["default"] == config.load("pipeline", params).algorithms
    assert props["algorithms"]["items"]["enum"] == ["ppo", "dpo", "rto", "grpo", "rloo"]  # a multi-select
    assert props["ppo_kl_coef"]["default"] == ppo.kl.coef and props["ppo_kl_coef"]["minimum"] == 0
    assert props["dpo_kl_coef"]["default"] == dpo.kl_coef and props["dpo_kl_coef"]["exclusiveMinimum"] == 0
    assert props["rto_kl_coef"]["default"] == rto.kl.coef and props["ptx_coef"]["default"] == ppo.ptx_coef
    grpo = config.load("grpo", params)
    assert props["grpo_kl_coef"]["default"] == grpo.kl.coef and props["grpo_group_size"]["minimum"] == 2
    for name, prop in props.items():
        assert prop.get("description"), f"{name} has no description"
    assert props["dpo_kl_coef"]["description"].startswith("params.yaml dpo.kl_coef: ")


@pytest.mark.parametrize(
    "arg, value, message",
    [
        ("ppo_kl_coef", -0.1, "ppo_kl_coef: Input should be greater than or equal to 0 (got -0.1)"),
        ("dpo_kl_coef", 0, "dpo_kl_coef: Input should be greater than 0 (got 0)"),
        ("algorithms", ["sft"], "algorithms: Input should be 'ppo', 'dpo', 'rto', 'grpo' or 'rloo' (got ['sft'])"),
        ("rloo_group_size", 1, "rloo_group_size: Input should be greater than or equal to 2 (got 1)"),
    ],
)
def test_a_value_out_of_bounds_is_refused_in_one_line(arg, value, message):
    with pytest.raises(PipelineError) as e:
        check_knob(arg, value)
    assert str(e.value) == message
    check_knob(arg, ["dpo"] if arg == "algorithms" else 4 if arg.endswith("group_size") else 0.5)


class Log:
    def __init__(self):
        self.lines = []

    def info(self, msg, *args):
        self.lines.append(msg % args)


def test_a_second_run_in_the_checkout_waits_for_the_first(tmp_path):
    path, log, order = tmp_path / "lock", Log(), []
    first_holds, release = threading.Event(), threading.Event()

    def first():
        with checkout_lock(Log(), path):
            order.append("first in")
            first_holds.set()
            release.wait(10)
            order.append("first out")

    def second():
        with checkout_lock(log, path):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    first_holds.wait(10)
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.5)
    assert order == ["first in"] and log.lines and log.lines[0].startswith("waiting for the pipeline run")
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first in", "first out", "second in"]
