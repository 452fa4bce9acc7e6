"""Merge a profile (profiles/<name>.yaml) into params.yaml: `python -m flows.profile tiny`.

Profiles override a few fields of the default params (deep merge); everything else stays as it is.
"""

import sys

import yaml

from flows.paths import PARAMS, PROFILES
from tasks.config import deep_merge
from tasks.runtime.errors import PipelineError, die_cleanly


def apply(name: str) -> dict:
    profile = PROFILES / f"{name}.yaml"
    if not profile.exists():
        raise PipelineError(f"no profile {profile}")
    merged = deep_merge(yaml.safe_load(PARAMS.read_text()), yaml.safe_load(profile.read_text()) or {})
    PARAMS.write_text(yaml.safe_dump(merged, sort_keys=False))
    return merged


if __name__ == "__main__":
    die_cleanly(lambda: apply(sys.argv[1]))
