"""Callbacks to the caller: which URLs a tenant's jobs may call back, the event a terminal
transition makes, its id, its body, and when a failed delivery is tried again.

The delivery itself (signing, the HTTP exchange) is the worker's (worker/callbacks.py);
this module does no I/O.
"""

from __future__ import annotations

import base64
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx
import orjson

from farmdomain.errors import FieldIssue
from farmdomain.jobs import Job, JobState
from farmdomain.settings import Settings
from farmdomain.text import REFUSED, has_control

CALLBACK_URL_MAX = 2048
# a retry is due within this share of its scheduled delay either way, so that the
# callbacks of jobs that finished together do not all come back at the same moment
JITTER = 0.1

EVENT_TYPES: dict[JobState, str] = {
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELED: "job.canceled",
}


class CallbackStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # every attempt of the schedule failed: kept for `fluxfarm callbacks replay`
    DEAD = "dead"
    # the endpoint answered 410 Gone: nothing more is sent to it for this event
    GONE = "gone"


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: when, the answer's status (None: none came), how long it
    took, and the first characters of the answer or why there was none."""

    at: datetime
    status_code: int | None
    latency_ms: float
    answer: str
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the endpoint says it will never take this again."""
        return self.status_code == 410


@dataclass(frozen=True)
class CallbackEvent:
    """A job's terminal event as the outbox holds it, and how its delivery stands."""

    job_id: str
    tenant: str
    url: str
    type: str
    status: CallbackStatus
    # attempts since the schedule last (re)started: the position in the schedule
    tries: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    body: bytes | None
    attempts: list[Attempt] = field(default_factory=list)
    # the job with its images and history, read with a claim when there is no body yet
    job: Job | None = None

    @property
    def webhook_id(self) -> str:
        return event_id(self.job_id)


def outcome(
    attempt: Attempt, schedule: Sequence[float], tries: int
) -> tuple[CallbackStatus, float | None]:
    """What an attempt made after `tries` earlier ones of the schedule leaves the event as,
    and in how many seconds the next attempt is due (None: no next one)."""
    if attempt.delivered:
        return CallbackStatus.DELIVERED, None
    if attempt.gone:
        return CallbackStatus.GONE, None
    delay = retry_delay_s(schedule, tries + 1)
    return (CallbackStatus.DEAD, None) if delay is None else (CallbackStatus.PENDING, delay)


def event_id(job_id: str) -> str:
    """The webhook-id of a job's one terminal event, the same on every attempt."""
    return "msg_" + job_id.replace("-", "")


def body(event_type: str, at: datetime, job_view: dict[str, Any]) -> bytes:
    """The signed body: {"type", "timestamp", "data": the job as GET /v1/jobs/{id} shows}."""
    return orjson.dumps({"type": event_type, "timestamp": at.isoformat(), "data": job_view})


Origin = tuple[str, int | None]


def _origins(entries: Sequence[str]) -> set[Origin]:
    """`host` or `host:port` entries, as (host, port or None for any port)."""
    found: set[Origin] = set()
    for entry in (e.strip().lower() for e in entries):
        if not entry:
            continue
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        found.add((host, int(port)) if port.isdigit() else (entry, None))
    return found


def allowed_origins(settings: Settings, tenant: str) -> set[Origin]:
    """Where `tenant`'s callbacks may go: the farm-wide list and the tenant's own."""
    farm_wide = settings.callback_allowed_hosts.split(",")
    return _origins(farm_wide) | _origins(settings.callback_tenant_hosts.get(tenant, []))


def url_issues(url: str, tenant: str, settings: Settings) -> list[FieldIssue]:
    """Why `url` cannot be `tenant`'s callbackUrl, if it cannot; [] if it may be."""

    def issue(rule: str, message: str) -> list[FieldIssue]:
        return [FieldIssue("callbackUrl", rule, message)]

    if len(url) > CALLBACK_URL_MAX:
        return issue("max_length", f"must be at most {CALLBACK_URL_MAX} characters")
    if has_control(url):
        return issue("characters", REFUSED)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return issue("url", "must be an absolute http or https URL")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return issue("url", "must be an absolute http or https URL")
    if parsed.userinfo:
        return issue("url", "must not carry a user name or password")
    host = parsed.host.lower()
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    origins = allowed_origins(settings, tenant)
    if (host, None) not in origins and (host, port) not in origins:
        return issue(
            "allowed_host",
            f"host {host}:{port} is not allowed for callbacks (FLUXFARM_CALLBACK_ALLOWED_HOSTS,"
            " FLUXFARM_CALLBACK_TENANT_HOSTS)",
        )
    return []


def retry_delay_s(
    schedule: Sequence[float], attempts_made: int, rand: Callable[[], float] = random.random
) -> float | None:
    """Seconds from a failed attempt (the `attempts_made`th) to the next, jittered; None
    once the schedule is spent and the event is dead. schedule[0] is the first attempt's
    delay from the transition, so the nth retry waits schedule[n]."""
    if attempts_made >= len(schedule):
        return None
    return schedule[attempts_made] * (1 + JITTER * (2 * rand() - 1))


def new_secret() -> str:
    """A tenant's signing secret, as Standard Webhooks writes them: whsec_ + base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
