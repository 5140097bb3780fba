"""The producer client: validate a request, commit its job row, publish the submit task."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from structlog.contextvars import bound_contextvars

from farmdomain.admission import DEFAULT_PRIORITY, priority_issues
from farmdomain.callbacks import CallbackEvent, url_issues
from farmdomain.errors import FieldIssue, NotRetryable, RequestInvalid, WaitTimedOut
from farmdomain.jobs import Job, JobState
from farmdomain.listing import JobPage, JobQuery, query_issues
from farmdomain.pricing import estimate_usd
from farmdomain.request_schema import GenerationRequest, parse_request
from farmdomain.settings import Settings, get_settings
from farmdomain.values import utcnow
from jobstore.budgets import check_room
from jobstore.callback_events import CallbackOutbox
from jobstore.creation import NewJob
from jobstore.listing import list_jobs
from jobstore.protocol import Store
from jobstore.store import JobStore
from producers.queueing import JobQueue, Submission
from runware_edge.downloads import SafeDownloader

IDEMPOTENCY_KEY_MAX = 255
# request i of a batch is known by f"{key}/{i}": the batch's key leaves room for the index of
# the largest batch the settings allow (submit_many_max is at most 1,000)
BATCH_IDEMPOTENCY_KEY_MAX = IDEMPOTENCY_KEY_MAX - len("/999")
# long enough for any real render, short enough that a deadline is still a date
DEADLINE_MAX_S = 7 * 24 * 3600.0
MAX_POLL_INTERVAL_S = 1.0
POLL_BACKOFF = 1.5

logger = structlog.get_logger(__name__)


Request = Mapping[str, Any] | GenerationRequest


def batch_item_key(idempotency_key: str, index: int) -> str:
    """The idempotency key of request `index` of a batch submitted under `idempotency_key`."""
    return f"{idempotency_key}/{index}"


def nested_issue(where: str, issue: FieldIssue) -> FieldIssue:
    """An issue of the request found at `where` in what the caller sent, named from there
    ("" for a request given alone, whose issues keep their names)."""
    if not where:
        return issue
    field = where if issue.field == "request" else f"{where}.{issue.field}"
    return FieldIssue(field, issue.rule, issue.message)


def _option_issues(
    idempotency_key: str | None,
    deadline_s: float | None,
    priority: int,
    key_max: int = IDEMPOTENCY_KEY_MAX,
) -> list[FieldIssue]:
    issues = priority_issues(priority)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= key_max:
        issues.append(
            FieldIssue("idempotency_key", "length", f"must be 1 to {key_max} characters long")
        )
    if deadline_s is not None and not 0 < deadline_s <= DEADLINE_MAX_S:
        issues.append(
            FieldIssue("deadline_s", "range", f"must be over 0 and at most {DEADLINE_MAX_S:g} s")
        )
    return issues


def _count_issues(count: int, limit: int) -> list[FieldIssue]:
    if count < 1:
        return [FieldIssue("requests", "min_items", "must hold at least 1 request")]
    if count > limit:
        message = f"must hold at most {limit} requests (FLUXFARM_SUBMIT_MANY_MAX)"
        return [FieldIssue("requests", "max_items", message)]
    return []


def _validated(
    requests: Sequence[Request], places: Sequence[str], issues: list[FieldIssue]
) -> list[GenerationRequest]:
    """The parsed requests, or one RequestInvalid naming every issue of every request (each
    from its place in what the caller sent) and then the options'."""
    parsed: list[GenerationRequest] = []
    found: list[FieldIssue] = []
    for request, where in zip(requests, places, strict=True):
        try:
            parsed.append(
                request
                if isinstance(request, GenerationRequest)
                else parse_request(dict(request) if isinstance(request, Mapping) else request)
            )
        except RequestInvalid as exc:
            found += [nested_issue(where, issue) for issue in exc.issues]
    if found or issues:
        raise RequestInvalid([*found, *issues])
    return parsed


