"""The code's layout, checked from the source (AST, nothing imported): no import cycles, one-way layers, and
dvc.yaml deps that cover everything each stage runs (so `dvc repro` can never call a stale output up to date)."""

import pytest

from tests.import_graph import NOT_DEPS, cycles, graph, stage_modules


def test_no_import_cycles_in_tasks_and_flows():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_layers_import_one_way():
    """tasks/ never imports flows/; the launcher (tasks/launch.py) is imported by flows only; the distributed
    context (tasks/context.py) imports nothing of the project."""
    edges = graph()
    upward = [
        (m, t) for m, targets in edges.items() if m.startswith("tasks/") for t in targets if t.startswith("flows/")
    ]
    assert not upward, f"tasks importing flows: {upward}"
    launchers = [m for m, targets in edges.items() if "tasks/launch.py" in targets and not m.startswith("flows/")]
    assert not launchers, f"only flows may import tasks/launch.py: {launchers}"
    assert edges["tasks/context.py"] == set()


@pytest.mark.parametrize("stage", sorted(stage_modules()))
def test_dvc_deps_cover_every_module_the_stage_imports(stage):
    listed, needed = stage_modules()[stage]
    missing, extra = sorted(needed - listed), sorted(listed - needed)
    assert not missing, (
        f"dvc.yaml: stage {stage} runs {missing} but does not list them as deps (python -m tests.import_graph)"
    )
    assert not extra, f"dvc.yaml: stage {stage} lists {extra}, which it never imports"


def test_modules_left_out_of_the_deps_say_why():
    assert all(reason.strip() for reason in NOT_DEPS.values())
