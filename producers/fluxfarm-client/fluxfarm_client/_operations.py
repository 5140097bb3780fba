"""What each client method does, written once for the sync and the async client.

An operation is a generator: it yields the steps it needs (a call to the API, a file to
fetch, a pause) and is sent each step's outcome; its return value is the method's. The
two clients differ only in how they carry out a step (`_sync`, `_async`).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fluxfarm_client._errors import DownloadError, WaitTimedOut
from fluxfarm_client._models import Callback, Job, JobPage, JobState

T = TypeVar("T")

# the longest single ?wait= the clients ask for; the farm may answer sooner
MAX_WAIT_PER_CALL_S = 60.0
# a wait answered early without a terminal job (an older farm, a shorter limit there)
# is asked again after this pause, never in a tight loop
MIN_WAIT_INTERVAL_S = 0.5
# the largest image `download` keeps; larger answers are refused mid-stream
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
# an image is saved under its imageUUID: nothing that could leave the job's folder
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Call:
    """One request to the API; its outcome is the answer's JSON. `wait_s` is added to
    the read timeout, for a request the farm holds open on purpose."""

    method: str
    path: str
    json: Any = None
    params: Sequence[tuple[str, str]] = ()
    wait_s: float = 0.0


@dataclass(frozen=True)
class Fetch:
    """One image to save as `stem` + its type's suffix, checked against `sha256` when
    the farm gave one; its outcome is the Path written."""

    url: str
    stem: Path
    sha256: str | None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Call | Fetch | Sleep
Operation = Generator[Step, Any, T]


def new_idempotency_key() -> str:
    """A key for one call: its retries reuse it, so the farm queues the job once."""
    return uuid.uuid4().hex


def job_path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _submit_options(
    idempotency_key: str | None,
    deadline_s: float | None,
    callback_url: str | None,
    priority: int | None,
) -> dict[str, Any]:
    options: dict[str, Any] = {"idempotencyKey": idempotency_key or new_idempotency_key()}
    if deadline_s is not None:
        options["deadlineSeconds"] = deadline_s
    if callback_url is not None:
        options["callbackUrl"] = callback_url
    if priority is not None:
        options["priority"] = priority
    return options


def submit(
    request: Mapping[str, Any],
    idempotency_key: str | None,
    deadline_s: float | None,
    callback_url: str | None,
    priority: int | None,
) -> Operation[Job]:
    options = _submit_options(idempotency_key, deadline_s, callback_url, priority)
    body = {"request": dict(request), **options}
    return Job.from_json((yield Call("POST", "/v1/jobs", json=body)))


def submit_many(
    requests: Sequence[Mapping[str, Any]],
    idempotency_key: str | None,
    deadline_s: float | None,
    callback_url: str | None,
    priority: int | None,
) -> Operation[list[Job]]:
    body = {
        "requests": [dict(r) for r in requests],
        **_submit_options(idempotency_key, deadline_s, callback_url, priority),
    }
    answer = yield Call("POST", "/v1/jobs/batch", json=body)
    return [Job.from_json(job) for job in answer["jobs"]]


def get(job_id: str) -> Operation[Job]:
    return Job.from_json((yield Call("GET", job_path(job_id))))


def cancel(job_id: str) -> Operation[Job]:
    return Job.from_json((yield Call("POST", job_path(job_id, "/cancel"))))


def callbacks(job_id: str) -> Operation[list[Callback]]:
    answer = yield Call("GET", job_path(job_id, "/callbacks"))
    return [Callback.from_json(item) for item in answer["callbacks"]]


def list_jobs(
    state: JobState | str | Sequence[JobState | str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    idempotency_key: str | None,
    limit: int | None,
    cursor: str | None,
) -> Operation[JobPage]:
    params: list[tuple[str, str]] = []
    states = [state] if isinstance(state, str) else list(state or [])
    params += [("state", str(s)) for s in states]
    if created_after is not None:
        params.append(("createdAfter", created_after.isoformat()))
    if created_before is not None:
        params.append(("createdBefore", created_before.isoformat()))
    if idempotency_key is not None:
        params.append(("idempotencyKey", idempotency_key))
    if limit is not None:
        params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return JobPage.from_json((yield Call("GET", "/v1/jobs", params=params)))


def wait(job_id: str, timeout_s: float) -> Operation[Job]:
    """The job once terminal: the farm holds each GET open until then (?wait=), up to
    MAX_WAIT_PER_CALL_S; WaitTimedOut after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        asked = max(0.0, min(remaining, MAX_WAIT_PER_CALL_S))
        started = time.monotonic()
        params = [("wait", f"{asked:.3f}")]
        job = Job.from_json((yield Call("GET", job_path(job_id), params=params, wait_s=asked)))
        if job.state.terminal:
            return job
        if time.monotonic() >= deadline:
            raise WaitTimedOut(job_id, job.state.value, timeout_s)
        early = MIN_WAIT_INTERVAL_S - (time.monotonic() - started)
        if early > 0:
            yield Sleep(min(early, max(0.0, deadline - time.monotonic())))


def download(job_id: str, directory: Path) -> Operation[list[Path]]:
    """Save every image of the job as directory/<job id>/<imageUUID>.<ext>."""
    job = yield from get(job_id)
    if not _SAFE_NAME.fullmatch(job.id):
        raise DownloadError(f"job {job.id!r}", "the job id is not a safe folder name")
    folder = directory / job.id
    saved: list[Path] = []
    for image in job.images:
        url = image.fetch_url
        where = f"job {job.id} image {image.image_uuid}"
        if image.deleted_at is not None:
            # Runware's URL expired long before retention ran: nothing else holds the bytes
            when = image.deleted_at.isoformat(timespec="seconds")
            raise DownloadError(where, f"deleted by the farm's retention at {when}")
        if url is None:
            # nothing to fetch yet: the farm has not made this image's bytes reachable
            raise DownloadError(where, "the job gives no URL for it")
        if not _SAFE_NAME.fullmatch(image.image_uuid):
            raise DownloadError(where, "the imageUUID is not a safe file name")
        saved.append((yield Fetch(url, folder / image.image_uuid, image.sha256)))
    return saved
