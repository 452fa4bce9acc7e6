"""examples/hh: Anthropic HH (harmless-base test) as a team's own data. The files it writes go through the
pipeline's own readers: the prepare stage's splits and the dataset labeler, and no prompt is in two files."""

import json

import yaml

from examples.hh import make_data
from tasks import config
from tasks.data.splits import prepare
from tasks.label.labelers import DatasetLabeler, prompt_id
from tasks.runtime.files import read_jsonl


def test_the_hh_files_are_disjoint_by_prompt_and_read_by_prepare_and_the_dataset_labeler(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/reviews.jsonl").write_text(
        "".join(json.dumps({"text": f"review {i} was a fine film to watch"}) + "\n" for i in range(40))
    )
    make_data.main([])
    files = {p.stem: read_jsonl(p) for p in (tmp_path / "data/own/hh").glob("*.jsonl")}
    assert {k: len(v) for k, v in files.items()} == {
        "eval": 200,
        "policy": 128,
        "sft_val": 48,
        "sft": 281,
        "prefs": 800,
    }

    def prompt_of(r):
        return r["prompt"] if "prompt" in r else r["messages"][:-1]

    ids = {name: {prompt_id(prompt_of(r)) for r in rows} for name, rows in files.items()}
    assert all(len(ids[name]) == len(files[name]) for name in files)  # no prompt twice in a file
    names = sorted(ids)
    assert not [(a, b) for a in names for b in names if a < b and ids[a] & ids[b]]

    overrides = {k: yaml.safe_load(str(v).strip("'")) for k, v in make_data.PARAMS.items()}
    prepare_cfg = config.SECTIONS["prepare"].model_validate(
        {
            "sources": {k.split(".")[-1]: v for k, v in overrides.items() if k.startswith("prepare.sources.")},
            "tune_prompts": overrides["prepare.tune_prompts"],
            "corpus": "data/reviews.jsonl",
        }
    )
    sizes = prepare(prepare_cfg, tmp_path, None)
    assert (sizes["sft"], sizes["sft_val"], sizes["policy"], sizes["tune"], sizes["eval"]) == (281, 48, 96, 32, 200)

    sample_cfg = config.SECTIONS["sample"].model_validate({"labeler": "dataset", "dataset": "data/own/hh/prefs.jsonl"})
    pairs = DatasetLabeler(sample_cfg, tmp_path).label()
    assert len(pairs) == 800 and {p["prompt_id"] for p in pairs} == ids["prefs"]
    assert all(p["chosen"] != p["rejected"] and p["prompt"][-1]["role"] == "user" for p in pairs)


def test_only_local_files_outside_data_own_are_untracked(tmp_path, capsys):
    from flows.paths import OWN_DATA, ROOT
    from tasks.data.splits import untracked_note

    outside = tmp_path / "prefs.jsonl"
    outside.write_text("{}\n")
    inside = str(OWN_DATA / "prefs.jsonl")  # a .jsonl path counts as a file even before it exists
    assert untracked_note("sample", [str(outside), inside, "Anthropic/hh-rlhf", None], ROOT, OWN_DATA) == [str(outside)]
    assert capsys.readouterr().out.count("is outside data/own/") == 1
