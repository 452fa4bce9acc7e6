"""`make label`: the labeling page (tasks/label/page.py) over a label store, on 127.0.0.1 unless told otherwise.

    python -m flows.label_page [--store URL] [--host HOST] [--port PORT]   (defaults: params.yaml's labels section)

A relative SQLite path is the project's (labels.db beside params.yaml); any SQLAlchemy URL works. A pipeline run
paused at its labels stage is resumed from here once its target of labeled tasks is reached.
"""

from __future__ import annotations

import argparse

from flows.common import read_params
from flows.paths import store_url
from tasks import config
from tasks.label.page import make_app
from tasks.label.store import LabelStore
from tasks.runtime.errors import die_cleanly


def resume_reached(store: LabelStore) -> None:
    """Resume each paused run whose target is reached (Prefect's resume, with the input its pause asked for);
    close the wait of a run that is no longer paused and has ended."""
    waits = store.waits_reached()
    if not waits:
        return
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    for wait in waits:
        run_id = UUID(wait.flow_run_id)
        with temporary_settings({PREFECT_API_URL: wait.api_url}):
            try:
                resume_flow_run(run_id, run_input={"note": f"{wait.target} tasks labeled: the target"})
                print(f"labeling page: target of {wait.target} reached, resumed flow run {run_id}")
            except NotPausedError:  # not paused yet (it is about to be: the next label resumes it) or ended
                with get_client(sync_client=True) as client:
                    if not client.read_flow_run(run_id).state.is_final():
                        continue
            store.close_wait(wait.flow_run_id)


def main() -> None:
    import uvicorn

    cfg = config.load("labels", read_params())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=cfg.store, help="SQLAlchemy URL of the label store")
    ap.add_argument("--host", default=cfg.host, help="address to bind (127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=cfg.port)
    args = ap.parse_args()
    store = LabelStore(store_url(args.store))
    app = make_app(store, on_label=lambda: resume_reached(store))
    print(f"labeling page: http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    die_cleanly(main)
