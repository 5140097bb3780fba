"""The values that cross the store's boundary: results in, failures, transitions out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

import orjson

from farmdomain.jobs import Job, JobState

MICROS = Decimal(1_000_000)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_micros(usd: Decimal | float | None) -> int | None:
    if usd is None:
        return None
    return int((Decimal(str(usd)) * MICROS).to_integral_value())


def from_micros(micros: int | None) -> Decimal | None:
    return None if micros is None else Decimal(micros) / MICROS


class ResultOutcome(StrEnum):
    """What recording one result did; also the webhook metric's outcome label."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    # a new image for a job already terminal (canceled, failed): stored and counted, since
    # Runware bills it; the job's state does not change
    LATE = "late"
    UNKNOWN_TASK = "unknown_task"
    # a new image beyond the job's numberResults: refused, not stored
    TOO_MANY_IMAGES = "too_many_images"


# the outcomes that stored a result: its image is kept and its cost counted
STORED_OUTCOMES = (ResultOutcome.ACCEPTED, ResultOutcome.LATE)


@dataclass(frozen=True)
class IncomingResult:
    """One image result from Runware, however it arrived (webhook, poll)."""

    task_uuid: str
    image_uuid: str
    image_url: str | None
    image_data: str | None
    seed: int | None
    cost_usd: Decimal | None
    nsfw: bool | None
    # a reported cost the farm does not count (farmdomain.claims); cost_usd is then None
    unconfirmed_cost_usd: Decimal | None = None


@dataclass(frozen=True)
class Failure:
    """Why a job failed, in the fields an operator and an alert need."""

    reason: str
    message: str
    code: str | None = None
    parameter: str | None = None


@dataclass(frozen=True)
class Transition:
    """A committed state change, with the timestamps the stage latencies come from."""

    job: Job
    from_state: JobState | None
    to_state: JobState


class StoreObserver(Protocol):
    """Told about every committed change; metrics hang here, outside business logic."""

    def transitioned(self, transition: Transition) -> None: ...

    def result_recorded(
        self, outcome: ResultOutcome, cost_usd: Decimal | None, source: str
    ) -> None: ...


def request_fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class ResultError:
    """An item Runware reported as failed."""

    task_uuid: str
    reason: str
    code: str
    message: str
    parameter: str | None


@dataclass(frozen=True)
class ParsedBody:
    results: list[IncomingResult]
    errors: list[ResultError]
    task_uuids: set[str]


@dataclass(frozen=True)
class BodyRecorded:
    """What applying one body did: an outcome per item, results first, and the job of its
    task (None if no job has it, or the body carried nothing to record)."""

    outcomes: list[ResultOutcome]
    job_id: str | None
