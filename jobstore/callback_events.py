"""The callback outbox: terminal events waiting to be delivered, each attempt kept.

The rows are written by the database, in the statement that makes a job terminal (the
trigger of migration 0005_callback_events); this module claims them for an attempt,
records what each attempt did, finds what is due, and replays what was not delivered.
An attempt holds its event under a lease (`next_attempt_at` in the future): a sender
that dies mid-attempt leaves an event that comes due again when the lease ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, func, insert, select, update

from farmdomain.callbacks import Attempt, CallbackEvent, CallbackStatus
from farmdomain.values import utcnow
from jobstore.schema import callback_attempts, callback_events
from jobstore.statements import translated_errors

UNDELIVERED = (CallbackStatus.DEAD.value, CallbackStatus.GONE.value)


def _event_from(row: Row[Any], attempts: Sequence[Attempt] = ()) -> CallbackEvent:
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
    )


def _attempt_from(row: Row[Any]) -> Attempt:
    return Attempt(row.at, row.status_code, row.latency_ms, row.answer, row.error)


class CallbackOutbox:
    """The callback_events and callback_attempts tables."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._clock = clock

    def claim(self, job_id: str, lease_s: float) -> CallbackEvent | None:
        """The job's event, held for one attempt for `lease_s`, if it is pending and due;
        None when it is not (delivered, dead, not yet due, or another attempt holds it)."""
        now = self._clock()
        with translated_errors(), self.engine.begin() as conn:
            row = conn.execute(
                update(callback_events)
                .where(
                    callback_events.c.job_id == job_id,
                    callback_events.c.status == CallbackStatus.PENDING.value,
                    callback_events.c.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + timedelta(seconds=lease_s))
                .returning(*callback_events.c)
            ).first()
        return None if row is None else _event_from(row)

    def record(
        self,
        event: CallbackEvent,
        body: bytes,
        attempt: Attempt,
        status: CallbackStatus,
        next_in_s: float | None,
    ) -> None:
        """Keep `attempt` and leave the event `status`, due again in `next_in_s` seconds
        when it is still pending. The body is kept by the first attempt: the later ones
        send the same bytes."""
        values: dict[str, Any] = {
            "status": status.value,
            "tries": callback_events.c.tries + 1,
            "body": func.coalesce(callback_events.c.body, body.decode()),
        }
        if next_in_s is not None:
            values["next_attempt_at"] = attempt.at + timedelta(seconds=next_in_s)
        if status is CallbackStatus.DELIVERED:
            values["delivered_at"] = attempt.at
        with translated_errors(), self.engine.begin() as conn:
            conn.execute(
                insert(callback_attempts).values(
                    job_id=event.job_id,
                    at=attempt.at,
                    status_code=attempt.status_code,
                    latency_ms=attempt.latency_ms,
                    answer=attempt.answer,
                    error=attempt.error,
                )
            )
            conn.execute(
                update(callback_events)
                .where(callback_events.c.job_id == event.job_id)
                .values(values)
            )

    def due(self, limit: int = 500) -> list[str]:
        """The jobs whose pending event is due: never sent, a retry whose time came, or an
        attempt whose sender died holding it."""
        query = (
            select(callback_events.c.job_id)
            .where(
                callback_events.c.status == CallbackStatus.PENDING.value,
                callback_events.c.next_attempt_at <= self._clock(),
            )
            .order_by(callback_events.c.next_attempt_at)
            .limit(limit)
        )
        with translated_errors(), self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

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
        """Events, newest first; `failed`: only those not delivered after an attempt
        (dead, gone, or pending a retry)."""
        query = select(callback_events).order_by(callback_events.c.created_at.desc())
        if failed:
            query = query.where(
                callback_events.c.status.in_(UNDELIVERED)
                | (
                    (callback_events.c.status == CallbackStatus.PENDING.value)
                    & (callback_events.c.tries > 0)
                )
            )
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
                    .values(status=CallbackStatus.PENDING.value, tries=0, next_attempt_at=now)
                    .returning(callback_events.c.job_id)
                ).scalars()
            )
