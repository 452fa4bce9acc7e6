"""Safe by default: no pickle, no unsafe torch.load, no remote code unless asked, loaders use safetensors."""

import re

from tasks.sections.data import BaseConfig
from tests.conftest import REPO

SOURCES = [p for d in ("tasks", "flows", "bench") for p in (REPO / d).rglob("*.py")]


def test_no_unsafe_loading_in_the_project():
    bad = []
    for p in SOURCES:
        for n, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load\(", code):
                bad.append(f"{p.name}:{n}: pickle")
            if "torch.load(" in code and "weights_only=True" not in code:
                bad.append(f"{p.name}:{n}: torch.load without weights_only=True")
            if re.search(r"trust_remote_code\s*[=:]\s*True", code):
                bad.append(f"{p.name}:{n}: trust_remote_code=True")
    assert SOURCES and not bad, bad


def test_defaults_are_safe():
    from tasks import config

    params = config.read_params(REPO / "params.yaml")
    assert config.load("base", params).trust_remote_code is False
    assert BaseConfig.model_fields["trust_remote_code"].default is False
    # every from_pretrained of weights in the project asks for safetensors
    for p in SOURCES:
        for call in re.findall(r"ModelFor\w+\.from_pretrained\(([^)]*)\)", p.read_text(), flags=re.S):
            assert "use_safetensors" in call, f"{p.name}: {call}"
