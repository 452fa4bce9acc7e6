"""Who may label: per-person invite tokens. `invite(name)` makes a random token and keeps only its SHA-256;
the person opens the page's link once, the page keeps the token in an HttpOnly, SameSite=Strict cookie, and
every request's annotator is the name its token was issued to — never a name the request carries. Once any
person is invited the store is "closed": a request without a valid (unrevoked) token writes nothing."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import DateTime, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tasks.label.store import Base, Label, LabelError, LabelStore, _name, _now


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tables(store: LabelStore) -> None:
    Base.metadata.create_all(store.engine)  # an existing store gains the annotators table


def invite(store: LabelStore, name: str) -> str:
    """A new token for `name` (a revoked person gets a fresh one); only its hash is stored. Returns the token."""
    name, token = _name(name), secrets.token_urlsafe(32)
    tables(store)
    with Session(store.engine) as s, s.begin():
        held = s.scalar(select(Annotator).where(Annotator.name == name))
        if held is not None and held.revoked_at is None:
            raise LabelError(f"{name!r} is already invited (revoke them first for a new link)")
        if held is not None:
            held.token_sha256, held.created_at, held.revoked_at = digest(token), _now(), None
        else:
            s.add(Annotator(name=name, token_sha256=digest(token), created_at=_now()))
    return token


def revoke(store: LabelStore, name: str) -> None:
    """The person's token stops working at once; their labels stay."""
    tables(store)
    with Session(store.engine) as s, s.begin():
        held = s.scalar(select(Annotator).where(Annotator.name == _name(name), Annotator.revoked_at.is_(None)))
        if held is None:
            raise LabelError(f"no invited annotator {name!r}")
        held.revoked_at = _now()


def annotators(store: LabelStore) -> list[dict]:
    """Everyone ever invited: name, invited at, revoked at, live labels."""
    tables(store)
    with Session(store.engine) as s:
        live = select(Label.annotator, func.count(Label.id)).where(Label.undone_at.is_(None))
        counts = {row[0]: row[1] for row in s.execute(live.group_by(Label.annotator)).all()}
        return [
            {"name": a.name, "invited": a.created_at, "revoked": a.revoked_at, "labels": counts.get(a.name, 0)}
            for a in s.scalars(select(Annotator).order_by(Annotator.id))
        ]


def closed(store: LabelStore) -> bool:
    """Someone was invited: every request needs a valid token from now on."""
    tables(store)
    with Session(store.engine) as s:
        return s.scalar(select(func.count(Annotator.id))) > 0


def who(store: LabelStore, token: str | None) -> str | None:
    """The name a live token was issued to; None for no token, a forged one or a revoked one."""
    if not token:
        return None
    with Session(store.engine) as s:
        held = s.scalar(select(Annotator).where(Annotator.token_sha256 == digest(token)))
        return held.name if held is not None and held.revoked_at is None else None
