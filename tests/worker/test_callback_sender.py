"""The callback sender against real HTTP receivers: signatures that the Standard Webhooks
reference library verifies, and hostile endpoints (disallowed, private, redirecting,
slow, trickling, huge) refused or bounded, each attempt saying why."""

from __future__ import annotations

import itertools
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from farmdomain.callbacks import body, event_id, new_secret
from farmdomain.settings import Settings
from tests.worker.conftest import SECRET, Receiver
from worker.callbacks import CallbackSender, Outgoing

PREVIOUS = new_secret()


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


def _hook(url: str, secrets: list[str], tenant: str = "acme") -> Outgoing:
    return Outgoing(url, tenant, WEBHOOK_ID, EVENT, secrets)


def test_a_callback_verifies_with_the_reference_library_under_either_secret(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    found, url = receiver
    sender = _sender(tmp_path, url)
    try:
        [first] = sender.send([_hook(f"{url}/hook", [SECRET])])
        # during a rotation both secrets sign: a receiver still on the old one verifies too
        found.secret = PREVIOUS
        [second] = sender.send([_hook(f"{url}/hook", [SECRET, PREVIOUS])])
        [wrong] = sender.send([_hook(f"{url}/hook", [new_secret()])])
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


HOSTILE = [
    ("/gone", 410, None, ""),
    ("/broken", 500, None, "database is down"),
    ("/redirect", 307, "redirect to '/hook' not followed", ""),
    ("/slow", None, "timeout: no whole answer within 1s", ""),
    ("/trickle", None, "timeout: no whole answer within 1s", ""),
    ("/huge", 200, None, "xxxx"),
]


def test_hostile_endpoints_sent_together_are_each_bounded_and_each_attempt_says_why(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    found, url = receiver
    sender = _sender(tmp_path, url)
    try:
        attempts = sender.send([_hook(f"{url}{path}", [SECRET]) for path, *_ in HOSTILE])
    finally:
        sender.close()
    for attempt, (_path, status, error, answer) in zip(attempts, HOSTILE, strict=True):
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
        attempts = sender.send(
            [
                _hook(target, [SECRET], tenant)
                for target, tenant in [
                    (f"http://127.0.0.2:{port}/hook", "acme"),
                    ("http://169.254.169.254/latest/meta-data", "acme"),
                    ("http://rebound.example.com/hook", "acme"),
                    ("http://rebound.example.com/hook", "globex"),
                    (f"{url}/hook", "acme"),
                ]
            ]
        )
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


class KeepAliveServer:
    """A raw HTTP/1.1 server counting its connections: it answers every request kept alive,
    except that with `drop_second` it closes a connection at its second request unanswered,
    as a server does that timed an idle connection out just as it was reused."""

    def __init__(self, drop_second: bool) -> None:
        self.drop_second = drop_second
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            for served in itertools.count():
                if not stream.readline():  # the request line, or the end of the connection
                    return
                length = 0
                for line in iter(stream.readline, b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                stream.read(length)
                if self.drop_second and served == 1:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def close(self) -> None:
        self._listener.close()


@pytest.mark.parametrize("drop_second", [False, True])
def test_connections_are_kept_alive_and_one_closed_while_kept_is_sent_again_on_a_new_one(
    tmp_path: Path, drop_second: bool
) -> None:
    server = KeepAliveServer(drop_second)
    sender = _sender(tmp_path, server.url.removesuffix("/hook"))
    try:
        attempts = [sender.send([_hook(server.url, [SECRET])])[0] for _ in range(3)]
    finally:
        sender.close()
        server.close()
    assert [(a.status_code, a.answer, a.error) for a in attempts] == [(200, "ok", None)] * 3
    # kept alive: one connection for all three; dropping each at its second request, the
    # second and the third attempt each found their kept connection closed and made another
    assert server.connections == (3 if drop_second else 1)
