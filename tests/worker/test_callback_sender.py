"""The callback sender against real HTTP receivers: signatures that the Standard Webhooks
reference library verifies, and hostile endpoints (disallowed, private, redirecting,
slow, trickling, huge) refused or bounded, each attempt saying why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from farmdomain.callbacks import body, event_id, new_secret
from farmdomain.settings import Settings
from tests.http_servers import serve_asgi
from worker.callbacks import CallbackSender

SECRET = new_secret()
PREVIOUS = new_secret()


@dataclass
class Receiver:
    """A service's endpoint: verifies each callback with the reference library."""

    secret: str = SECRET
    verified: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.hits.append(request.url.path)
            raw = await request.body()
            try:
                payload = Webhook(self.secret).verify(raw, dict(request.headers))
            except WebhookVerificationError as exc:
                self.refused.append(str(exc))
                return JSONResponse({"error": str(exc)}, 400)
            self.verified.append(payload)
            return JSONResponse({"ok": True})

        async def gone(_: Request) -> Response:
            return Response(status_code=410)

        async def broken(_: Request) -> Response:
            return Response("database is down " * 100, status_code=500)

        async def redirect(_: Request) -> Response:
            return Response(status_code=307, headers={"Location": "/hook"})

        async def slow(_: Request) -> Response:
            await asyncio.sleep(5)
            return Response("late")

        async def trickle(_: Request) -> Response:
            async def drip() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield b"."
                    await asyncio.sleep(0.1)

            return StreamingResponse(drip())

        async def huge(_: Request) -> Response:
            return Response(b"x" * 10_000_000)

        routes = [("/hook", hook), ("/gone", gone), ("/broken", broken)]
        routes += [("/redirect", redirect), ("/slow", slow), ("/trickle", trickle)]
        routes += [("/huge", huge)]
        return Starlette(routes=[Route(path, run, methods=["POST"]) for path, run in routes])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    found = Receiver()
    with serve_asgi(found.app()) as url:
        yield found, url


def _sender(tmp_path: Path, url: str, **overrides: Any) -> CallbackSender:
    port = url.rsplit(":", 1)[1]
    settings = Settings(
        data_dir=tmp_path,
        callback_allowed_hosts=f"127.0.0.1:{port}",
        callback_timeout_s=1.0,
        **overrides,
    )
    return CallbackSender(settings)


EVENT = body("job.succeeded", datetime(2030, 1, 1, tzinfo=UTC), {"id": "j1", "state": "x"})
WEBHOOK_ID = event_id("0b8c3d2e-1f4a-4b5c-9d6e-7f8a9b0c1d2e")


def test_a_callback_verifies_with_the_reference_library_under_either_secret(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    found, url = receiver
    sender = _sender(tmp_path, url)
    try:
        first = sender.send(f"{url}/hook", "acme", WEBHOOK_ID, EVENT, [SECRET])
        # during a rotation both secrets sign: a receiver still on the old one verifies too
        found.secret = PREVIOUS
        second = sender.send(f"{url}/hook", "acme", WEBHOOK_ID, EVENT, [SECRET, PREVIOUS])
        wrong = sender.send(f"{url}/hook", "acme", WEBHOOK_ID, EVENT, [new_secret()])
    finally:
        sender.close()
    assert (first.delivered, second.delivered) == (True, True)
    assert first.answer == '{"ok":true}'
    assert (
        found.verified
        == [
            {
                "type": "job.succeeded",
                "timestamp": "2030-01-01T00:00:00+00:00",
                "data": {"id": "j1", "state": "x"},
            }
        ]
        * 2
    )
    assert (wrong.status_code, wrong.delivered) == (400, False)
    assert found.refused == ["No matching signature found"]


@pytest.mark.parametrize(
    ("path", "status", "error", "answer"),
    [
        ("/gone", 410, None, ""),
        ("/broken", 500, None, "database is down"),
        ("/redirect", 307, "redirect to '/hook' not followed", ""),
        ("/slow", None, "timeout: no whole answer within 1s", ""),
        ("/trickle", None, "timeout: no whole answer within 1s", ""),
        ("/huge", 200, None, "xxxx"),
    ],
)
def test_hostile_endpoints_are_bounded_and_each_attempt_says_why(
    receiver: tuple[Receiver, str],
    tmp_path: Path,
    path: str,
    status: int | None,
    error: str | None,
    answer: str,
) -> None:
    found, url = receiver
    sender = _sender(tmp_path, url)
    try:
        attempt = sender.send(f"{url}{path}", "acme", WEBHOOK_ID, EVENT, [SECRET])
    finally:
        sender.close()
    assert (attempt.status_code, attempt.error) == (status, error)
    assert attempt.answer.startswith(answer)
    assert len(attempt.answer) <= 256
    assert attempt.gone is (status == 410)
    assert attempt.delivered is (status == 200)
    # a slow or trickling endpoint holds an attempt no longer than its bound
    assert attempt.latency_ms < 4000
    assert found.hits == []  # /hook, where the redirect points, was never called


def test_urls_off_the_allow_list_or_on_private_addresses_are_never_called(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    found, url = receiver
    port = url.rsplit(":", 1)[1]
    settings = Settings(
        data_dir=tmp_path,
        callback_allowed_hosts=f"hooks.example.com,127.0.0.1:{port}",
        callback_tenant_hosts={"acme": ["rebound.example.com"]},
    )
    addresses = {"hooks.example.com": ["93.184.216.34"], "rebound.example.com": ["10.0.3.7"]}
    sender = CallbackSender(settings, resolver=lambda host, _port: addresses[host])
    try:
        attempts = [
            sender.send(target, tenant, WEBHOOK_ID, EVENT, [SECRET])
            for target, tenant in [
                (f"http://127.0.0.2:{port}/hook", "acme"),
                ("http://169.254.169.254/latest/meta-data", "acme"),
                ("http://rebound.example.com/hook", "acme"),
                ("http://rebound.example.com/hook", "globex"),
                (f"{url}/hook", "acme"),
            ]
        ]
    finally:
        sender.close()
    errors = [a.error for a in attempts]
    assert errors[0] == f"refused: host 127.0.0.2:{port} is not allowed for callbacks" + (
        " (FLUXFARM_CALLBACK_ALLOWED_HOSTS, FLUXFARM_CALLBACK_TENANT_HOSTS)"
    )
    assert "169.254.169.254:80 is not allowed" in str(errors[1])
    assert errors[2] == "refused: rebound.example.com resolves to the non-public address 10.0.3.7"
    assert "not allowed" in str(errors[3])
    assert errors[4] is None
    assert found.hits == ["/hook"]
    assert all(a.status_code is None for a in attempts[:4])
