"""The producer client: validate a request, commit its job row, publish the submit task."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from celery import Celery
from structlog.contextvars import bound_contextvars

from core.broker import SUBMIT_QUEUE, SUBMIT_TASK, celery_config
from core.downloads import SafeDownloader
from core.errors import FieldIssue, NotRetryable, RequestInvalid, WaitTimedOut
from core.jobs import Job, JobState
from core.request_schema import GenerationRequest, parse_request
from core.settings import Settings, get_settings
from core.store import JobStore

IDEMPOTENCY_KEY_MAX = 255
# long enough for any real render, short enough that a deadline is still a date
DEADLINE_MAX_S = 7 * 24 * 3600.0
MAX_POLL_INTERVAL_S = 1.0
POLL_BACKOFF = 1.5

logger = structlog.get_logger(__name__)


def _option_issues(idempotency_key: str | None, deadline_s: float | None) -> list[FieldIssue]:
    issues = []
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
        issues.append(
            FieldIssue(
                "idempotency_key",
                "length",
                f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters long",
            )
        )
    if deadline_s is not None and not 0 < deadline_s <= DEADLINE_MAX_S:
        issues.append(
            FieldIssue("deadline_s", "range", f"must be over 0 and at most {DEADLINE_MAX_S:g} s")
        )
    return issues


def _validated(
    request: Mapping[str, Any] | GenerationRequest, issues: list[FieldIssue]
) -> GenerationRequest:
    """The parsed request, or RequestInvalid naming its issues and the options' together."""
    try:
        parsed = (
            request
            if isinstance(request, GenerationRequest)
            else parse_request(dict(request) if isinstance(request, Mapping) else request)
        )
    except RequestInvalid as exc:
        raise RequestInvalid([*exc.issues, *issues]) from exc
    if issues:
        raise RequestInvalid(issues)
    return parsed


class FluxfarmClient:
    """Submits and follows jobs for one tenant; make one per process and share it."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tenant: str = "default",
        store: JobStore | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.tenant = tenant
        self._owns_store = store is None
        self.store = store or JobStore.from_url(self.settings.resolved_database_url())
        self._celery = Celery("fluxfarm.producers", set_as_current=False)
        self._celery.conf.update(celery_config(self.settings))

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
        self._celery.close()
        if self._owns_store:
            self.store.engine.dispose()

    def submit(
        self,
        request: Mapping[str, Any] | GenerationRequest,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> str:
        """Queue one generation request and return its job id.

        Raises RequestInvalid (every broken rule, nothing stored) or IdempotencyConflict.
        """
        job, _created = self.submit_job(request, idempotency_key, deadline_s)
        return job.id

    def submit_job(
        self,
        request: Mapping[str, Any] | GenerationRequest,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> tuple[Job, bool]:
        """As `submit`, returning the job and whether this call created it."""
        started = time.perf_counter()
        parsed = _validated(request, _option_issues(idempotency_key, deadline_s))
        job, created = self.store.create_job(
            parsed.runware_params(),
            tenant=self.tenant,
            deadline_s=deadline_s or self.settings.job_deadline_s,
            idempotency_key=idempotency_key,
            fingerprint=parsed.fingerprint(),
        )
        with bound_contextvars(job_id=job.id, task_uuid=job.task_uuid):
            # a repeated idempotency key found a job whose message was already published
            published = created and self._publish(job.id)
            logger.info(
                "job.queued",
                tenant=self.tenant,
                status=job.state.value,
                created=created,
                published=published,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        return job, created

    def _publish(self, job_id: str) -> bool:
        try:
            # attempt 0: the claim only succeeds on a job no worker has taken yet
            self._celery.send_task(SUBMIT_TASK, args=[job_id, 0], queue=SUBMIT_QUEUE)
        # whatever the transport raises, the row is committed and the reaper republishes
        # queued jobs whose message never arrived, so the caller still gets its job id
        except Exception as exc:
            logger.warning("job.publish_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def get(self, job_id: str) -> Job:
        """The job with its images and events; JobNotFound if it is not this tenant's."""
        return self.store.get(job_id, tenant=self.tenant, details=True)

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
        job, created = self.store.create_job(
            failed.request,
            tenant=self.tenant,
            deadline_s=self.settings.job_deadline_s,
            idempotency_key=f"retry-of:{failed.id}",
            retry_of=failed.id,
        )
        with bound_contextvars(job_id=job.id, task_uuid=job.task_uuid):
            published = created and self._publish(job.id)
            logger.info("job.retried", retry_of=failed.id, created=created, published=published)
        return job

    def download(self, job_id: str, directory: Path) -> list[Path]:
        """Save the job's URL images as directory/<job id>/<imageUUID>.<ext>.

        Only allow-listed hosts are fetched, sizes are capped and types checked
        (core.downloads); a refused image raises DownloadRefused.
        """
        with SafeDownloader(self.settings) as downloader:
            return downloader.save_job(self.get(job_id), directory)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that is not terminal yet; a terminal job comes back unchanged."""
        job = self.store.cancel(job_id, tenant=self.tenant)
        logger.info("job.cancel", job_id=job.id, task_uuid=job.task_uuid, status=job.state.value)
        return self.get(job_id)
