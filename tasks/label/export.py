"""People label the comparisons: the sample stage's completions become labeling tasks in the label store, and
the store's rankings become the comparisons file the rm and dpo stages read, with a report on who labeled what
and how well people agree (with each other on overlapping tasks, and with the gold scorer when it scored)."""

from __future__ import annotations

from tasks.label.store import LabelStore, gold_agreement
from tasks.runtime.errors import PipelineError


def groups_from_completions(rows: list[dict]) -> list[dict]:
    """completions.jsonl rows -> [{prompt_id, prompt, completions: [{text, ended, gold?}]}], in file order."""
    groups: dict[str, dict] = {}
    for r in rows:
        g = groups.setdefault(r["prompt_id"], {"prompt_id": r["prompt_id"], "prompt": r["prompt"], "completions": []})
        g["completions"].append({k: r[k] for k in ("text", "ended", "gold") if k in r})
    return list(groups.values())


def send_to_people(store: LabelStore, groups: list[dict], overlap: float, seed: int, round: int = 1) -> dict:
    """Each prompt's completions as a labeling task of `round` (a prompt already in the store that someone held
    or ranked keeps the completions people saw); the metrics the sample stage reports about it."""
    added = store.add_tasks(groups, overlap=overlap, seed=seed, round=round)
    done = store.progress([g["prompt_id"] for g in groups])
    kept = store.kept_other_completions(groups)
    return {
        "label_tasks": done["total"],
        "label_tasks_added": added,
        "label_tasks_labeled": done["labeled"],
        "label_tasks_kept_other_completions": len(kept),
    }


def target_of(cfg, n_tasks: int) -> int:
    """labels.target, or every task when unset; more than there are is a params error."""
    if cfg.target is not None and cfg.target > n_tasks:
        raise PipelineError(f"params.yaml: labels.target: {cfg.target} is more than the {n_tasks} labeling tasks")
    return cfg.target or n_tasks


def export(store: LabelStore, prompt_ids: list[str]) -> tuple[list[dict], dict]:
    """The pairs of every live ranking of these prompts' tasks, and the report: per-annotator labels,
    inter-annotator agreement on tasks two people ranked, agreement with the gold scorer."""
    pairs = store.export_pairs(prompt_ids)
    progress, people = store.progress(prompt_ids), store.agreement(prompt_ids)
    gold = gold_agreement(pairs)
    report = {
        "tasks": progress["total"],
        "tasks_labeled": progress["labeled"],
        "labels": sum(progress["by_annotator"].values()),
        "all_bad": store.all_bad(prompt_ids),
        "n_pairs": len(pairs),
        "n_annotators": len(progress["by_annotator"]),
        "labels_by_annotator": dict(sorted(progress["by_annotator"].items())),
        "overlap_tasks": people["overlap_tasks"],
        "overlap_pairs": people["pairs"],
        "annotator_agreement": people["agreement"],
        "gold_pairs": gold["pairs"],
        "gold_agreement": gold["agreement"],
    }
    return pairs, report


def report_lines(report: dict) -> list[str]:
    """The report as a person reads it."""

    def share(x):
        return "n/a" if x is None else f"{x:.1%}"

    by = ", ".join(f"{a} {n}" for a, n in report["labels_by_annotator"].items()) or "nobody yet"
    return [
        f"{report['tasks_labeled']} of {report['tasks']} tasks labeled ({report['labels']} labels: {by}; "
        f"{report['all_bad']} all bad) -> {report['n_pairs']} pairs",
        f"people agree on {share(report['annotator_agreement'])} of {report['overlap_pairs']} pairs "
        f"({report['overlap_tasks']} tasks ranked twice); "
        f"the gold scorer agrees with {share(report['gold_agreement'])} of {report['gold_pairs']}",
    ]
