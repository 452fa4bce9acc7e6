"""Merge a profile (profiles/<name>.yaml) into params.yaml: `python -m tasks.profile tiny`.

Profiles override a few fields of the default params (deep merge); everything else stays as it is.
"""
import sys

import yaml

from tasks.common import ROOT, PipelineError, die_cleanly


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply(name: str, params_path=ROOT / "params.yaml") -> dict:
    prof = ROOT / "profiles" / f"{name}.yaml"
    if not prof.exists():
        raise PipelineError(f"no profile {prof}")
    merged = deep_merge(yaml.safe_load(params_path.read_text()), yaml.safe_load(prof.read_text()) or {})
    params_path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return merged


if __name__ == "__main__":
    die_cleanly(lambda: apply(sys.argv[1]))
