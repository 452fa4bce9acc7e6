"""Every ranking as it was given, in a file: the label store's tasks with their hand-outs and labels (annotator,
ranks, all-bad, time, undone time) as JSON lines, so that people's work is never only in one database file. The
`labels` stage writes it beside the pairs (a DVC output); `restore` rebuilds an empty store from it, and a store
restored and archived again gives the same records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.label.store import Assignment, Label, LabelError, LabelStore, Task


def _time(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _parse(t: str | None) -> datetime | None:
    return datetime.fromisoformat(t) if t is not None else None


def archive(store: LabelStore, prompt_ids: list[str] | None = None) -> list[dict]:
    """One record per task (of these prompts, if given), in task order: the task, who held which slot, and every
    label given on it (undone ones too), in the order given."""
    with Session(store.engine) as s:
        query = select(Task).order_by(Task.id)
        if prompt_ids is not None:
            query = query.where(Task.prompt_id.in_(prompt_ids))
        out = []
        for t in s.scalars(query):
            handed = s.scalars(select(Assignment).where(Assignment.task_id == t.id).order_by(Assignment.id))
            labels = s.scalars(select(Label).where(Label.task_id == t.id).order_by(Label.id))
            out.append(
                {
                    "prompt_id": t.prompt_id,
                    "prompt": t.prompt,
                    "completions": t.completions,
                    "slots": t.slots,
                    "handed_out": [{"annotator": a.annotator, "slot": a.slot if a.slot >= 0 else None} for a in handed],
                    "labels": [
                        {
                            "annotator": label.annotator,
                            "ranks": label.ranks,
                            "all_bad": label.all_bad,
                            "labeled_at": _time(label.created_at),
                            "undone_at": _time(label.undone_at),
                        }
                        for label in labels
                    ],
                }
            )
    return out


def restore(store: LabelStore, records: list[dict]) -> dict:
    """Rebuild an empty store from archive records (one transaction: all or nothing). Returns the counts."""
    with Session(store.engine) as s, s.begin():
        if s.scalar(select(func.count(Task.id))):
            raise LabelError("the label store already holds tasks: restore into an empty store")
        n_labels = 0
        for r in records:
            task = Task(prompt_id=r["prompt_id"], prompt=r["prompt"], completions=r["completions"], slots=r["slots"])
            s.add(task)
            s.flush()
            for i, a in enumerate(r["handed_out"]):  # slot None: skipped (a free slot, the task not theirs again)
                slot = a["slot"] if a["slot"] is not None else -(10**9 + i)
                s.add(Assignment(task_id=task.id, slot=slot, annotator=a["annotator"]))
            s.flush()
            for a in s.scalars(select(Assignment).where(Assignment.task_id == task.id, Assignment.slot < 0)):
                a.slot = -a.id  # as the store marks a skip: the hand-out's own id, negative
            for label in r["labels"]:
                created, undone = _parse(label["labeled_at"]), _parse(label["undone_at"])
                s.add(Label(task_id=task.id, annotator=label["annotator"], ranks=label["ranks"],
                            all_bad=label["all_bad"], created_at=created, undone_at=undone))  # fmt: skip
                n_labels += 1
    return {"tasks": len(records), "labels": n_labels}
