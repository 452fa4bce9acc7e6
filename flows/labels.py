"""`labels` stage: the comparisons rm and dpo train on -> data/comparisons/pairs.jsonl (+ report.json and, with
people's labels, rankings.jsonl: every ranking as given, what `python -m flows.label restore` reads), and,
when heldout_rm is among eval.judges, the held-out share (eval.heldout_share of the prompts) that only the
heldout_rm judge trains on and eval measures the judges on -> data/comparisons/heldout.jsonl.

A simulated or dataset labeler's pairs are the sample stage's, copied. With sample.labeler: people they are
every live ranking in the label store (tasks/label/export.py), read again at each `dvc repro` (the stage is
always_changed; rm and dpo rerun only when the exported pairs differ; outside a pipeline run it is a plain
file export, no Prefect or MLflow run). Below labels.target labeled tasks,
inside a pipeline flow run the stage pauses with Prefect's pause-with-input: its node shows Paused with the
page's address until the page sees the target reached and resumes it, or a person resumes it in the UI (then it
trains on the labels so far). Outside a pipeline run it stops in one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request

from flows.common import PIPELINE_RUN, read_params, run_stage, stage_run, write_metrics
from flows.paths import COMPARISONS, ROOT, SAMPLES, store_url
from tasks import config
from tasks.data.splits import split_for_judges
from tasks.label.archive import archive
from tasks.label.export import export, report_lines, target_of
from tasks.label.store import LabelStore
from tasks.runtime.errors import PipelineError, die_cleanly
from tasks.runtime.files import atomic_path, read_jsonl, write_json, write_jsonl


def page_answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}api/progress", timeout=2).status == 200
    except OSError:
        return False


@contextlib.contextmanager
def labeling_page(cfg, url: str):
    """The labeling page at url: the one already there (`make label`), else one started here and stopped by PID."""
    if page_answers(url):
        yield
        return
    cmd = [
        sys.executable,
        "-m",
        "flows.label",
        "serve",
        "--store",
        cfg.store,
        "--host",
        cfg.host,
        "--port",
        str(cfg.port),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not page_answers(url):
            if proc.poll() is not None or time.time() > deadline:
                raise PipelineError(f"labels: the labeling page did not start at {url} (is the port taken?)")
            time.sleep(0.5)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def prefect_api() -> str | None:
    """The Prefect server this process reports to (env or profile); None for a temporary one, which a paused run
    cannot outlive."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def short_of_target(cfg) -> tuple[LabelStore, list[str], int, str | None]:
    """The store, the sampled prompts' ids, the target, and what is missing when fewer than labels.target tasks
    are labeled (None when enough are). A pipeline run can wait for them; any other run stops here, before
    Prefect starts."""
    store = LabelStore(store_url(cfg.store))
    prompt_ids = list(dict.fromkeys(r["prompt_id"] for r in read_jsonl(SAMPLES / "completions.jsonl")))
    done = store.progress(prompt_ids)
    target = target_of(cfg, done["total"])
    if done["labeled"] >= target:
        return store, prompt_ids, target, None
    missing = f"{done['labeled']} of {done['total']} tasks labeled, labels.target is {target}"
    if not (os.environ.get(PIPELINE_RUN) and prefect_api() and cfg.wait_hours > 0):
        raise PipelineError(
            f"labels: {missing}: label them with `make label` (http://{cfg.host}:{cfg.port}/), then run again"
        )
    return store, prompt_ids, target, missing


def check_labels(params: dict) -> None:
    config.judges(params)
    if config.load("sample", params).labeler == "people":
        short_of_target(config.load("labels", params))


