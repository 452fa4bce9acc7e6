"""The sample and rm stages on the tiny profile: simulated labels, dataset labels, bad files, other scorers."""

import json
import statistics

import pytest
import torch
import yaml

from tasks.runtime.files import read_jsonl
from tests.conftest import run_cmd, set_params

pytestmark = pytest.mark.slow


def test_tiny_repro_through_rm(tiny_pipeline):
    root = tiny_pipeline["root"]
    run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=tiny_pipeline["prefect_api"])
    s = json.loads((root / "metrics/sample.json").read_text())
    assert s["n_pairs"] == 6 * s["n_prompts"] and s["n_completions"] == 4 * s["n_prompts"]
    m = json.loads((root / "metrics/rm.json").read_text())
    assert m["train_accuracy"] > 0.5 and m["heldout_n_pairs"] > 0
    norm = json.loads((root / "models/rm/reward_norm.json").read_text())
    assert norm["gain"] > 0
    pairs = read_jsonl(root / "data/comparisons/pairs.jsonl")
    assert {"prompt", "chosen", "rejected", "prompt_id"} <= pairs[0].keys()
    # the saved RM + its gain/bias give the held-out prompts' SFT completions mean 0 and std 1
    from types import SimpleNamespace

    from tasks import config
    from tasks.lm.models import load_scalar_model
    from tasks.runtime.device import run_context
    from tasks.train.comparisons import build_groups
    from tasks.train.reward_model import score_groups

    params = yaml.safe_load((root / "params.yaml").read_text())
    rm_cfg = SimpleNamespace(**params["rm"])
    ctx = run_context(config.load("compute", params), "rm")  # the stage's precision (bf16 on CPUs with bf16 units)
    model, tok = load_scalar_model(root / "models/rm")
    _, held = build_groups(pairs, tok, rm_cfg)
    r = [
        x * norm["gain"] + norm["bias"]
        for g in score_groups(model, held, tok.pad_token_id, 16, ctx, norm["pooling"])
        for x in g
    ]
    assert len(r) > 10 and abs(statistics.fmean(r)) < 1e-4 and abs(statistics.pstdev(r) - 1) < 1e-4


def write_prefs(path, n=60, fmt="trl"):
    good = ["was a delight, I loved every minute", "is wonderful and the acting is great"]
    bad = ["was boring and awful, I hated it", "is a dull mess with terrible acting"]
    with open(path, "w") as f:
        for i in range(n):
            prompt = f"Review {i}: the film"
            c, r = " " + good[i % 2], " " + bad[i % 2]
            rec = (
                {"prompt": prompt, "chosen": c, "rejected": r}
                if fmt == "trl"
                else {
                    "chosen": f"\n\nHuman: {prompt}\n\nAssistant:{c}",
                    "rejected": f"\n\nHuman: {prompt}\n\nAssistant:{r}",
                }
            )
            f.write(json.dumps(rec) + "\n")


def test_dataset_labeler_reads_anthropic_hh_dialogues_as_the_trl_format(tmp_path):
    """HH's two full dialogues become the same prompt/chosen/rejected records as the TRL file (the stage-level
    run below trains the RM on the TRL one)."""
    from types import SimpleNamespace

    from tasks.label.labelers import DatasetLabeler

    for fmt in ("trl", "hh"):
        write_prefs(tmp_path / f"{fmt}.jsonl", n=6, fmt=fmt)
    trl, hh = (DatasetLabeler(SimpleNamespace(dataset=f"{f}.jsonl"), tmp_path).label() for f in ("trl", "hh"))
    assert len(hh) == len(trl) == 6
    for h, t in zip(hh, trl):
        assert (h["chosen"], h["rejected"]) == (t["chosen"], t["rejected"])
        assert h["prompt"] == f"\n\nHuman: {t['prompt']}\n\nAssistant:"


