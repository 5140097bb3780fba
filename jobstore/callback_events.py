"""The callback outbox: terminal events waiting to be delivered, each attempt kept.

The rows are written by the database, in the statement that makes a job terminal (the
trigger of migration 0005_callback_events); this module claims them for an attempt,
records what each attempt did, finds what is due, and replays what was not delivered.
An attempt holds its event under a lease (`next_attempt_at` in the future): a sender
that dies mid-attempt leaves an event that comes due again when the lease ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, and_, bindparam, func, insert, or_, select, update

from farmdomain.callbacks import Attempt, CallbackEvent, CallbackStatus
from farmdomain.jobs import Job
from farmdomain.values import utcnow
from jobstore.schema import callback_attempts, callback_events, jobs
from jobstore.statements import details_of, job_from_row, translated_errors

UNDELIVERED = (CallbackStatus.DEAD.value, CallbackStatus.GONE.value)


def _event_from(
    row: Row[Any], attempts: Sequence[Attempt] = (), job: Job | None = None
) -> CallbackEvent:
    return CallbackEvent(
        job_id=row.job_id,
        tenant=row.tenant,
        url=row.url,
        type=row.type,
        status=CallbackStatus(row.status),
        tries=row.tries,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
        body=None if row.body is None else row.body.encode(),
        attempts=list(attempts),
        job=job,
    )


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt of an event did and what it leaves the event as: `next_in_s`,
    when the next attempt is due (None: there is none); `message_at`, when the delivery
    message for that attempt arrives, if one was sent."""

    event: CallbackEvent
    body: bytes
    attempt: Attempt
    status: CallbackStatus
    next_in_s: float | None
    message_at: datetime | None = None

    @property
    def next_at(self) -> datetime | None:
        if self.next_in_s is None:
            return None
        return self.attempt.at + timedelta(seconds=self.next_in_s)


def _attempt_from(row: Row[Any]) -> Attempt:
    return Attempt(row.at, row.status_code, row.latency_ms, row.answer, row.error)


