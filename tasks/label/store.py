"""The label store: people's rankings of a prompt's K completions, kept in a database (SQLAlchemy: SQLite in the
project by default, any SQLAlchemy URL), and the comparisons the reward model reads from them.

A task is one prompt with its K completions. A person ranks them (rank 1 is best, equal ranks are a tie),
marks them all bad, or skips; every submission is committed before the call returns. Tasks are handed out
through slots: a task has one slot (two when it is in the `overlap` share, to measure agreement) and a
unique (task, slot) row per hand-out, so two people can never hold the same slot, on any database.

From rankings to comparisons (InstructGPT): every K-choose-2 pair of a ranking whose ranks differ, the better
one `chosen`; tied pairs and "all bad" rankings give none.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, ForeignKey, String, UniqueConstraint, create_engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tasks.runtime.errors import PipelineError


class LabelError(PipelineError):
    """A submission the store refuses (unknown task, bad rank, duplicate); nothing was written."""


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(64), unique=True)
    prompt: Mapped[object] = mapped_column(JSON)  # text, or a list of chat messages
    completions: Mapped[list] = mapped_column(JSON)  # [{"text", "ended", "gold"?}]
    slots: Mapped[int] = mapped_column(default=1)  # 2: labeled twice, for agreement
    round: Mapped[int] = mapped_column(default=1, server_default="1")  # iterated RLHF: the round that sampled it


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("task_id", "slot"), UniqueConstraint("task_id", "annotator"))
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    slot: Mapped[int]
    annotator: Mapped[str] = mapped_column(String(100))


class Label(Base):
    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    annotator: Mapped[str] = mapped_column(String(100))
    ranks: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)  # 1 = best
    all_bad: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Wait(Base):
    """A paused pipeline run waiting for `target` of these prompts' tasks to be labeled; the page resumes it."""

    __tablename__ = "waits"
    id: Mapped[int] = mapped_column(primary_key=True)
    flow_run_id: Mapped[str] = mapped_column(String(64), unique=True)
    api_url: Mapped[str] = mapped_column(String(500))  # the Prefect server the run is on
    prompt_ids: Mapped[list] = mapped_column(JSON)
    target: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def ranking_pairs(ranks: list[int]) -> list[tuple[int, int]]:
    """(winner, loser) indices of every pair of completions whose ranks differ; ties give no pair.

    [2, 1, 3, 1] -> (1, 0), (0, 2), (3, 0), (1, 2), (3, 2): five of six pairs, (1, 3) is a tie.
    """
    return [(i, j) if ranks[i] < ranks[j] else (j, i) for i, j in itertools.combinations(range(len(ranks)), 2)
            if ranks[i] != ranks[j]]  # fmt: skip


