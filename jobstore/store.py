"""The job store: the source of truth for every job; every transition a compare-and-set."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Row, case, func, select, update
from sqlalchemy.exc import IntegrityError

from farmdomain.errors import JobNotFound
from farmdomain.jobs import (
    IN_FLIGHT_STATES,
    Job,
    JobEvent,
    JobState,
    sources_of,
)
from farmdomain.settings import Settings
from farmdomain.values import (
    Failure,
    IncomingResult,
    ResultOutcome,
    StoreObserver,
    Transition,
    from_micros,
    utcnow,
)
from jobstore import budgets, capacity, dialects
from jobstore.capacity import UNCAPPED, Admission
from jobstore.creation import NewJob, created_event, job_row, same_request
from jobstore.engine import DEFAULT_POOL_SIZE, make_engine
from jobstore.event_log import INSERT_EVENT, event_params, log_event
from jobstore.results import Recorded, record_results
from jobstore.schema import jobs
from jobstore.statements import (
    CLAIM,
    CREATE_JOB,
    CREATE_JOBS,
    events_of,
    execute_with_event,
    execute_with_events,
    images_of,
    job_from_row,
    state_among,
    transition_statement,
    translated_errors,
)


class JobStore:
    """Jobs, their results and their events on SQLAlchemy Core."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime] = utcnow,
        observers: Sequence[StoreObserver] = (),
        admission: Admission = UNCAPPED,
    ) -> None:
        self.engine = engine
        # the Runware key whose capacity this store's claims take, and its cap
        self.admission = admission
        # where a statement records its own event (execute_with_event), it is a whole
        # transition: autocommitted, it needs no BEGIN and COMMIT round trips
        self._one_statement = dialects.of(engine).logs_in_one_statement
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._clock = clock
        self.observers = list(observers)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction; losing the database surfaces as StoreUnavailable."""
        with translated_errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _atomic(self) -> Iterator[Connection]:
        """Where one `execute_with_event` runs as a transition of its own."""
        if not self._one_statement:
            with self._begin() as conn:
                yield conn
            return
        with translated_errors(), self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with translated_errors(), self.engine.connect() as conn:
            yield conn

    def _notify(self, transition: Transition) -> None:
        for observer in self.observers:
            observer.transitioned(transition)

    @classmethod
    def from_url(
        cls, url: str, pool_size: int = DEFAULT_POOL_SIZE, admission: Admission = UNCAPPED
    ) -> JobStore:
        return cls(make_engine(url, pool_size), admission=admission)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        """The store `settings` name, with their connection pool size and Runware cap."""
        url = settings.resolved_database_url()
        return cls.from_url(url, settings.database_pool_size, Admission.from_settings(settings))

    # -- creation -------------------------------------------------------------------------

    def create_job(
        self,
        params: dict[str, Any],
        *,
        tenant: str,
        deadline_s: float,
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        fingerprint: str | None = None,
    ) -> tuple[Job, bool]:
        """Commit a queued job with its taskUUID; returns (job, created).

        `fingerprint` identifies the request for idempotency (GenerationRequest.fingerprint);
        without one, the parameters are hashed as given.
        """
        new = NewJob(params, idempotency_key, fingerprint, retry_of)
        [(job, created)] = self.create_jobs([new], tenant=tenant, deadline_s=deadline_s)
        return job, created

    def create_jobs(
        self, new_jobs: Sequence[NewJob], *, tenant: str, deadline_s: float
    ) -> list[tuple[Job, bool]]:
        """Commit queued jobs, each with its taskUUID, together; returns (job, created) for
        each, in order. A created job comes with its `created` event.

        The jobs are one INSERT (up to 1,000 of them) and their events one more, in one
        transaction. When an idempotency key already names a job (the batch came before,
        in full or in part), those jobs are returned and the others created one by one; a
        key whose job has another request raises IdempotencyConflict before any is created.
        """
        now = self._clock()
        aging_s = self.admission.aging_s
        rows = [job_row(new, tenant, deadline_s, now, aging_s) for new in new_jobs]
        if len(rows) <= 1:
            # one job is one autocommitted statement on PostgreSQL, its event included
            return [self._create_one(row) for row in rows]
        event = created_event(now)
        try:
            with self._begin() as conn:
                created = conn.execute(CREATE_JOBS, rows).all()
                conn.execute(INSERT_EVENT, [event | {"event_job_id": row.id} for row in created])
        except IntegrityError:
            if all(row["idempotency_key"] is None for row in rows):
                raise
            return self._create_known(rows)
        return [(self._queued(row), True) for row in created]

    def _create_one(self, row: dict[str, Any]) -> tuple[Job, bool]:
        try:
            with self._atomic() as conn:
                # RETURNING hands back the row as committed: no second read to build the job
                created = execute_with_event(
                    conn,
                    CREATE_JOB,
                    {f"new_{name}": value for name, value in row.items()}
                    | created_event(row["created_at"]),
                )
        except IntegrityError:
            key = row["idempotency_key"]
            found = {} if key is None else self._by_idempotency_keys(row["tenant"], [key])
            if key not in found:
                raise
        else:
            assert created is not None  # an INSERT either returns its row or raises
            return self._queued(created), True
        same_request(row, found[key])
        return self.get(found[key].id), False

    def _create_known(self, rows: list[dict[str, Any]]) -> list[tuple[Job, bool]]:
        """`create_jobs` once some of the rows' idempotency keys name jobs already."""
        keys = [row["idempotency_key"] for row in rows if row["idempotency_key"] is not None]
        found = self._by_idempotency_keys(rows[0]["tenant"], keys)
        # every conflict is found before anything is created: a refused batch leaves no job
        for row in rows:
            if row["idempotency_key"] in found:
                same_request(row, found[row["idempotency_key"]])
        return [
            (self.get(found[row["idempotency_key"]].id), False)
            if row["idempotency_key"] in found
            else self._create_one(row)
            for row in rows
        ]

    def _queued(self, row: Row[Any]) -> Job:
        """The job of a row just committed, with its `created` event; observers are told."""
        # the row's created_at (the event's time) as the database hands times back
        created = JobEvent(row.created_at, "created", None, JobState.QUEUED.value, {})
        job = job_from_row(row, [], [created])
        self._notify(Transition(job, None, JobState.QUEUED))
        return job

    def _by_idempotency_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, Row[Any]]:
        """The id and request_hash of the tenant's jobs under `keys`, by key."""
        with self._connect() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.idempotency_key, jobs.c.request_hash).where(
                    jobs.c.tenant == tenant, jobs.c.idempotency_key.in_(keys)
                )
            ).all()
        return {row.idempotency_key: row for row in rows}

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str, *, tenant: str | None = None, details: bool = False) -> Job:
        with self._connect() as conn:
            query = select(jobs).where(jobs.c.id == job_id)
            if tenant is not None:
                query = query.where(jobs.c.tenant == tenant)
            row = conn.execute(query).first()
            if row is None:
                raise JobNotFound(job_id)
            images = images_of(conn, job_id)
            history = events_of(conn, job_id) if details else []
        return job_from_row(row, images, history)

    def job_id_for_task(self, task_uuid: str) -> str | None:
        with self._connect() as conn:
            found: str | None = conn.execute(
                select(jobs.c.id).where(jobs.c.task_uuid == task_uuid)
            ).scalar()
        return found

    def stale_jobs(self, state: JobState, updated_before: datetime, limit: int = 500) -> list[Job]:
        """Jobs sitting in `state` whose last change is older than `updated_before`."""
        query = select(jobs).where(jobs.c.state == state.value, jobs.c.updated_at < updated_before)
        return self._jobs(query.order_by(jobs.c.updated_at).limit(limit))

    def overdue_jobs(self, now: datetime, limit: int = 500) -> list[Job]:
        """Jobs not yet terminal whose deadline has passed."""
        active = [s.value for s in JobState if not s.terminal]
        query = select(jobs).where(jobs.c.state.in_(active), jobs.c.deadline_at < now)
        return self._jobs(query.order_by(jobs.c.deadline_at).limit(limit))

    def _jobs(self, query: Any) -> list[Job]:
        with self._connect() as conn:
            return [job_from_row(row, [], []) for row in conn.execute(query).all()]

    def committed_spend_since(self, since: datetime) -> Decimal:
        """What jobs claimed since `since` have cost, or are expected to cost while in flight.

        An in-flight job counts at the larger of its estimate and what it has cost so far;
        a finished one, or one whose every result is in (waiting only for its copies), at
        its reported cost, which Runware billed.
        """
        in_flight = jobs.c.state.in_([s.value for s in IN_FLIGHT_STATES]) & (
            jobs.c.images_received < jobs.c.number_results
        )
        committed = case(
            (in_flight & (jobs.c.estimate_micros > jobs.c.cost_micros), jobs.c.estimate_micros),
            else_=jobs.c.cost_micros,
        )
        query = select(func.coalesce(func.sum(committed), 0)).where(jobs.c.claimed_at >= since)
        with self._connect() as conn:
            return from_micros(int(conn.execute(query).scalar_one())) or Decimal(0)

    def count_by_state(self) -> dict[str, int]:
        with self._connect() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        return {state: count for state, count in rows}

    # -- transitions ----------------------------------------------------------------------

    def claim(self, job_id: str, expected_attempts: int) -> Job | None:
        """queued -> submitting, or a retry re-taking its own claim; None if someone else won.

        `expected_attempts` is the attempt count the caller saw: a redelivered message for an
        attempt that already ran finds a higher count and does not POST again.
        """
        claimed = self.claim_many([(job_id, expected_attempts)])
        return claimed[0] if claimed else None

    def claim_many(self, claims: Sequence[tuple[str, int]], admitted: bool = False) -> list[Job]:
        """`claim` for several (job_id, expected_attempts) at once; returns the jobs won.

        Claims that expect the same attempt count share one statement. First attempts take
        a unit of the Runware key's capacity each, in the same transaction, under the key
        row's lock: while the cap is held in full they are not claimed and stay queued, and
        of more than the free units the first in line are claimed. Unless the dispatcher
        `admitted` them, first attempts take nothing while jobs wait for admission, so they
        do not pass the dispatcher's fair order (jobstore.capacity). They reserve their
        estimates against their tenants' budgets too (jobstore.budgets): a first claim that
        does not fit is failed instead (reason quota), and returned among the jobs, failed.
        """
        now = self._clock()
        by_attempts: dict[int, list[str]] = {}
        for job_id, expected_attempts in claims:
            by_attempts.setdefault(expected_attempts, []).append(job_id)
        won: list[tuple[JobState, Job]] = []
        first = by_attempts.get(0, [])
        with self._begin() as conn:
            # only a first claim takes a unit: a retry's job holds its own since its first
            room = (
                capacity.lock_free(conn, self.admission, len(first), now, admitted)
                if first
                else capacity.NO_ROOM
            )
            if room.free:
                by_attempts[0], refused = budgets.reserve_first_claims(conn, first, room.free, now)
                won += [(JobState.QUEUED, job) for job in refused]
            for expected_attempts, job_ids in by_attempts.items():
                previous = JobState.QUEUED if expected_attempts == 0 else JobState.SUBMITTING
                # the WHERE pins attempts to expected_attempts, so the claim makes it one more
                claimed = {"attempt": expected_attempts + 1}
                params = {"job_ids": job_ids, "expected_attempts": expected_attempts, "now": now}
                if expected_attempts == 0:
                    params |= {"free": room.free, "capacity_key": self.admission.key_id}
                rows = execute_with_events(
                    conn,
                    CLAIM[expected_attempts > 0],
                    params | event_params("claimed", previous, JobState.SUBMITTING, claimed, now),
                )
                if expected_attempts == 0:
                    capacity.take(conn, self.admission, room, len(rows))
                won += [(previous, job_from_row(row, [], [])) for row in rows]
        for previous, job in won:
            self._notify(Transition(job, previous, job.state))
        return [job for _, job in won]

    def capacity_held(self) -> tuple[int, int]:
        """(units held, cap) of this store's Runware key, as every process sees them."""
        with self._connect() as conn:
            return capacity.held(conn, self.admission.key_id)

    def key_state(self) -> capacity.KeyState:
        """This store's key's count, cap, limit under the cap and pause, in one read."""
        with self._connect() as conn:
            return capacity.key_state(conn, self.admission.key_id)

    def end_backlog(self) -> None:
        """Submit messages claim their own jobs again, if no job waits for admission."""
        with self._begin() as conn:
            capacity.end_backlog(conn, self.admission.key_id)

    def pause_claims(self, until: datetime) -> None:
        """No first claim of this store's Runware key, by any process, before `until`: the
        jobs stay queued and the dispatcher admits them once it has passed. The limit under
        the cap halves (once per pause)."""
        with self._begin() as conn:
            capacity.pause(conn, self.admission, until, self._clock())

    def claims_paused_until(self) -> datetime | None:
        """The end of this store's key's latest pause, past or not; None if never paused."""
        with self._connect() as conn:
            return capacity.paused_until(conn, self.admission.key_id)

    def mark_submitted(self, job_id: str, detail: dict[str, Any]) -> bool:
        """submitting -> submitted once Runware acknowledged the task."""
        return bool(self.mark_submitted_many([job_id], detail))

    def mark_submitted_many(self, job_ids: Sequence[str], detail: dict[str, Any]) -> list[Job]:
        """`mark_submitted` for the tasks of one acknowledged request; returns the jobs moved."""
        return self._transition_all(
            job_ids, JobState.SUBMITTED, {"submitted_at": self._clock()}, "acknowledged", detail
        )

    def fail(self, job_id: str, failure: Failure) -> bool:
        values = {
            "failure_reason": failure.reason,
            "failure_code": failure.code,
            "failure_message": failure.message,
            "failure_parameter": failure.parameter,
            "finished_at": self._clock(),
        }
        detail = {"reason": failure.reason, "code": failure.code, "message": failure.message}
        return self._transition(job_id, JobState.FAILED, values, "failed", detail)

    def cancel(self, job_id: str, *, tenant: str | None = None) -> Job:
        """Cancel a job that is not terminal yet; a terminal job is returned unchanged."""
        job = self.get(job_id, tenant=tenant)
        if not job.state.terminal:
            self._transition(
                job_id, JobState.CANCELED, {"finished_at": self._clock()}, "canceled", {}
            )
        return self.get(job_id, tenant=tenant)

    def touch(self, job_id: str, state: JobState, kind: str, detail: dict[str, Any]) -> bool:
        """Record that the reaper acted on a job still in `state`, restarting its clock."""
        now = self._clock()
        with self._begin() as conn:
            changed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == state.value)
                .values(updated_at=now)
            ).rowcount
            if changed:
                log_event(conn, job_id, kind, (state, state), detail, now)
        return bool(changed)

    def _transition(
        self,
        job_id: str,
        target: JobState,
        values: dict[str, Any],
        kind: str,
        detail: dict[str, Any],
    ) -> bool:
        return bool(self._transition_all([job_id], target, values, kind, detail))

    def _transition_all(
        self,
        job_ids: Sequence[str],
        target: JobState,
        values: dict[str, Any],
        kind: str,
        detail: dict[str, Any],
    ) -> list[Job]:
        """Move every job of `job_ids` that may go to `target`; returns the jobs moved."""
        now = self._clock()
        allowed = [s.value for s in sources_of(target)]
        moved: list[tuple[JobState, Job]] = []
        # with a single source state the UPDATE's own WHERE is the whole compare-and-set
        # and its row lock suffices: one statement instead of a locking read first
        with self._atomic() if len(allowed) == 1 else self._begin() as conn:
            by_state: dict[str, list[str]] = (
                {allowed[0]: list(job_ids)} if len(allowed) == 1 else {}
            )
            if len(allowed) > 1:
                locked = conn.execute(
                    select(jobs.c.id, jobs.c.state)
                    .where(jobs.c.id.in_(job_ids), state_among(*allowed))
                    .with_for_update()
                ).all()
                for row in locked:
                    by_state.setdefault(row.state, []).append(row.id)
            for before, ids in by_state.items():
                rows = execute_with_events(
                    conn,
                    transition_statement(before, target.value, tuple(values)),
                    {"job_ids": ids, "now": now}
                    | {f"set_{name}": value for name, value in values.items()}
                    | event_params(kind, JobState(before), target, detail, now),
                )
                moved += [(JobState(before), job_from_row(row, [], [])) for row in rows]
        for before, job in moved:
            self._notify(Transition(job, before, target))
        return [job for _, job in moved]

    # -- results --------------------------------------------------------------------------

    def record_result(self, result: IncomingResult, source: str) -> ResultOutcome:
        """Store a result once by (taskUUID, imageUUID). The job succeeds once every image
        is stored, by the copy task (jobstore.settling), not here.

        A job takes no more than numberResults images, and no new one once terminal
        (jobstore.results).
        """
        [recorded] = self.record_results([result], source)
        return recorded.outcome

    def record_results(self, incoming: Sequence[IncomingResult], source: str) -> list[Recorded]:
        """`record_result` for several results at once, in one transaction (one statement on
        PostgreSQL); what each did, in order."""
        if not incoming:
            return []
        with self._atomic() as conn:
            recorded = record_results(conn, incoming, source, self._clock())
        for result, done in zip(incoming, recorded, strict=True):
            for observer in self.observers:
                observer.result_recorded(done.outcome, result.cost_usd, source)
        return recorded