@pytest.mark.parametrize("fmt", ["trl"])
def test_dataset_labeler_trains_the_rm_without_sampling(tiny_pipeline, fmt):
    root = tiny_pipeline["root"]
    write_prefs(root / f"prefs-{fmt}.jsonl", fmt=fmt)
    params = (root / "params.yaml").read_text()
    try:
        set_params(root, sample={"labeler": "dataset", "dataset": f"prefs-{fmt}.jsonl"})
        run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=tiny_pipeline["prefect_api"])
    finally:
        (root / "params.yaml").write_text(params)
    s = json.loads((root / "metrics/sample.json").read_text())
    assert s == {"n_prompts": 60, "n_pairs": 60}  # no completions were sampled
    pairs = read_jsonl(root / "data/comparisons/pairs.jsonl")
    assert pairs[0]["chosen"].startswith(" was a delight") and "Assistant" not in pairs[0]["chosen"]
    m = json.loads((root / "metrics/rm.json").read_text())
    assert m["train_accuracy"] > 0.9  # an easy, consistent preference


def rm_agreement(rm_dir, pairs, scorer):
    """Share of decided pairs (under `scorer`) that the RM in rm_dir orders like the scorer."""
    from tasks.lm.generation import pack
    from tasks.lm.models import load_scalar_model
    from tasks.train.comparisons import response_ids
    from tasks.train.reward_model import load_reward_norm, sequence_rewards

    model, tok = load_scalar_model(rm_dir)
    pooling = load_reward_norm(rm_dir)["pooling"]
    agree = n = 0
    for p in pairs:
        gc, gr = scorer(p["chosen"]), scorer(p["rejected"])
        if gc == gr:
            continue
        q = tok(p["prompt"])["input_ids"]
        packed = pack(
            [q, q],
            [
                response_ids(tok, p["chosen"], p["chosen_ended"], 64),
                response_ids(tok, p["rejected"], p["rejected_ended"], 64),
            ],
            tok.pad_token_id,
        )
        with torch.no_grad():
            r = sequence_rewards(model.eval(), packed, pooling)
        agree += bool((r[0] > r[1]) == (gc > gr))
        n += 1
    return agree / n


def test_another_gold_scorer_changes_what_the_rm_learns(tiny_pipeline, tmp_path):
    from tests.scorers import more_the

    root = tiny_pipeline["root"]
    api = tiny_pipeline["prefect_api"]
    run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=api)
    vader_rm = tmp_path / "rm-vader"
    (root / "models/rm").rename(vader_rm)
    params = (root / "params.yaml").read_text()
    try:
        set_params(root, sample={"gold_scorer": "tests.scorers:more_the"})
        run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=api)  # no code change: params only
    finally:
        (root / "params.yaml").write_text(params)
    pairs = read_jsonl(root / "data/comparisons/pairs.jsonl")
    assert all(p["gold_chosen"] == more_the(p["prompt"] + p["chosen"]) for p in pairs[:20])
    new, old = rm_agreement(root / "models/rm", pairs, more_the), rm_agreement(vader_rm, pairs, more_the)
    print(f"agreement with the 'more the' preference: RM trained on it {new:.3f}, VADER-trained RM {old:.3f}")
    assert new > old + 0.1


