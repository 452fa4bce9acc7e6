"""DVC experiments from Python: queue a batch (one `dvc exp run --queue` each), run it with
`dvc queue start -j <jobs>`, wait for every one, and read `dvc exp show --json`. The frontier sweep and the
seeds command use it."""

from __future__ import annotations

import json
import os
import subprocess
import time

from flows.common import TRACKING_URI
from flows.paths import LABELS_HOME, ROOT
from tasks import config
from tasks.runtime.errors import PipelineError


def dvc_env() -> dict:
    # queued experiments run in temporary copies: keep them logging to this project's MLflow store and reading
    # its label store (labels.db is not in git, so not in the copy)
    env = dict(os.environ, MLFLOW_TRACKING_URI=os.environ.get("MLFLOW_TRACKING_URI", TRACKING_URI))
    return env | {LABELS_HOME: env.get(LABELS_HOME, str(ROOT))}


def dvc(*args, timeout=600) -> str:
    proc = subprocess.run(["dvc", *args], cwd=ROOT, env=dvc_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PipelineError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout


def queue(name: str, values: dict) -> None:
    dvc("exp", "run", "--queue", "-n", name, *[a for k, v in values.items() for a in ("-S", f"{k}={v}")])


def start_workers(jobs: int) -> None:
    # `dvc queue start` daemonizes its workers, which inherit its stdout: never capture it (a captured pipe
    # stays open until the last worker exits, so the call would block for the whole batch)
    subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        cwd=ROOT,
        env=dvc_env(),
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def workers_alive() -> bool:
    """Whether a DVC queue worker process of this project is alive, from the pid files its workers write (no
    pid file at all: it cannot tell, and says alive)."""
    pid_files = list((ROOT / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"))
    if not pid_files:
        return True
    for pid_file in pid_files:
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
            return True
        except (ValueError, IndexError, OSError):
            continue
    return False


def queue_status(names) -> dict[str, str]:
    """{experiment name: its newest task's state} from `dvc queue status` (newest first; a requeued name has
    an older Failed row too)."""
    status: dict[str, str] = {}
    for row in (line.split() for line in dvc("queue", "status").splitlines()[1:]):
        if len(row) >= 3 and row[1] in names:
            status.setdefault(row[1], row[-1])
    return status


def run_batch(experiments: dict[str, dict], jobs: int, what: str, timeout_s: float = 6 * 3600) -> list[str]:
    """Queue {name: {param: value}} as DVC experiments, run them `jobs` at a time and wait; one error naming
    the failed ones. Returns the names.

    DVC's queue workers can exit with an experiment still marked Running that nobody runs (a task lost
    between two workers starting at once) or with experiments still Queued: when no worker is left for
    LOST_AFTER_S, those are killed, queued again under their names, and workers started again (at most
    twice)."""
    for name, values in experiments.items():
        queue(name, values)
    start_workers(jobs)
    deadline, idle_since, restarts = time.time() + timeout_s, None, 0
    while True:
        status = queue_status(experiments)
        if len(status) == len(experiments) and all(s in ("Success", "Failed") for s in status.values()):
            break
        if time.time() > deadline:
            raise PipelineError(f"{what}: not done after {timeout_s:.0f} s: {status}")
        if workers_alive():
            idle_since = None
        elif idle_since is None:
            idle_since = time.time()
        elif time.time() - idle_since > LOST_AFTER_S:
            stuck = [n for n in experiments if status.get(n) not in ("Success", "Failed")]
            if restarts == 2:
                raise PipelineError(f"{what}: DVC's queue has no worker left and {stuck} are not done")
            print(f"{what}: no DVC queue worker left, {stuck} not done: queued again")
            for name in stuck:
                if status.get(name) == "Running":
                    dvc("queue", "kill", name)
                    queue(name, experiments[name])
            start_workers(jobs)
            idle_since, restarts = None, restarts + 1
        time.sleep(5)
    failed = [n for n, s in status.items() if s == "Failed"]
    if failed:
        raise PipelineError(f"{what}: experiments failed: {failed} (see `dvc queue logs <name>`)")
    print(f"{what}: {len(experiments)} experiments done: {', '.join(experiments)}")
    return list(experiments)


LOST_AFTER_S = 30


def seed_settings(stages: list[str], seed: int, params: dict) -> dict:
    """{<stage>.seed: seed} for the stages; a stage that inherits (rto, grpo, rloo take ppo's values:
    tasks/config.py INHERITS) takes ppo.seed unless params give it a seed of its own."""
    out = {}
    for stage in stages:
        parent, own = config.INHERITS.get(stage), "seed" in (params.get(stage) or {})
        if parent and not own and parent not in stages:
            raise PipelineError(f"{stage} takes {parent}.seed unless {stage}.seed is set: list {parent} too, or set it")
        if own or not parent:
            out[f"{stage}.seed"] = seed
    return out


def exp_show(all_commits: bool = False) -> list:
    """`dvc exp show --json`: the workspace, the commit and every experiment with its params and metrics;
    all_commits: experiments of every commit (-A), for a batch whose baseline is no longer HEAD because
    someone committed while it ran."""
    return json.loads(dvc("exp", "show", "--json", *(["-A"] if all_commits else [])))
