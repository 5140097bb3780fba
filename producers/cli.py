"""The producer commands of `fluxfarm`: submit, status, wait, cancel, download and migrate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from farmdomain.admission import DEFAULT_PRIORITY, PRIORITY_MAX, PRIORITY_MIN
from farmdomain.errors import (
    ConfigurationError,
    RequestInvalid,
    RequestRejected,
    StoreUnavailable,
    WaitTimedOut,
)
from farmdomain.jobs import Job, JobState
from farmdomain.logs import configure_logging
from farmdomain.settings import Settings, get_settings
from farmdomain.text import escaped
from farmdomain.views import JobView
from jobstore.api_tokens import ApiTokenStore
from jobstore.engine import make_engine
from jobstore.migrations import upgrade
from jobstore.statements import store_unavailable
from jobstore.store import JobStore
from producers import callbacks_cli, download_cli, results_cli, spend_cli, tenants_cli
from producers.client import FluxfarmClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REJECTED = 2
EXIT_TIMED_OUT = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130  # a shell's convention for a command stopped by Ctrl-C
DEFAULT_WAIT_S = 300.0

Handler = Callable[[argparse.Namespace], int]

# flag destination -> where the value goes in Runware's parameters
_REQUEST_FLAGS: dict[str, tuple[str, ...]] = {
    "prompt": ("positivePrompt",),
    "width": ("width",),
    "height": ("height",),
    "seed": ("seed",),
    "number_results": ("numberResults",),
    "output_type": ("outputType",),
    "output_format": ("outputFormat",),
    "output_quality": ("outputQuality",),
    "reference_image": ("inputs", "referenceImages"),
    "prompt_upsampling": ("providerSettings", "bfl", "promptUpsampling"),
    "safety_tolerance": ("providerSettings", "bfl", "safetyTolerance"),
}


def add_commands(subparsers: Any) -> None:
    """Register the producer commands on a parser's subparsers (from add_subparsers())."""
    submit = subparsers.add_parser("submit", help="queue a FLUX.2 [pro] generation job")
    params = submit.add_argument_group(
        "request", "Runware parameters; flags override the same fields of --request-json"
    )
    params.add_argument("--request-json", metavar="FILE|-", help="full Runware parameters")
    params.add_argument("--prompt", help="positivePrompt")
    params.add_argument("--width", type=int)
    params.add_argument("--height", type=int)
    params.add_argument("--seed", type=int)
    params.add_argument("--number-results", type=int, metavar="N")
    params.add_argument("--output-type", metavar="URL|base64Data|dataURI")
    params.add_argument("--output-format", metavar="JPG|PNG|WEBP")
    params.add_argument("--output-quality", type=int, metavar="20-99")
    params.add_argument(
        "--reference-image",
        action="append",
        metavar="UUID|URL|DATA",
        help="inputs.referenceImages; repeat for several",
    )
    params.add_argument("--prompt-upsampling", action=argparse.BooleanOptionalAction)
    params.add_argument("--safety-tolerance", type=int, metavar="0-6")
    _add_queue_options(submit)
    submit.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"wait for the job to finish (default {DEFAULT_WAIT_S:g} s); exit as `wait` does",
    )
    submit.add_argument("--json", action="store_true", help="print the job as JSON")
    _add_tenant(submit, "the tenant the job is recorded under (default: default)")
    submit.set_defaults(handler=_submit)

    status = subparsers.add_parser("status", help="show a job: state, images, cost, events")
    status.add_argument("job_id", metavar="JOB")
    status.add_argument("--json", action="store_true", help="print the job as JSON")
    _add_tenant(status, _JOB_TENANT_HELP)
    status.set_defaults(handler=_status)

    wait = subparsers.add_parser(
        "wait", help="wait for a job: exit 0 succeeded, 1 failed or canceled, 3 timed out"
    )
    wait.add_argument("job_id", metavar="JOB")
    wait.add_argument("--timeout", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS")
    wait.add_argument("--json", action="store_true", help="print the job as JSON")
    _add_tenant(wait, _JOB_TENANT_HELP)
    wait.set_defaults(handler=_wait)

    cancel = subparsers.add_parser("cancel", help="cancel a job that has not finished")
    cancel.add_argument("job_id", metavar="JOB")
    cancel.add_argument("--json", action="store_true", help="print the job as JSON")
    _add_tenant(cancel, _JOB_TENANT_HELP)
    cancel.set_defaults(handler=_cancel)

    retry = subparsers.add_parser(
        "retry", help="queue a failed job again as a new job linked to it"
    )
    retry.add_argument("job_id", metavar="JOB")
    retry.add_argument("--json", action="store_true", help="print the new job as JSON")
    _add_tenant(retry, _JOB_TENANT_HELP)
    retry.set_defaults(handler=_retry)

    migrate = subparsers.add_parser("migrate", help="bring the job store to the newest schema")
    migrate.set_defaults(handler=_migrate)

    for commands in (spend_cli, download_cli, results_cli, callbacks_cli, tenants_cli):
        commands.add_command(subparsers)
    _add_token_commands(subparsers)


def _add_queue_options(command: Any) -> None:
    """How the job is queued: its identity, deadline, priority and callback."""
    command.add_argument("--idempotency-key", help="the same key always names the same job")
    command.add_argument("--deadline", type=float, metavar="SECONDS", help="time to finish")
    command.add_argument(
        "--priority",
        type=int,
        default=DEFAULT_PRIORITY,
        metavar=f"{PRIORITY_MIN}..{PRIORITY_MAX}",
        help="inside the tenant, a higher priority is admitted first (default 0)",
    )
    command.add_argument(
        "--callback-url", metavar="URL", help="POST the job's terminal event here, signed"
    )


_JOB_TENANT_HELP = "the job's tenant (default: whichever tenant the job belongs to)"


def _add_tenant(command: Any, help_text: str) -> None:
    command.add_argument("--tenant", metavar="TENANT", help=help_text)


def _add_token_commands(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="job API bearer tokens: create, list, revoke")
    actions = token.add_subparsers(dest="token_command", required=True)
    create = actions.add_parser(
        "create", help="make a token for a calling service; it is printed once, never stored"
    )
    create.add_argument("tenant", metavar="TENANT", help="the name its jobs are recorded under")
    create.add_argument("--label", help="what holds the token (default: the tenant)")
    create.add_argument("--read-only", action="store_true", help="may read jobs, not create")
    create.set_defaults(handler=_token_create)
    listing = actions.add_parser("list", help="tokens by id, tenant and label; never the token")
    listing.add_argument("--tenant", metavar="TENANT")
    listing.set_defaults(handler=_token_list)
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    revoke.set_defaults(handler=_token_revoke)


def main(argv: list[str] | None = None) -> int:
    """`fluxfarm` with the producer commands only."""
    parser = argparse.ArgumentParser(prog="fluxfarm", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line; a store that cannot be reached or a setting that cannot
    work is one line on stderr and EXIT_UNAVAILABLE, never a traceback (the driver's text
    names the store's host and port), and Ctrl-C is EXIT_INTERRUPTED."""
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SQLAlchemyError as exc:
        failure: Exception = store_unavailable(exc)
    except (StoreUnavailable, ConfigurationError) as exc:
        failure = exc
    print(f"error: {escaped(str(failure))}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def _rejected(exc: RequestRejected) -> int:
    if isinstance(exc, RequestInvalid):
        for issue in exc.issues:
            print(f"{issue.field}: {issue.rule}: {issue.message}", file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_REJECTED


def _with_settings(run: Callable[[argparse.Namespace, Settings], int]) -> Handler:
    """A handler with the environment's settings and the process's logging set up.

    Logging is configured here rather than in main() so that every command line that
    registers these commands (see add_commands) logs the same way, to stderr.
    """

    def handler(args: argparse.Namespace) -> int:
        settings = get_settings()
        configure_logging(settings, "cli")
        return run(args, settings)

    return handler


def _with_client(run: Callable[[argparse.Namespace, FluxfarmClient], int]) -> Handler:
    """A handler with a client for the job's tenant, refusals on stderr.

    The operator's command line reaches every tenant's jobs: the tenant is --tenant, or
    for a command about one job, the tenant that job belongs to.
    """

    @_with_settings
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        store = JobStore.from_settings(settings)
        try:
            with FluxfarmClient(settings, tenant=_tenant_of(args, store), store=store) as client:
                return run(args, client)
        except RequestRejected as exc:
            return _rejected(exc)
        finally:
            store.engine.dispose()

    return handler


def _tenant_of(args: argparse.Namespace, store: JobStore) -> str:
    if args.tenant is not None:
        return str(args.tenant)
    job_id = getattr(args, "job_id", None)
    return "default" if job_id is None else store.get(job_id).tenant


def _request_from(args: argparse.Namespace) -> Any:
    request: Any = {}
    if args.request_json is not None:
        source = args.request_json
        request = json.loads(sys.stdin.read() if source == "-" else Path(source).read_text())
    for dest, path in _REQUEST_FLAGS.items():
        value = getattr(args, dest)
        if value is None or not isinstance(request, dict):
            continue
        node = request
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return request


def _show(job: Job, as_json: bool) -> None:
    print(JobView.from_job(job).model_dump_json(indent=2) if as_json else _summary(job))


def _await(client: FluxfarmClient, job_id: str, timeout: float, as_json: bool) -> int:
    try:
        job = client.wait(job_id, timeout)
    except WaitTimedOut as exc:
        print(exc, file=sys.stderr)
        return EXIT_TIMED_OUT
    _show(job, as_json)
    return EXIT_OK if job.state is JobState.SUCCEEDED else EXIT_FAILED


@_with_client
def _submit(args: argparse.Namespace, client: FluxfarmClient) -> int:
    try:
        request = _request_from(args)
    except (OSError, ValueError) as exc:
        print(f"request-json: json: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    job_id = client.submit(
        request, args.idempotency_key, args.deadline, args.callback_url, args.priority
    )
    if args.wait is not None:
        if not args.json:
            print(job_id)
        return _await(client, job_id, args.wait, args.json)
    print(JobView.from_job(client.get(job_id)).model_dump_json(indent=2) if args.json else job_id)
    return EXIT_OK


@_with_client
def _status(args: argparse.Namespace, client: FluxfarmClient) -> int:
    _show(client.get(args.job_id), args.json)
    return EXIT_OK


@_with_client
def _wait(args: argparse.Namespace, client: FluxfarmClient) -> int:
    return _await(client, args.job_id, args.timeout, args.json)


@_with_client
def _cancel(args: argparse.Namespace, client: FluxfarmClient) -> int:
    _show(client.cancel(args.job_id), args.json)
    return EXIT_OK


@_with_client
def _retry(args: argparse.Namespace, client: FluxfarmClient) -> int:
    job = client.retry(args.job_id)
    print(f"retrying {args.job_id} as {job.id}", file=sys.stderr)
    _show(job, args.json)
    return EXIT_OK


@_with_settings
def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    upgrade(settings.resolved_database_url())
    print("job store schema is up to date")
    return EXIT_OK


def _with_tokens(run: Callable[[argparse.Namespace, ApiTokenStore], int]) -> Handler:
    @_with_settings
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        engine = make_engine(settings.resolved_database_url())
        try:
            return run(args, ApiTokenStore(engine))
        except RequestRejected as exc:
            return _rejected(exc)
        finally:
            engine.dispose()

    return handler


@_with_tokens
def _token_create(args: argparse.Namespace, tokens: ApiTokenStore) -> int:
    record, token = tokens.create(
        args.tenant, args.label or args.tenant, can_write=not args.read_only
    )
    print(f"token {record.id} for tenant {record.tenant}; shown this once:", file=sys.stderr)
    print(token)
    return EXIT_OK


@_with_tokens
def _token_list(args: argparse.Namespace, tokens: ApiTokenStore) -> int:
    for record in tokens.tokens(args.tenant):
        access = "read-write" if record.can_write else "read-only"
        revoked = f"revoked {record.revoked_at.isoformat()}" if record.revoked_at else "active"
        print(f"{record.id}  {record.tenant:<20} {access:<10} {revoked:<40} {record.label}")
    return EXIT_OK


@_with_tokens
def _token_revoke(args: argparse.Namespace, tokens: ApiTokenStore) -> int:
    if not tokens.revoke(args.token_id):
        print(f"error: no active token {args.token_id}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"token {args.token_id} revoked")
    return EXIT_OK


def _summary(job: Job) -> str:
    """A job as an operator reads it: outcome first, then what came back, then the timeline."""
    lines = [
        f"job {job.id}: {job.state.value}",
        f"  taskUUID  {job.task_uuid}",
        f"  tenant    {job.tenant}",
        f"  images    {job.images_received}/{job.number_results}",
        f"  cost      ${format(job.cost_usd, 'f')}",
        f"  attempts  {job.attempts}",
        f"  priority  {job.priority}",
        f"  deadline  {job.deadline_at.isoformat()}",
    ]
    if job.failure_reason is not None:
        parameter = f" (parameter {job.failure_parameter})" if job.failure_parameter else ""
        lines.append(
            f"  failure   {job.failure_reason}: {job.failure_code or '-'}: "
            f"{job.failure_message or ''}{parameter}"
        )
    for image in job.images:
        late = " late" if image.late else ""
        where = image.image_url or ("inline data" if image.has_inline_data else "-")
        lines.append(f"  image     {image.image_uuid} {where} seed={image.seed}{late}")
    if job.events:
        lines.append("events:")
    for event in job.events:
        move = f"{event.from_state or '-'} -> {event.to_state or '-'}"
        detail = f" {json.dumps(event.detail, sort_keys=True)}" if event.detail else ""
        lines.append(f"  {event.at.isoformat()}  {event.kind:<12} {move}{detail}")
    # each line holds text from outside (Runware's errors, webhook bodies): escaped, so
    # none can move the terminal's cursor or fake a line
    return "\n".join(escaped(line) for line in lines)


if __name__ == "__main__":
    sys.exit(main())
