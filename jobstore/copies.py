"""Result copies in the job store: which results still need their image kept, and what
the copy task kept (key, sha256, bytes, content type) or why it could not.

A copy row is written only by the copy task, beside the result it copies: `stored_at`
set means the image is durable in the results store; `given_up_at` set means no further
attempt will be made (refused, or its URL expired) and `failure_reason` says why. The
write that settles a job's last image makes the job terminal in the same transaction
(jobstore.settling); `deleted_at` set means retention deleted the image since.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, tuple_, update

from farmdomain.values import (
    STORED_OUTCOMES,
    BodyRecorded,
    ParsedBody,
    StoreObserver,
    Transition,
    utcnow,
)
from jobstore import dialects, settling
from jobstore.schema import jobs, result_copies, results
from jobstore.statements import translated_errors

# a result, by (taskUUID, imageUUID)
ResultKey = tuple[str, str]


@dataclass(frozen=True)
class CopyOrder:
    """A result to copy, with what its job asked for and what earlier attempts did."""

    job_id: str
    task_uuid: str
    image_uuid: str
    image_url: str | None
    image_data: str | None
    received_at: datetime
    output_format: str
    output_type: str
    number_results: int
    # width x height the job asked for; None when the request named no size
    size: tuple[int, int] | None
    attempts: int
    stored: bool
    given_up: bool


@dataclass(frozen=True)
class Kept:
    """What the results store holds for one result."""

    key: str
    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True)
class CopyState:
    """A result's copy as the job's view shows it."""

    key: str | None
    sha256: str | None
    size: int | None
    content_type: str | None
    stored_at: datetime | None
    attempts: int
    failure_reason: str | None
    given_up: bool
    deleted_at: datetime | None


def _size(request: dict[str, Any]) -> tuple[int, int] | None:
    width, height = request.get("width"), request.get("height")
    return (int(width), int(height)) if width and height else None


class ResultCopies:
    """The copy rows of the store on `engine`."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime] = utcnow,
        observers: Sequence[StoreObserver] = (),
    ) -> None:
        self.engine = engine
        self._clock = clock
        # told of the jobs a copy made terminal, like the job store's own
        self.observers = list(observers)

    def orders(self, keys: Sequence[ResultKey]) -> list[CopyOrder]:
        """The results named by `keys` that exist, with their jobs' requests."""
        if not keys:
            return []
        query = (
            select(
                results.c.job_id,
                results.c.task_uuid,
                results.c.image_uuid,
                results.c.image_url,
                results.c.image_data,
                results.c.received_at,
                jobs.c.request,
                result_copies.c.attempts,
                result_copies.c.stored_at,
                result_copies.c.given_up_at,
            )
            .join(jobs, jobs.c.id == results.c.job_id)
            .outerjoin(
                result_copies,
                and_(
                    result_copies.c.task_uuid == results.c.task_uuid,
                    result_copies.c.image_uuid == results.c.image_uuid,
                ),
            )
            .where(tuple_(results.c.task_uuid, results.c.image_uuid).in_(list(keys)))
        )
        with translated_errors(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            CopyOrder(
                job_id=row.job_id,
                task_uuid=row.task_uuid,
                image_uuid=row.image_uuid,
                image_url=row.image_url,
                image_data=row.image_data,
                received_at=row.received_at,
                output_format=str(row.request.get("outputFormat", "JPG")),
                output_type=str(row.request.get("outputType", "URL")),
                number_results=int(row.request.get("numberResults") or 1),
                size=_size(row.request),
                attempts=row.attempts or 0,
                stored=row.stored_at is not None,
                given_up=row.given_up_at is not None,
            )
            for row in rows
        ]

    def stored(self, order: CopyOrder, kept: Kept) -> bool:
        """Record that `kept` holds the result's image and drop its inline data, and make
        the job succeed if this was its last image; True if this call recorded it, False
        if an earlier copy had."""
        now = self._clock()
        values = {
            "storage_key": kept.key,
            "sha256": kept.sha256,
            "bytes": kept.size,
            "content_type": kept.content_type,
            "stored_at": now,
            "failure_reason": None,
            "failure_message": None,
            "updated_at": now,
        }
        with translated_errors(), self.engine.begin() as conn:
            settling.lock_job(conn, order.job_id)
            written = conn.execute(self._upsert(conn, order, values)).first()
            if written is None:
                return False
            # the bytes are in the results store now: the database keeps only their digest
            conn.execute(
                update(results)
                .where(
                    results.c.task_uuid == order.task_uuid,
                    results.c.image_uuid == order.image_uuid,
                )
                .values(image_data=None)
            )
            transition = settling.settle(conn, order.job_id, now)
        self._notify(transition)
        return True

    def failed(self, order: CopyOrder, reason: str, message: str, *, give_up: bool) -> int:
        """Record a failed attempt (and, with `give_up`, that no other follows, which fails
        the job if this was its last image to settle); the number of attempts made so far."""
        now = self._clock()
        values = {
            "failure_reason": reason,
            "failure_message": message[:2000],
            "given_up_at": now if give_up else None,
            "updated_at": now,
        }
        transition = None
        with translated_errors(), self.engine.begin() as conn:
            if give_up:
                settling.lock_job(conn, order.job_id)
            row = conn.execute(self._upsert(conn, order, values)).first()
            if give_up and row is not None:
                transition = settling.settle(conn, order.job_id, now)
        self._notify(transition)
        return int(row.attempts) if row is not None else order.attempts

    def _notify(self, transition: Transition | None) -> None:
        if transition is None:
            return
        for observer in self.observers:
            observer.transitioned(transition)

    def _upsert(self, conn: Connection, order: CopyOrder, values: dict[str, Any]) -> Any:
        """INSERT the copy row of `order` with `values`, or UPDATE it if it exists; one
        attempt more either way; RETURNING the attempts, nothing if the image is kept."""
        statement = (
            dialects.of(conn)
            .insert(result_copies)
            .values(
                task_uuid=order.task_uuid,
                image_uuid=order.image_uuid,
                job_id=order.job_id,
                attempts=1,
                **values,
            )
        )
        return statement.on_conflict_do_update(
            index_elements=[result_copies.c.task_uuid, result_copies.c.image_uuid],
            set_={"attempts": result_copies.c.attempts + 1, **values},
            # a kept image is never written over, by a late failure or a second copy
            where=result_copies.c.stored_at.is_(None),
        ).returning(result_copies.c.attempts)

    def not_stored(self, received_before: datetime, limit: int = 500) -> list[ResultKey]:
        """Results received before `received_before` whose image is neither kept nor
        given up on, and not tried since: what the reaper sends to be copied again."""
        query = (
            select(results.c.task_uuid, results.c.image_uuid)
            .outerjoin(
                result_copies,
                and_(
                    result_copies.c.task_uuid == results.c.task_uuid,
                    result_copies.c.image_uuid == results.c.image_uuid,
                ),
            )
            .where(
                results.c.received_at < received_before,
                result_copies.c.stored_at.is_(None),
                result_copies.c.given_up_at.is_(None),
                # a copy tried since is waiting out its own backoff
                or_(
                    result_copies.c.updated_at.is_(None),
                    result_copies.c.updated_at < received_before,
                ),
            )
            .order_by(results.c.received_at)
            .limit(limit)
        )
        with translated_errors(), self.engine.connect() as conn:
            return [(row.task_uuid, row.image_uuid) for row in conn.execute(query).all()]

    def oldest_not_stored(self) -> datetime | None:
        """When the oldest result whose image is neither kept nor given up on arrived."""
        query = (
            select(func.min(results.c.received_at))
            .outerjoin(
                result_copies,
                and_(
                    result_copies.c.task_uuid == results.c.task_uuid,
                    result_copies.c.image_uuid == results.c.image_uuid,
                ),
            )
            .where(result_copies.c.stored_at.is_(None), result_copies.c.given_up_at.is_(None))
        )
        with translated_errors(), self.engine.connect() as conn:
            found: datetime | None = conn.execute(query).scalar()
        return found

    def of_job(self, job_id: str) -> dict[str, CopyState]:
        """The copies of a job's results, by imageUUID."""
        query = select(result_copies).where(result_copies.c.job_id == job_id)
        with translated_errors(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            row.image_uuid: CopyState(
                key=row.storage_key,
                sha256=row.sha256,
                size=row.bytes,
                content_type=row.content_type,
                stored_at=row.stored_at,
                attempts=row.attempts,
                failure_reason=row.failure_reason,
                given_up=row.given_up_at is not None,
                deleted_at=row.deleted_at,
            )
            for row in rows
        }

    def why_not_stored(self, job_id: str, number_results: int) -> str | None:
        """ "2 of 4 images not stored: <image>: <why>, ..." for the job's images not kept;
        None when all of them are."""
        with translated_errors(), self.engine.connect() as conn:
            copies = settling.copies_of(conn, job_id)
        return settling.not_stored(copies, number_results)


def keys_to_copy(bodies: Sequence[ParsedBody], recorded: Sequence[BodyRecorded]) -> list[ResultKey]:
    """The results these bodies stored now (on time or late): each one's image to keep."""
    return [
        (result.task_uuid, result.image_uuid)
        for body, done in zip(bodies, recorded, strict=True)
        for result, outcome in zip(body.results, done.outcomes, strict=False)
        if outcome in STORED_OUTCOMES
    ]
