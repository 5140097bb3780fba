"""The store as its users see it: what the worker, the web side and the producers may ask
of it. JobStore is the implementation; code that takes a store takes this."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Engine

from farmdomain.jobs import Job, JobState
from farmdomain.values import Failure, IncomingResult, ResultOutcome, StoreObserver
from jobstore.capacity import Admission, KeyState
from jobstore.creation import NewJob
from jobstore.results import Recorded


class Store(Protocol):
    """Jobs, their results and their events; every transition a compare-and-set."""

    # the tables' other users (tokens, spend, gauges) query beside the jobs
    engine: Engine
    observers: list[StoreObserver]
    # the Runware key whose capacity the claims take, and its cap
    admission: Admission

    def create_job(
        self,
        params: dict[str, Any],
        *,
        tenant: str,
        deadline_s: float,
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        fingerprint: str | None = None,
    ) -> tuple[Job, bool]: ...

    def create_jobs(
        self, new_jobs: Sequence[NewJob], *, tenant: str, deadline_s: float
    ) -> list[tuple[Job, bool]]: ...

    def get(self, job_id: str, *, tenant: str | None = None, details: bool = False) -> Job: ...

    def job_id_for_task(self, task_uuid: str) -> str | None: ...

    def stale_jobs(
        self, state: JobState, updated_before: datetime, limit: int = 500
    ) -> list[Job]: ...

    def overdue_jobs(self, now: datetime, limit: int = 500) -> list[Job]: ...

    def committed_spend_since(self, since: datetime) -> Decimal: ...

    def count_by_state(self) -> dict[str, int]: ...

    def claim(self, job_id: str, expected_attempts: int) -> Job | None: ...

    def claim_many(
        self, claims: Sequence[tuple[str, int]], admitted: bool = False
    ) -> list[Job]: ...

    def capacity_held(self) -> tuple[int, int]: ...

    def key_state(self) -> KeyState: ...

    def end_backlog(self) -> None: ...

    def pause_claims(self, until: datetime) -> None: ...

    def claims_paused_until(self) -> datetime | None: ...

    def mark_submitted(self, job_id: str, detail: dict[str, Any]) -> bool: ...

    def mark_submitted_many(self, job_ids: Sequence[str], detail: dict[str, Any]) -> list[Job]: ...

    def fail(self, job_id: str, failure: Failure) -> bool: ...

    def cancel(self, job_id: str, *, tenant: str | None = None) -> Job: ...

    def touch(self, job_id: str, state: JobState, kind: str, detail: dict[str, Any]) -> bool: ...

    def record_result(self, result: IncomingResult, source: str) -> ResultOutcome: ...

    def record_results(self, incoming: Sequence[IncomingResult], source: str) -> list[Recorded]: ...
