"""People's labeling, from the command line (defaults: params.yaml's labels section):

    python -m flows.label serve [--store URL] [--host HOST] [--port PORT]   the page (`make label`)
    python -m flows.label invite NAME      a sign-in link for NAME (only the token's hash is stored)
    python -m flows.label list             who is invited, since when, revoked, how many labels
    python -m flows.label revoke NAME      NAME's link stops working at once (their labels stay)
    python -m flows.label export FILE      every ranking as given (the labels stage writes the same file)
    python -m flows.label restore FILE     an empty store rebuilt from such a file

The page binds 127.0.0.1 unless told otherwise, and any other address only once someone is invited: without
invite tokens anyone who reaches the port could label under any name. A relative SQLite path is the project's
(labels.db beside params.yaml); any SQLAlchemy URL works (Postgres for a team: postgresql+psycopg://...). A
pipeline run paused at its labels stage is resumed from here once its target of labeled tasks is reached.
"""

from __future__ import annotations

import argparse
import ipaddress

from flows.common import read_params
from flows.paths import store_url
from tasks import config
from tasks.label import access
from tasks.label.archive import archive, restore
from tasks.label.page import make_app
from tasks.label.store import LabelStore
from tasks.runtime.errors import PipelineError, die_cleanly
from tasks.runtime.files import read_jsonl, write_jsonl


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


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(store: LabelStore, host: str, port: int) -> None:
    import uvicorn

    if not loopback(host) and not access.closed(store):
        raise PipelineError(
            f"labels.host: {host} is reachable from other machines, and nobody is invited: anyone could label "
            "under any name. Invite the annotators first (python -m flows.label invite NAME)"
        )
    app = make_app(store, on_label=lambda: resume_reached(store))
    print(f"labeling page: http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main() -> None:
    cfg = config.load("labels", read_params())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "invite", "list", "revoke", "export", "restore"]
    )
    ap.add_argument("arg", nargs="?", help="NAME (invite, revoke) or FILE (export, restore)")
    ap.add_argument("--store", default=cfg.store, help="SQLAlchemy URL of the label store")
    ap.add_argument("--host", default=cfg.host, help="address to bind (127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=cfg.port)
    args = ap.parse_args()
    if args.command in ("invite", "revoke", "export", "restore") and not args.arg:
        raise PipelineError(
            f"flows.label {args.command}: give a {'NAME' if args.command in ('invite', 'revoke') else 'FILE'}"
        )
    store = LabelStore(store_url(args.store))
    if args.command == "serve":
        serve(store, args.host, args.port)
    elif args.command == "invite":
        token = access.invite(store, args.arg)
        print(f"{args.arg}: http://{args.host}:{args.port}/?token={token}  (send it to them; it is shown once)")
    elif args.command == "revoke":
        access.revoke(store, args.arg)
        print(f"{args.arg}: revoked")
    elif args.command == "list":
        for a in access.annotators(store):
            state = f"revoked {a['revoked']:%Y-%m-%d %H:%M}" if a["revoked"] else "active"
            print(f"{a['name']:<24} invited {a['invited']:%Y-%m-%d %H:%M}  {state:<24} {a['labels']} labels")
    elif args.command == "export":
        records = archive(store)
        write_jsonl(args.arg, records)
        print(f"{len(records)} tasks with their rankings -> {args.arg}")
    else:
        counts = restore(store, read_jsonl(args.arg))
        print(f"restored {counts['tasks']} tasks and {counts['labels']} labels into {args.store}")


if __name__ == "__main__":
    die_cleanly(main)