def test_rm_trains_on_peoples_labels_and_reruns_when_they_change(tiny_pipeline):
    """sample.labeler: people -- sample hands the completions to the label store; `dvc repro` stops at labels
    until the target is labeled, then rm trains on exactly the people's pairs, and reruns only when they change."""
    from tasks.label.store import LabelStore

    root, api = tiny_pipeline["root"], tiny_pipeline["prefect_api"]
    params = (root / "params.yaml").read_text()
    store = LabelStore(f"sqlite:///{root}/labels.db")

    def rank_by_gold(annotator: str) -> None:  # what a person does on the page (tests/test_labeling.py drives it)
        from tasks.label.gold import scored_text, vader

        task = store.next_task(annotator)
        assert all("gold" not in c for c in task.completions)  # a team's completions carry no default score
        golds = [vader(scored_text(task.prompt, c["text"])) for c in task.completions]
        store.submit(task.id, annotator, ranks=[1 + sorted(golds, reverse=True).index(g) for g in golds])

    try:
        judges = {"judges": ["gold", "rm"]}  # no held-out share: every ranking's pairs reach the rm
        set_params(root, sample={"labeler": "people"}, labels={"target": 4, "overlap": 0.0}, eval=judges)
        proc = run_cmd(root, "dvc", "repro", "rm", check=False, PREFECT_API_URL=api)
        assert proc.returncode != 0 and "labels: 0 of 50 tasks labeled, labels.target is 4" in proc.stderr
        assert store.progress()["total"] == 50
        for annotator in ("ann", "ann", "bob", "bob"):
            rank_by_gold(annotator)
        run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=api)
        labels, rm = (json.loads((root / f"metrics/{s}.json").read_text()) for s in ("labels", "rm"))
        assert labels["labels_by_annotator"] == {"ann": 2, "bob": 2} and "gold_agreement" not in labels
        assert (
            rm["train_n_pairs"] + rm["heldout_n_pairs"]
            == labels["n_pairs"]
            == len(read_jsonl(root / "data/comparisons/pairs.jsonl"))
        )
        import mlflow  # the rm's MLflow run carries the labels it trained on

        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        run = mlflow.search_runs(
            experiment_names=["rlhf-pipeline"], filter_string="tags.dvc_stage = 'rm'", order_by=["start_time DESC"]
        ).iloc[0]
        assert run["metrics.labels_n_pairs"] == labels["n_pairs"] and run["metrics.labels_n_annotators"] == 2
        again = run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=api).stdout
        assert "Running stage 'labels'" in again and "Stage 'rm' didn't change" in again
        rank_by_gold("cy")
        changed = run_cmd(root, "dvc", "repro", "rm", PREFECT_API_URL=api).stdout
        assert "Running stage 'rm'" in changed
        assert json.loads((root / "metrics/labels.json").read_text())["tasks_labeled"] == 5
    finally:
        (root / "params.yaml").write_text(params)
        (root / "labels.db").unlink(missing_ok=True)


def test_a_dataset_run_without_a_gold_scorer_judges_and_gates_on_the_heldout_rm(tiny_pipeline):
    """A team's own preference file and no gold scorer: eval reports no gold number anywhere, the held-out RM
    (trained on prompts dpo never saw) judges, and the champion gate reads its win rate."""
    root = tiny_pipeline["root"]
    prefs = root / "data/own/prefs-team.jsonl"
    write_prefs(prefs)
    params = (root / "params.yaml").read_text()
    try:
        set_params(
            root,
            sample={"labeler": "dataset", "dataset": "data/own/prefs-team.jsonl", "gold_scorer": None},
            pipeline={"algorithms": ["dpo"]},
        )
        run_cmd(root, "dvc", "repro", "champion", PREFECT_API_URL=tiny_pipeline["prefect_api"])
        outputs = {
            name: json.loads((root / f"metrics/{name}.json").read_text())
            for name in ("eval/dpo", "eval/sft", "eval/judges", "champion", "heldout_rm", "labels")
        }
        train, held = (read_jsonl(root / f"data/comparisons/{f}.jsonl") for f in ("pairs", "heldout"))
        write_prefs(prefs, n=61)
        changed = run_cmd(root, "dvc", "status", "sample").stdout  # the team edited its file: sample is stale
    finally:
        (root / "params.yaml").write_text(params)
        prefs.unlink()
    assert "sample:" in changed and "data/own" in changed
    dpo, champion, judges = outputs["eval/dpo"], outputs["champion"], outputs["eval/judges"]
    assert not [k for name, m in outputs.items() for k in m if "gold" in k and name != "champion"]
    assert dpo["win_rate"] == dpo["win_rate_heldout_rm"] and "win_rate_rm" not in dpo  # rm: no online stage
    assert champion["judge"] == "heldout_rm" and champion["reason"].startswith("judge heldout_rm: ")
    assert judges["n_pairs_heldout_rm"] == outputs["heldout_rm"]["heldout_n_pairs"] > 0
    assert outputs["labels"]["train_pairs"] + outputs["labels"]["heldout_pairs"] == 60
    assert not {p["prompt_id"] for p in train} & {p["prompt_id"] for p in held}
