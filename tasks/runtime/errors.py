"""The one kind of error a person can fix (bad params, bad input file), and how it ends a command: one line, exit 2.
A leaf: it imports nothing of the project."""

from __future__ import annotations

import os
import sys


class PipelineError(Exception):
    """An error a user can fix (bad params, bad input file): printed as one line, no traceback."""


def die_cleanly(main):
    """Run main(); a PipelineError becomes one 'error: ...' line and exit code 2.

    Set RLHF_DEBUG=1 to get the full traceback instead.
    """
    try:
        return main()
    except PipelineError as e:
        if os.environ.get("RLHF_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
