"""`fluxfarm callbacks`: tenants' signing secrets, the callback outbox, replays of what was
not delivered."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from farmdomain.broker import CALLBACK_QUEUE, DELIVER_TASK, BrokerCelery, celery_config
from farmdomain.callbacks import Attempt, CallbackEvent, CallbackStatus
from farmdomain.logs import configure_logging
from farmdomain.settings import Settings, get_settings
from farmdomain.text import escaped
from farmdomain.values import utcnow
from jobstore.api_tokens import tenant_issues
from jobstore.callback_events import CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from jobstore.store import JobStore

EXIT_OK = 0
# some of the events named could not be replayed (none, or still being delivered)
EXIT_NOT_REPLAYED = 1
EXIT_REJECTED = 2
MAX_LIMIT = 1000
# the most of the last answer or error a line of `list` shows; --json has all that is kept
SHOWN_ANSWER_CHARS = 80

Handler = Callable[[argparse.Namespace, Settings], int]


def add_command(subparsers: Any) -> None:
    callbacks = subparsers.add_parser(
        "callbacks", help="completion callbacks: tenants' secrets, events, replays"
    )
    actions = callbacks.add_subparsers(dest="callbacks_command", required=True)

    secret = actions.add_parser(
        "secret", help="print the tenant's whsec_ signing secret (made on first use)"
    )
    secret.add_argument("tenant", metavar="TENANT")
    secret.set_defaults(handler=_command(_secret))

    rotate = actions.add_parser(
        "rotate", help="make the tenant a new secret; the previous one signs for --overlap"
    )
    rotate.add_argument("tenant", metavar="TENANT")
    rotate.add_argument(
        "--overlap",
        type=_seconds,
        metavar="SECONDS",
        help="how long the previous secret also signs (default FLUXFARM_CALLBACK_SECRET_OVERLAP_S)",
    )
    rotate.set_defaults(handler=_command(_rotate))

    listing = actions.add_parser(
        "list", help="events newest first: status, tries, next attempt, last attempt"
    )
    listing.add_argument("--failed", action="store_true", help="only dead or gone events")
    listing.add_argument("--tenant", metavar="TENANT", help="one tenant only")
    listing.add_argument("--limit", type=_limit, default=100, metavar="N", help="at most N")
    listing.add_argument("--json", action="store_true", help="print the events as JSON")
    listing.set_defaults(handler=_command(_list))

    replay = actions.add_parser(
        "replay",
        help="deliver events again from the start of the schedule, same webhook-id",
    )
    replay.add_argument("job_ids", nargs="*", metavar="ID", help="the events' job ids")
    replay.add_argument(
        "--since",
        metavar="TIMESTAMP",
        help="every dead or gone event created since then (ISO 8601 with a zone)",
    )
    replay.set_defaults(handler=_command(_replay))


def _seconds(text: str) -> float:
    seconds = float(text)
    if not seconds >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return seconds


def _limit(text: str) -> int:
    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_LIMIT}")
    return limit


class _BadArgument(Exception):
    """An argument the command cannot take: printed as one line naming it."""

    def __init__(self, argument: str, rule: str, message: str) -> None:
        super().__init__(f"{argument}: {rule}: {message}")


def _tenant(argument: str, tenant: str) -> str:
    issues = tenant_issues(tenant)
    if issues:
        raise _BadArgument(argument, issues[0].rule, issues[0].message)
    return tenant


def _timestamp(argument: str, text: str) -> datetime:
    example = "e.g. 2026-12-03T06:00:00Z"
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise _BadArgument(argument, "timestamp", f"not an ISO 8601 time ({example})") from None
    if at.tzinfo is None:
        raise _BadArgument(argument, "timezone", f"needs a zone, Z or +HH:MM ({example})")
    return at


def _command(run: Handler) -> Callable[[argparse.Namespace], int]:
    """A handler with the environment's settings and the process's logging set up, a bad
    argument one line on stderr."""

    def handler(args: argparse.Namespace) -> int:
        settings = get_settings()
        configure_logging(settings, "cli")
        try:
            return run(args, settings)
        except _BadArgument as exc:
            print(f"error: {escaped(str(exc))}", file=sys.stderr)
            return EXIT_REJECTED

    return handler


def _secrets_of(run: Callable[[argparse.Namespace, Settings, CallbackSecrets], int]) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        _tenant("TENANT", args.tenant)
        store = JobStore.from_settings(settings)
        try:
            return run(args, settings, CallbackSecrets(store.engine))
        finally:
            store.engine.dispose()

    return handler


@_secrets_of
def _secret(args: argparse.Namespace, _settings: Settings, secrets: CallbackSecrets) -> int:
    print(secrets.current(args.tenant))
    return EXIT_OK


@_secrets_of
def _rotate(args: argparse.Namespace, settings: Settings, secrets: CallbackSecrets) -> int:
    overlap_s = settings.callback_secret_overlap_s if args.overlap is None else args.overlap
    secret = secrets.rotate(args.tenant, overlap_s)
    retires = (utcnow() + timedelta(seconds=overlap_s)).isoformat(timespec="seconds")
    print(
        f"tenant {args.tenant}: new secret; the previous one also signs until {retires}",
        file=sys.stderr,
    )
    print(secret)
    return EXIT_OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    tenant = None if args.tenant is None else _tenant("--tenant", args.tenant)
    store = JobStore.from_settings(settings)
    try:
        events = CallbackOutbox(store.engine).events(
            failed=args.failed, tenant=tenant, limit=args.limit
        )
    finally:
        store.engine.dispose()
    if args.json:
        print(json.dumps([_as_json(event) for event in events], indent=2))
        return EXIT_OK
    print(f"{'job':<36}  {'tenant':<16} {'type':<13} {'status':<9} {'tries':>5}  url  next; last")
    for event in events:
        # the URL and the receiver's answer are outside text: escaped, so neither can
        # move the terminal's cursor or fake a line
        print(escaped(_line(event)))
    return EXIT_OK


def _line(event: CallbackEvent) -> str:
    pending = event.status is CallbackStatus.PENDING
    due = f"next {event.next_attempt_at.isoformat(timespec='seconds')}" if pending else ""
    last = event.attempts[-1] if event.attempts else None
    shown = "never tried" if last is None else _attempt_text(last)
    return (
        f"{event.job_id:<36}  {event.tenant:<16} {event.type:<13} {event.status.value:<9} "
        f"{event.tries:>5}  {event.url}  {due}{'; ' if due else ''}last {shown}"
    )


def _attempt_text(attempt: Attempt) -> str:
    answered = "-" if attempt.status_code is None else str(attempt.status_code)
    said = (attempt.error or attempt.answer)[:SHOWN_ANSWER_CHARS]
    return f"{attempt.at.isoformat(timespec='seconds')} {answered}{' ' if said else ''}{said}"


def _as_json(event: CallbackEvent) -> dict[str, Any]:
    return {
        "jobId": event.job_id,
        "webhookId": event.webhook_id,
        "tenant": event.tenant,
        "url": event.url,
        "type": event.type,
        "status": event.status.value,
        "tries": event.tries,
        "createdAt": event.created_at.isoformat(),
        "nextAttemptAt": (
            event.next_attempt_at.isoformat() if event.status is CallbackStatus.PENDING else None
        ),
        "deliveredAt": None if event.delivered_at is None else event.delivered_at.isoformat(),
        "attempts": [
            {
                "at": a.at.isoformat(),
                "statusCode": a.status_code,
                "latencyMs": a.latency_ms,
                "answer": a.answer,
                "error": a.error,
            }
            for a in event.attempts
        ],
    }


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.job_ids) == (args.since is not None):
        raise _BadArgument("ID|--since", "one_of", "give the events' job ids or --since, not both")
    since = None if args.since is None else _timestamp("--since", args.since)
    store = JobStore.from_settings(settings)
    try:
        outbox = CallbackOutbox(store.engine)
        replayed = outbox.replay(args.job_ids, since=since)
        left = [job_id for job_id in args.job_ids if job_id not in replayed]
        for job_id in left:
            why = "no callback event" if outbox.get(job_id) is None else "still being delivered"
            print(f"error: {escaped(job_id)}: not replayed: {why}", file=sys.stderr)
    finally:
        store.engine.dispose()
    _publish(settings, replayed)
    print(f"replayed {len(replayed)} callback event{'' if len(replayed) == 1 else 's'}")
    return EXIT_NOT_REPLAYED if left else EXIT_OK


def _publish(settings: Settings, job_ids: Sequence[str]) -> None:
    """Ask the workers for an attempt of each replayed event now, by task name (the
    delivery task is the worker's); an event whose message is lost is due all the same,
    so beat's drive sends it within FLUXFARM_CALLBACK_DRIVE_INTERVAL_S."""
    if not job_ids:
        return
    celery = BrokerCelery("fluxfarm.cli", set_as_current=False)
    celery.conf.update(celery_config(settings))
    try:
        with celery.producer_or_acquire() as producer:
            for job_id in job_ids:
                celery.send_task(
                    DELIVER_TASK, args=(job_id,), queue=CALLBACK_QUEUE, producer=producer
                )
    # whatever the transport raised: the events are due in the store and beat sends them
    except Exception as exc:
        print(
            f"warning: not sent to the workers ({type(exc).__name__}); beat's drive sends "
            "them as it sends every due event",
            file=sys.stderr,
        )
    finally:
        celery.close()