def wait_for_people(store: LabelStore, prompt_ids: list[str], cfg, target: int, missing: str) -> None:
    """Paused (a pipeline run) until resumed: by the page once labels.target tasks are labeled, or by a person."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.input import RunInput
    from prefect.runtime import flow_run

    class Resume(RunInput):
        note: str = ""

    url = f"http://{cfg.host}:{cfg.port}/"
    where = f"{missing}: label them at {url}"
    api = prefect_api()
    describe = (
        f"**Waiting for labels.** {where}.\n\nThis run resumes by itself when the target is reached. "
        "Resume it now to train the reward model on the labels there are."
    )
    with labeling_page(cfg, url):
        store.open_wait(str(flow_run.id), api, prompt_ids, target)
        print(f"labels: paused: {where}; resumes at {target} or when resumed in the Prefect UI")
        try:
            got = pause_flow_run(
                wait_for_input=Resume.with_initial_data(description=describe, note="resumed in the UI"),
                timeout=int(cfg.wait_hours * 3600),
                poll_interval=5,
                key="labels",
            )
        except FlowPauseTimeout:
            raise PipelineError(f"labels: not resumed within labels.wait_hours={cfg.wait_hours}: {where}") from None
        finally:
            store.close_wait(str(flow_run.id))
    print(f"labels: resumed ({got.note})")


def write_pairs(pairs: list[dict], params: dict, staging) -> dict:
    """pairs.jsonl (rm, dpo) and, with a heldout_rm judge, heldout.jsonl (never shown to rm or dpo)."""
    counts = {}
    if "heldout_rm" in config.judges(params):
        share = config.load("eval", params).heldout_share
        pairs, held = split_for_judges(pairs, share)
        prompts = {p["prompt_id"] for p in held}
        if not prompts or not pairs:
            raise PipelineError(
                f"labels: eval.heldout_share={share} holds out {len(prompts)} of "
                f"{len(prompts | {p['prompt_id'] for p in pairs})} prompts: too few to train on both sides"
            )
        write_jsonl(staging / "heldout.jsonl", held)
        counts = {"heldout_pairs": len(held), "heldout_prompts": len(prompts)}
    write_jsonl(staging / "pairs.jsonl", pairs)
    return counts | {"train_pairs": len(pairs)}


def people_labels(cfg, params: dict, staging) -> dict:
    store, prompt_ids, target, missing = short_of_target(cfg)
    if missing:
        wait_for_people(store, prompt_ids, cfg, target, missing)
    pairs, report = export(store, prompt_ids)
    if not pairs:
        raise PipelineError(f"labels: no comparisons yet ({report_lines(report)[0]}): rank some tasks first")
    report |= write_pairs(pairs, params, staging)
    write_json(staging / "report.json", report)
    write_jsonl(staging / "rankings.jsonl", archive(store, prompt_ids))  # every ranking as given: not only in the db
    for line in report_lines(report):
        print(f"labels: {line}")
    return report


def write_labels(params: dict) -> dict:
    """data/comparisons (pairs.jsonl; report.json for people's labels) and metrics/labels.json."""
    cfg = config.load("labels", params)
    with atomic_path(COMPARISONS) as staging:
        staging.mkdir()
        if config.load("sample", params).labeler == "people":
            report = people_labels(cfg, params, staging)
        else:
            pairs = read_jsonl(SAMPLES / "pairs.jsonl")
            report = {"n_pairs": len(pairs)} | write_pairs(pairs, params, staging)
        write_metrics("labels", {k: v for k, v in report.items() if v is not None})
    return report


def labels_flow():
    from prefect import flow

    @flow(name="labels", log_prints=True)
    def labels() -> dict:
        """Inside a pipeline run: the labels node (paused while people label), its report in an MLflow run."""
        import mlflow

        params = read_params()
        with stage_run("labels", params, "sample"):
            report = write_labels(params)
            mlflow.log_metrics({k: float(v) for k, v in report.items() if isinstance(v, (int, float))})
        return report

    return labels


def main() -> None:
    """Every `dvc repro` runs this stage (always_changed): outside a pipeline run it is a file export, no Prefect
    or MLflow run (the rm stage logs the labels report with the model trained on them)."""
    sections = ("sample", "labels", "eval", "tracking")
    if os.environ.get(PIPELINE_RUN):
        run_stage(labels_flow(), sections, check_labels)
        return
    params = read_params()
    for section in sections:
        config.load(section, params)
    check_labels(params)
    write_labels(params)


if __name__ == "__main__":
    die_cleanly(main)