class CallbackOutbox:
    """The callback_events and callback_attempts tables."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._clock = clock

    def claim(self, job_ids: Sequence[str], lease_s: float) -> list[CallbackEvent]:
        """The events of `job_ids` that are pending and due, each held for one attempt for
        `lease_s`; those not (delivered, dead, not yet due, or held by another attempt) are
        left out. An event with no body yet comes with its job, images and history, for
        the body of its first attempt. One statement claims them all: a concurrent claim of
        the same events waits on their row locks and then finds them held."""
        now = self._clock()
        with translated_errors(), self.engine.begin() as conn:
            rows = conn.execute(
                update(callback_events)
                .where(
                    callback_events.c.job_id.in_(list(job_ids)),
                    callback_events.c.status == CallbackStatus.PENDING.value,
                    callback_events.c.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + timedelta(seconds=lease_s))
                .returning(*callback_events.c)
            ).all()
            unsent = [row.job_id for row in rows if row.body is None]
            found: dict[str, Job] = {}
            if unsent:
                images, history = details_of(conn, unsent)
                for job in conn.execute(select(jobs).where(jobs.c.id.in_(unsent))):
                    found[job.id] = job_from_row(job, images[job.id], history[job.id])
        return [_event_from(row, job=found.get(row.job_id)) for row in rows]

    def record(self, recorded: Sequence[AttemptRecord]) -> None:
        """Keep each attempt and leave its event as the attempt made it, in one
        transaction: its status, one more try, its next attempt's time when it is still
        pending, its delivery time when delivered, and when the delivery message of its
        next attempt arrives if one was sent. The body is kept by the first attempt: the
        later ones send the same bytes."""
        if not recorded:
            return
        events = callback_events.c

        def param(name: str, column: Any) -> Any:
            return bindparam(name, type_=column.type)

        with translated_errors(), self.engine.begin() as conn:
            conn.execute(
                insert(callback_attempts),
                [
                    {
                        "job_id": r.event.job_id,
                        "at": r.attempt.at,
                        "status_code": r.attempt.status_code,
                        "latency_ms": r.attempt.latency_ms,
                        "answer": r.attempt.answer,
                        "error": r.attempt.error,
                    }
                    for r in recorded
                ],
            )
            conn.execute(
                update(callback_events)
                .where(events.job_id == bindparam("event_job_id"))
                .values(
                    status=bindparam("event_status"),
                    tries=events.tries + 1,
                    body=func.coalesce(events.body, bindparam("event_body")),
                    next_attempt_at=func.coalesce(
                        param("event_next_at", events.next_attempt_at), events.next_attempt_at
                    ),
                    delivered_at=func.coalesce(
                        param("event_delivered_at", events.delivered_at), events.delivered_at
                    ),
                    sent_at=func.coalesce(param("event_sent_at", events.sent_at), events.sent_at),
                ),
                [
                    {
                        "event_job_id": r.event.job_id,
                        "event_status": r.status.value,
                        "event_body": r.body.decode(),
                        "event_next_at": r.next_at,
                        "event_delivered_at": (
                            r.attempt.at if r.status is CallbackStatus.DELIVERED else None
                        ),
                        "event_sent_at": r.message_at,
                    }
                    for r in recorded
                ],
            )

    def due(self, resend_after_s: float, limit: int = 500) -> list[str]:
        """The jobs whose pending event is due (never sent, a retry whose time came, or an
        attempt whose sender died holding it) and has no delivery message on its way: none
        sent, or the last sent `resend_after_s` ago; each is marked sent now. Without the
        mark, every drive would send another message for each event still waiting in the
        queue behind the others, and a backlog would multiply itself."""
        now = self._clock()

        def waiting() -> Any:
            return and_(
                callback_events.c.status == CallbackStatus.PENDING.value,
                callback_events.c.next_attempt_at <= now,
                or_(
                    callback_events.c.sent_at.is_(None),
                    callback_events.c.sent_at <= now - timedelta(seconds=resend_after_s),
                ),
            )

        chosen = (
            select(callback_events.c.job_id)
            .where(waiting())
            .order_by(callback_events.c.next_attempt_at)
            .limit(limit)
        )
        with translated_errors(), self.engine.begin() as conn:
            # the conditions again on each row: a concurrent drive that marked it first wins
            marked = conn.execute(
                update(callback_events)
                .where(callback_events.c.job_id.in_(chosen.scalar_subquery()), waiting())
                .values(sent_at=now)
                .returning(callback_events.c.job_id)
            )
            return list(marked.scalars())

    def get(self, job_id: str, *, tenant: str | None = None) -> CallbackEvent | None:
        """The job's event with every attempt, oldest first; None if it has none."""
        query = select(callback_events).where(callback_events.c.job_id == job_id)
        if tenant is not None:
            query = query.where(callback_events.c.tenant == tenant)
        with translated_errors(), self.engine.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            attempts = conn.execute(
                select(callback_attempts)
                .where(callback_attempts.c.job_id == job_id)
                .order_by(callback_attempts.c.id)
            ).all()
        return _event_from(row, [_attempt_from(a) for a in attempts])

    def events(
        self, *, failed: bool = False, tenant: str | None = None, limit: int = 100
    ) -> list[CallbackEvent]:
        """Events, newest first; `failed`: only those whose delivery has ended undelivered
        (dead or gone), the ones `replay(since=...)` starts again."""
        query = select(callback_events).order_by(callback_events.c.created_at.desc())
        if failed:
            query = query.where(callback_events.c.status.in_(UNDELIVERED))
        if tenant is not None:
            query = query.where(callback_events.c.tenant == tenant)
        with translated_errors(), self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).all()
            ids = [row.job_id for row in rows]
            attempts: dict[str, list[Attempt]] = {}
            for a in conn.execute(
                select(callback_attempts)
                .where(callback_attempts.c.job_id.in_(ids))
                .order_by(callback_attempts.c.id)
            ):
                attempts.setdefault(a.job_id, []).append(_attempt_from(a))
        return [_event_from(row, attempts.get(row.job_id, [])) for row in rows]

    def replay(self, job_ids: Sequence[str] = (), *, since: datetime | None = None) -> list[str]:
        """Start the schedule again for the events of `job_ids` that are not pending
        (delivered ones too: the receiver deduplicates on the webhook-id), or for every
        event created since `since` that was not delivered; the job ids replayed."""
        now = self._clock()
        replayable = callback_events.c.status != CallbackStatus.PENDING.value
        if since is not None:
            chosen = callback_events.c.status.in_(UNDELIVERED) & (
                callback_events.c.created_at >= since
            )
        else:
            chosen = callback_events.c.job_id.in_(list(job_ids)) & replayable
        with translated_errors(), self.engine.begin() as conn:
            return list(
                conn.execute(
                    update(callback_events)
                    .where(chosen)
                    .values(
                        status=CallbackStatus.PENDING.value,
                        tries=0,
                        next_attempt_at=now,
                        sent_at=None,
                    )
                    .returning(callback_events.c.job_id)
                ).scalars()
            )