class FluxfarmClient:
    """Submits and follows jobs for one tenant; make one per process and share it."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tenant: str = "default",
        store: Store | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.tenant = tenant
        self._owns_store = store is None
        self.store = store or JobStore.from_settings(self.settings)
        self._jobs = JobQueue(self.settings, self.store, tenant)
        self._outbox = CallbackOutbox(self.store.engine)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release broker connections, and the store's pool if this client opened it."""
        self._jobs.close()
        if self._owns_store:
            self.store.engine.dispose()

    def _callback_issues(self, callback_url: str | None) -> list[FieldIssue]:
        """Why `callback_url` cannot be this tenant's (field `callbackUrl`), if it cannot."""
        return [] if callback_url is None else url_issues(callback_url, self.tenant, self.settings)

    def submit(
        self,
        request: Request,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        callback_url: str | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> str:
        """Queue one generation request and return its job id; once the job is terminal,
        its event is POSTed to `callback_url`, which must be on an allowed host. Inside
        this tenant, a higher `priority` (PRIORITY_MIN to PRIORITY_MAX) is admitted first.

        Raises RequestInvalid (every broken rule, nothing stored), IdempotencyConflict, or
        BudgetExceeded when the tenant's remaining budget cannot cover the job's estimate.
        """
        job, _created = self.submit_job(
            request, idempotency_key, deadline_s, callback_url, priority
        )
        return job.id

    def submit_job(
        self,
        request: Request,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        callback_url: str | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> tuple[Job, bool]:
        """As `submit`, returning the job and whether this call created it."""
        started = time.perf_counter()
        issues = _option_issues(idempotency_key, deadline_s, priority)
        issues += self._callback_issues(callback_url)
        [parsed] = _validated([request], [""], issues)
        self._check_budget([parsed], [idempotency_key], "request")
        return self._jobs.queue_one(
            Submission(parsed, idempotency_key, deadline_s, started, callback_url, priority)
        )

    def submit_many(
        self,
        requests: Sequence[Request],
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        callback_url: str | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> list[str]:
        """Queue several generation requests together and return their job ids, in order.

        All or none: every request is checked first, and one RequestInvalid names each
        broken rule of each by its index (`requests[3].width`) and stores nothing; at most
        `submit_many_max` requests a call. The jobs are committed in one transaction and
        their messages published over one broker connection. Under an idempotency key,
        request i is known by `batch_item_key(key, i)` (f"{key}/{i}"), exactly as if it
        were submitted alone with that key: the same batch sent again returns the same
        jobs, and a changed request i raises IdempotencyConflict. Each job calls back
        `callback_url` once terminal; each has `priority` inside this tenant.
        """
        queued = self.submit_jobs(requests, idempotency_key, deadline_s, callback_url, priority)
        return [job.id for job, _created in queued]

    def submit_jobs(
        self,
        requests: Sequence[Request],
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
        callback_url: str | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> list[tuple[Job, bool]]:
        """As `submit_many`, returning each job and whether this call created it."""
        started = time.perf_counter()
        issues = _option_issues(idempotency_key, deadline_s, priority, BATCH_IDEMPOTENCY_KEY_MAX)
        issues += self._callback_issues(callback_url)
        count = len(requests)
        over = _count_issues(count, self.settings.submit_many_max)
        if over:
            # past the limit, the requests themselves are not worth reading
            raise RequestInvalid([*over, *issues])
        parsed = _validated(requests, [f"requests[{i}]" for i in range(count)], issues)
        keys = [
            None if idempotency_key is None else batch_item_key(idempotency_key, i)
            for i in range(count)
        ]
        self._check_budget(parsed, keys, "requests")
        return self._jobs.queue(
            [
                Submission(request, key, deadline_s, started, callback_url, priority)
                for request, key in zip(parsed, keys, strict=True)
            ]
        )

    def _check_budget(
        self, parsed: Sequence[GenerationRequest], keys: Sequence[str | None], field: str
    ) -> None:
        """BudgetExceeded, before anything is stored, if the tenant's remaining budget cannot
        cover the new jobs' estimates (the worker's claim is the exact check)."""
        estimates = [estimate_usd(request.runware_params()) for request in parsed]
        check_room(
            self.store.engine, self.tenant, list(zip(keys, estimates, strict=True)), utcnow(), field
        )

    def get(self, job_id: str) -> Job:
        """The job with its images and events; JobNotFound if it is not this tenant's."""
        return self.store.get(job_id, tenant=self.tenant, details=True)

    def list_jobs(self, query: JobQuery) -> JobPage:
        """A page of this tenant's jobs, newest first, each with its images and events;
        RequestInvalid for a query that cannot be run."""
        issues = query_issues(query)
        if issues:
            raise RequestInvalid(issues)
        return list_jobs(self.store.engine, self.tenant, query)

    def callbacks(self, job_id: str) -> list[CallbackEvent]:
        """The job's callback events with every attempt (none until a job with a
        callbackUrl is terminal); JobNotFound if it is not this tenant's."""
        self.store.get(job_id, tenant=self.tenant)
        event = self._outbox.get(job_id, tenant=self.tenant)
        return [] if event is None else [event]

    def wait(self, job_id: str, timeout: float, poll_interval: float = 0.2) -> Job:
        """Poll until the job is terminal; WaitTimedOut after `timeout` seconds."""
        [job] = self.wait_all([job_id], timeout, poll_interval)
        if not job.state.terminal:
            raise WaitTimedOut(job_id, job.state.value, timeout)
        return job

    def wait_all(
        self, job_ids: Sequence[str], timeout: float, poll_interval: float = 0.2
    ) -> list[Job]:
        """The jobs once every one is terminal, or as they stand when `timeout` runs out."""
        deadline = time.monotonic() + timeout
        delay = poll_interval
        ceiling = max(poll_interval, MAX_POLL_INTERVAL_S)
        pending = list(dict.fromkeys(job_ids))
        while pending:
            pending = [
                job_id
                for job_id in pending
                if not self.store.get(job_id, tenant=self.tenant).state.terminal
            ]
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * POLL_BACKOFF, ceiling)
        return [self.get(job_id) for job_id in job_ids]

    def retry(self, job_id: str) -> Job:
        """Queue a failed job again as a new job linked to it, with a new taskUUID.

        Only an operator's explicit request should call this: the failed task may still be
        billed by Runware. Asking twice for the same job returns the same new job.
        """
        failed = self.store.get(job_id, tenant=self.tenant)
        if failed.state is not JobState.FAILED:
            raise NotRetryable(job_id, failed.state.value)
        # the caller that asked to be called back about the job is called back about its retry
        retry = NewJob(
            failed.request,
            idempotency_key=f"retry-of:{failed.id}",
            retry_of=failed.id,
            callback_url=failed.callback_url,
            priority=failed.priority,
        )
        [(job, created)] = self.store.create_jobs(
            [retry], tenant=self.tenant, deadline_s=self.settings.job_deadline_s
        )
        published = job.id in self._jobs.publish([job] if created else [])
        with bound_contextvars(job_id=job.id, task_uuid=job.task_uuid):
            logger.info("job.retried", retry_of=failed.id, created=created, published=published)
        return job

    def download(self, job_id: str, directory: Path) -> list[Path]:
        """Save the job's URL images as directory/<job id>/<imageUUID>.<ext>.

        Only allow-listed hosts are fetched, sizes are capped and types checked
        (runware_edge.downloads); a refused image raises DownloadRefused.
        """
        with SafeDownloader(self.settings) as downloader:
            return downloader.save_job(self.get(job_id), directory)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that is not terminal yet; a terminal job comes back unchanged."""
        job = self.store.cancel(job_id, tenant=self.tenant)
        logger.info("job.cancel", job_id=job.id, task_uuid=job.task_uuid, status=job.state.value)
        return self.get(job_id)
