"""The labels stage inside a pipeline run, against a real Prefect server: it pauses (Prefect's pause with input)
with the labeling page's address, the page it started resumes it when the target is reached, a person resumes it
before the target, and outside a pipeline run it stops in one line. The stage runs for real (`python -m
flows.labels`, as DVC starts it); only its parent, the pipeline flow run, is created here through the API."""

import json
import subprocess
import time
from uuid import UUID

import httpx
import pytest
import yaml

from tasks.label.export import groups_from_completions, send_to_people
from tasks.label.store import LabelStore
from tasks.runtime.files import read_jsonl
from tests.conftest import free_port, make_project, project_env, run_cmd

pytestmark = pytest.mark.slow

K, PROMPTS = 3, 3


@pytest.fixture
def project(tmp_path):
    """A project copy with sampled completions (no model needed) and their tasks in a fresh label store."""
    root = make_project(tmp_path / "proj", profile=None)
    port = free_port()
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["sample"]["labeler"] = "people"
    p["labels"] |= {"target": 2, "overlap": 0.0, "port": port}
    p["eval"]["judges"] = ["rm"]  # no held-out share: every ranking's pairs reach pairs.jsonl
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    rows = [
        {"prompt_id": f"p{i}", "prompt": f"Review {i}:", "text": f" take {j} <script>x()</script>", "ended": True,
         "gold": float(j)}
        for i in range(PROMPTS) for j in range(K)
    ]  # fmt: skip
    (root / "data/samples").mkdir(parents=True)
    (root / "data/samples/completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = LabelStore(f"sqlite:///{root}/labels.db")
    send_to_people(store, groups_from_completions(rows), overlap=0.0, seed=0)
    return root, store, f"http://127.0.0.1:{port}/"


def pipeline_parent(api: str) -> str:
    """A running pipeline flow run on the server (the stage's node goes under it)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Running

    @flow(name="rlhf-pipeline")
    def pipeline():
        pass

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return str(client.create_flow_run(pipeline, state=Running()).id)


def start_stage(root, api: str, parent: str, **extra) -> subprocess.Popen:
    env = project_env(root, PREFECT_API_URL=api, RLHF_PIPELINE_FLOW_RUN_ID=parent, **extra)
    cmd = ["python", "-m", "flows.labels"]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def paused_child(api: str, parent: str, proc, timeout: float = 120):
    """The stage's flow run under the parent's node, once it is Paused."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.time() + timeout
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            nodes = [t for t in client.read_task_runs() if t.flow_run_id == UUID(parent)]
            children = [client.read_flow_run(r.id) for r in client.read_flow_runs() if r.parent_task_run_id in
                        {n.id for n in nodes}]  # fmt: skip
            if children and children[0].state.is_paused():
                return children[0]
            time.sleep(1)
    raise AssertionError("the labels stage did not pause")


def label(url: str, annotator: str, ranks: list[int]) -> dict:
    task = httpx.get(f"{url}api/next", params={"annotator": annotator}, timeout=10).json()["task"]
    body = {"annotator": annotator, "task_id": task["id"], "ranks": ranks}
    assert httpx.post(f"{url}api/submit", json=body, timeout=30).status_code == 200
    return task


def finished(proc, timeout: float = 90) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def snapshot(path) -> dict:
    return {f.name: f.read_bytes() for f in sorted(path.glob("*"))} if path.exists() else {}


def test_outside_a_pipeline_run_it_stops_in_one_line(project):
    root, _, url = project
    before = snapshot(root / "data/comparisons")
    proc = run_cmd(root, "python", "-m", "flows.labels", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: labels: 0 of {PROMPTS} tasks labeled, labels.target is 2: label them with `make label` ({url}), "
        "then run again"
    ]
    assert snapshot(root / "data/comparisons") == before  # the comparisons rm trained on are kept


def test_paused_run_resumes_at_the_target_or_by_a_person(project, prefect_server):
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root, store, url = project
    parent = pipeline_parent(prefect_server)
    proc = start_stage(root, prefect_server, parent)
    run = paused_child(prefect_server, parent, proc)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        described = read_flow_run_input("paused-labels-description", flow_run_id=run.id)
    assert url in described and "0 of 3 tasks labeled" in described  # what the UI's Resume dialog shows
    label(url, "ann", [3, 2, 1])  # the page the stage started
    time.sleep(6)  # one poll of the paused run: still paused below the target
    assert proc.poll() is None
    label(url, "bob", [1, 2, 3])  # the target: the page resumes the run
    out = finished(proc)
    assert "labels: resumed (2 tasks labeled: the target)" in out
    pairs = read_jsonl(root / "data/comparisons/pairs.jsonl")
    assert len(pairs) == 2 * 3 and {p["annotator"] for p in pairs} == {"ann", "bob"}
    report = json.loads((root / "data/comparisons/report.json").read_text())
    assert report["tasks_labeled"] == 2 and report["gold_agreement"] == 0.5  # ann agrees with gold, bob reverses it
    with pytest.raises(httpx.ConnectError):  # the page the stage started is stopped
        httpx.get(f"{url}api/progress", timeout=5)
    assert store.waits_reached() == []

    # a person resumes before the target (the UI's Resume posts this input)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["labels"]["target"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    parent = pipeline_parent(prefect_server)
    proc = start_stage(root, prefect_server, parent)
    run = paused_child(prefect_server, parent, proc)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        resume_flow_run(run.id, run_input={"note": "enough for a first RM"})
    out = finished(proc)
    assert "labels: resumed (enough for a first RM)" in out and "2 of 3 tasks labeled" in out
    assert len(read_jsonl(root / "data/comparisons/pairs.jsonl")) == 6


def test_a_later_rounds_tasks_are_tagged_and_its_labels_node_pauses(project, prefect_server):
    """Round 2 (iterated RLHF): its completions' tasks carry round 2, the page hands them out first and says so,
    the stage (RLHF_ROUND=2, as dvc.yaml's labels_r2 runs it) pauses as node labels_r2 until round 2's target,
    and its pairs are round 2's only (round 1's unlabeled tasks neither count nor come first)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root, store, url = project
    rows = [
        {"prompt_id": f"q{i}", "prompt": f"Round two {i}:", "text": f" option {j}", "ended": True, "gold": float(j)}
        for i in range(PROMPTS) for j in range(K)
    ]  # fmt: skip
    (root / "data/rounds/2/samples").mkdir(parents=True)
    (root / "data/rounds/2/samples/completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    send_to_people(store, groups_from_completions(rows), overlap=0.0, seed=0, round=2)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["rounds"]["count"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    parent = pipeline_parent(prefect_server)
    proc = start_stage(root, prefect_server, parent, RLHF_ROUND="2")
    paused_child(prefect_server, parent, proc)
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        assert [t.name for t in client.read_task_runs() if t.flow_run_id == UUID(parent)] == ["labels_r2"]
    for annotator in ("ann", "bob"):
        task = label(url, annotator, [3, 2, 1])
        assert task["round"] == 2 and task["prompt"].startswith("Round two")
    assert "labels: resumed (2 tasks labeled: the target)" in finished(proc)
    pairs = read_jsonl(root / "data/rounds/2/comparisons/pairs.jsonl")
    assert len(pairs) == 2 * 3 and {p["prompt_id"][0] for p in pairs} == {"q"}
    assert not (root / "data/comparisons").exists()  # round 1's output is not touched
