"""`make label`: the labeling page (tasks/labelpage.py) over a label store, on 127.0.0.1 unless told otherwise.

    python -m flows.label [--store sqlite:///labels.db] [--host 127.0.0.1] [--port 8765]

A relative SQLite path is the project's (labels.db beside params.yaml); any SQLAlchemy URL works.
"""

from __future__ import annotations

import argparse

from flows.paths import ROOT
from tasks.common import die_cleanly
from tasks.labelpage import make_app
from tasks.labelstore import LabelStore


def store_url(url: str) -> str:
    """sqlite:///relative.db -> the file in the project; every other URL as it is."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        return prefix + str(ROOT / url[len(prefix) :])
    return url


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="sqlite:///labels.db", help="SQLAlchemy URL of the label store")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    app = make_app(LabelStore(store_url(args.store)))
    print(f"labeling page: http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    die_cleanly(main)