class LabelStore:
    """Tasks, hand-outs and labels in one database; every method is one committed transaction."""

    def __init__(self, url: str):
        self.engine = create_engine(url)
        Base.metadata.create_all(self.engine)
        if "round" not in {c["name"] for c in inspect(self.engine).get_columns("tasks")}:  # a store from before rounds
            with self.engine.begin() as conn:
                conn.execute(text("ALTER TABLE tasks ADD COLUMN round INTEGER NOT NULL DEFAULT 1"))

    def add_tasks(self, groups: list[dict], overlap: float = 0.0, seed: int = 0, round: int = 1) -> int:
        """Each group {"prompt_id", "prompt", "completions"} as a task of `round`; a seeded `overlap` share of the
        new tasks gets two slots. A prompt already stored that nobody has held or ranked takes the new
        completions (a new sample of it); one someone has keeps the completions they saw. Returns how many
        tasks were added."""
        rng = random.Random(seed)
        with Session(self.engine) as s, s.begin():
            stored = {t.prompt_id: t for t in s.scalars(select(Task))}
            touched = set(s.scalars(select(Assignment.task_id))) | set(s.scalars(select(Label.task_id)))
            for g in groups:
                task = stored.get(g["prompt_id"])
                if task is not None and task.id not in touched and _texts(task.completions) != _texts(g["completions"]):
                    task.completions, task.round = g["completions"], round
            new = [g for g in groups if g["prompt_id"] not in stored]
            for g in new:
                slots = 2 if rng.random() < overlap else 1
                s.add(Task(prompt_id=g["prompt_id"], prompt=g["prompt"], completions=g["completions"], slots=slots,
                           round=round))  # fmt: skip
        return len(new)

    def kept_other_completions(self, groups: list[dict]) -> list[str]:
        """The prompt ids of these groups whose stored task shows other completions (someone held or ranked it)."""
        with Session(self.engine) as s:
            stored = {t.prompt_id: t.completions for t in s.scalars(select(Task))}
        return [g["prompt_id"] for g in groups if g["prompt_id"] in stored
                and _texts(stored[g["prompt_id"]]) != _texts(g["completions"])]  # fmt: skip

    def next_task(self, annotator: str) -> Task | None:
        """The task this person holds and has not labeled, else a free slot of one they never held; None when
        none is left for them."""
        annotator = _name(annotator)
        with Session(self.engine, expire_on_commit=False) as s:
            live = select(Label.task_id).where(Label.annotator == annotator, Label.undone_at.is_(None))
            ever = select(Assignment.task_id).where(Assignment.annotator == annotator)
            held = ever.where(Assignment.slot >= 0)  # a skipped task's hand-out keeps a negative slot
            mine = s.scalars(select(Task).where(Task.id.in_(held), Task.id.not_in(live)).order_by(Task.id)).first()
            if mine:
                return mine
            taken = (
                select(func.count(Assignment.id))
                .where(Assignment.task_id == Task.id, Assignment.slot >= 0)
                .scalar_subquery()
            )
            free = select(Task).where(Task.id.not_in(ever), taken < Task.slots)
            free = list(s.scalars(free.order_by(Task.round.desc(), Task.id)))  # the latest round's first
        for task in free:
            for slot in range(task.slots):
                try:  # one short transaction per try: the unique (task, slot) decides who gets it
                    with Session(self.engine) as w, w.begin():
                        w.add(Assignment(task_id=task.id, slot=slot, annotator=annotator))
                    return task
                except IntegrityError:
                    continue
        return None

    def submit(self, task_id: int, annotator: str, ranks: list[int] | None = None, all_bad: bool = False) -> int:
        """Store one ranking (or 'all bad') of a task the person holds; a clear LabelError and nothing written
        for an unknown task, a task not handed to them, a bad ranking or a second label. Returns the label id."""
        annotator = _name(annotator)
        with Session(self.engine) as s, s.begin():
            task = s.get(Task, task_id)
            if task is None:
                raise LabelError(f"no task {task_id}")
            held = select(Assignment).where(
                Assignment.task_id == task_id, Assignment.annotator == annotator, Assignment.slot >= 0
            )
            if s.scalar(held) is None:
                raise LabelError(f"task {task_id} is not held by {annotator!r}")
            if s.scalar(select(Label).where(Label.task_id == task_id, Label.annotator == annotator,
                                            Label.undone_at.is_(None))) is not None:  # fmt: skip
                raise LabelError(f"{annotator!r} already labeled task {task_id} (undo it first)")
            if all_bad == (ranks is not None):
                raise LabelError("give either a ranking or 'all bad'")
            k = len(task.completions)
            if ranks is not None and (len(ranks) != k or any(not isinstance(r, int) or not 1 <= r <= k for r in ranks)):
                raise LabelError(f"task {task_id}: ranks must be {k} whole numbers from 1 to {k} (got {ranks!r})")
            label = Label(task_id=task_id, annotator=annotator, ranks=ranks, all_bad=all_bad, created_at=_now())
            s.add(label)
            s.flush()
            return label.id

    def skip(self, task_id: int, annotator: str) -> None:
        """Give the task back: its slot goes to someone else, and this person is not handed it again."""
        annotator = _name(annotator)
        with Session(self.engine) as s, s.begin():
            a = s.scalar(select(Assignment).where(Assignment.task_id == task_id, Assignment.annotator == annotator))
            if a is None or a.slot < 0:
                raise LabelError(f"task {task_id} is not held by {annotator!r}")
            a.slot = -a.id  # keeps (task, annotator) taken, frees the slot

    def undo_last(self, annotator: str) -> int | None:
        """Withdraw the person's latest label (kept, marked undone); its task comes back to them. Its id, or None."""
        annotator = _name(annotator)
        with Session(self.engine) as s, s.begin():
            label = s.scalars(select(Label).where(Label.annotator == annotator, Label.undone_at.is_(None))
                              .order_by(Label.id.desc())).first()  # fmt: skip
            if label is None:
                return None
            label.undone_at = _now()
            return label.id

    def progress(self, prompt_ids: list[str] | None = None) -> dict:
        """Tasks with at least one label, all tasks, and labels per annotator (of these prompts' tasks, if given)."""
        with Session(self.engine) as s:
            tasks = _of(select(Task.id), prompt_ids)
            labels = list(s.scalars(select(Label).where(Label.undone_at.is_(None), Label.task_id.in_(tasks))))
            total = s.scalar(_of(select(func.count(Task.id)), prompt_ids))
        per = {}
        for label in labels:
            per[label.annotator] = per.get(label.annotator, 0) + 1
        return {"labeled": len({label.task_id for label in labels}), "total": total, "by_annotator": per}

    def export_pairs(self, prompt_ids: list[str] | None = None) -> list[dict]:
        """Every ranking's pairs in TRL's prompt/chosen/rejected format, with the annotator and the time (of these
        prompts' tasks, if given), in the order the labels were given."""
        out = []
        with Session(self.engine) as s:
            live = _of(select(Label, Task).join(Task, Label.task_id == Task.id), prompt_ids)
            live = live.where(Label.undone_at.is_(None))
            rows = s.execute(live.where(Label.ranks.is_not(None)).order_by(Label.id))
            for label, task in rows:
                for w, lose in ranking_pairs(label.ranks):
                    c, r = task.completions[w], task.completions[lose]
                    pair = {
                        "prompt_id": task.prompt_id,
                        "prompt": task.prompt,
                        "chosen": c["text"],
                        "rejected": r["text"],
                        "chosen_ended": c.get("ended", True),
                        "rejected_ended": r.get("ended", True),
                        "annotator": label.annotator,
                        "labeled_at": label.created_at.isoformat(),
                    }
                    if "gold" in c and "gold" in r:
                        pair |= {"gold_chosen": c["gold"], "gold_rejected": r["gold"]}
                    out.append(pair)
        return out

    def agreement(self, prompt_ids: list[str] | None = None) -> dict:
        """On tasks ranked by two or more people: the share of pairs both ordered (no tie in either) that
        they ordered the same way."""
        by_task: dict[int, list[list[int]]] = {}
        with Session(self.engine) as s:
            live = select(Label).where(Label.undone_at.is_(None), Label.ranks.is_not(None))
            for label in s.scalars(live.where(Label.task_id.in_(_of(select(Task.id), prompt_ids)))):
                by_task.setdefault(label.task_id, []).append(label.ranks)
        same = both = 0
        for rankings in (r for r in by_task.values() if len(r) >= 2):
            for a, b in itertools.combinations(rankings, 2):
                for i, j in itertools.combinations(range(len(a)), 2):
                    if a[i] != a[j] and b[i] != b[j]:
                        both += 1
                        same += (a[i] < a[j]) == (b[i] < b[j])
        tasks = sum(len(r) >= 2 for r in by_task.values())
        return {"overlap_tasks": tasks, "pairs": both, "agreement": same / both if both else None}

    def all_bad(self, prompt_ids: list[str] | None = None) -> int:
        """Live 'all bad' labels (they give no pairs)."""
        with Session(self.engine) as s:
            live = select(func.count(Label.id)).where(Label.undone_at.is_(None), Label.all_bad.is_(True))
            return s.scalar(live.where(Label.task_id.in_(_of(select(Task.id), prompt_ids))))

    def open_wait(self, flow_run_id: str, api_url: str, prompt_ids: list[str], target: int) -> None:
        """Record a paused run to resume once `target` of these prompts' tasks have a label."""
        with Session(self.engine) as s, s.begin():
            s.add(Wait(flow_run_id=flow_run_id, api_url=api_url, prompt_ids=prompt_ids, target=target,
                       created_at=_now()))  # fmt: skip

    def close_wait(self, flow_run_id: str) -> None:
        with Session(self.engine) as s, s.begin():
            for wait in s.scalars(select(Wait).where(Wait.flow_run_id == flow_run_id, Wait.closed_at.is_(None))):
                wait.closed_at = _now()

    def waits_reached(self) -> list[Wait]:
        """Open waits whose target is reached now (the page resumes their runs, then closes them)."""
        with Session(self.engine, expire_on_commit=False) as s:
            waits = list(s.scalars(select(Wait).where(Wait.closed_at.is_(None))))
        return [w for w in waits if self.progress(w.prompt_ids)["labeled"] >= w.target]


def _of(query, prompt_ids: list[str] | None):
    """The query narrowed to these prompts' tasks (all tasks when None)."""
    return query if prompt_ids is None else query.where(Task.prompt_id.in_(prompt_ids))


def gold_agreement(pairs: list[dict]) -> dict:
    """Share of people's pairs the gold scorer orders the same way (pairs it scores equal left out)."""
    decided = [p for p in pairs if "gold_chosen" in p and p["gold_chosen"] != p["gold_rejected"]]
    agree = sum(p["gold_chosen"] > p["gold_rejected"] for p in decided)
    return {"pairs": len(decided), "agreement": agree / len(decided) if decided else None}


def _texts(completions: list[dict]) -> list[str]:
    return [c["text"] for c in completions]


def _name(annotator: str) -> str:
    name = (annotator or "").strip()
    if not name or len(name) > 100:
        raise LabelError("an annotator name of 1 to 100 characters is needed")
    return name


def _now() -> datetime:
    return datetime.now(UTC)
