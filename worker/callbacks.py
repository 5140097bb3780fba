"""Sending callbacks: one signed POST per attempt, to allowed hosts only, no redirects
followed, the whole exchange and the answer's size bounded; every attempt described.

The exchanges run on one event loop per worker process, on its own thread, over its own
keep-alive connections (worker/callback_connections.py), a batch's all at once: asyncio
bounds each whole attempt (a receiver trickling its answer a byte at a time cannot hold a
worker thread past FLUXFARM_CALLBACK_TIMEOUT_S), which a blocking client's per-read
timeouts cannot.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import h11
import httpx
from standardwebhooks import Webhook

from farmdomain.callbacks import Attempt, url_issues
from farmdomain.settings import Settings
from farmdomain.values import utcnow
from worker.callback_connections import Connections

# what an attempt keeps of the answer, or of the error
KEPT_ANSWER_CHARS = 256
USER_AGENT = "fluxfarm-callbacks/0.1"
HEADERS = [("User-Agent", USER_AGENT), ("Content-Type", "application/json")]
# callbacks a batch sends together, and batches a worker process sends at once
BATCH_MAX = 50
BATCHES_AT_ONCE = 2

Resolver = Callable[[str, int], list[str]]
T = TypeVar("T")


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


def signed_headers(
    webhook_id: str, at: datetime, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """Standard Webhooks' headers, signed by each of `secrets` (two during a rotation)."""
    text = body.decode()
    signatures = " ".join(Webhook(secret).sign(webhook_id, at, text) for secret in secrets)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


class Refused(Exception):
    """A callback URL this farm will not call, with the reason."""


@dataclass(frozen=True)
class Outgoing:
    """One callback to send: where, whose, its webhook-id, its body, the secrets signing it."""

    url: str
    tenant: str
    webhook_id: str
    body: bytes
    secrets: Sequence[str]


class CallbackSender:
    """Delivers callbacks under the rules of `settings`; one per worker process.

    `turns` is taken by a batch before it claims its events and held until they are
    recorded: at most BATCHES_AT_ONCE batches send at once, so that a process asks at most
    BATCH_MAX * BATCHES_AT_ONCE exchanges of receivers at a time, and a batch waiting for
    its turn has claimed nothing yet, whose lease its wait would eat into."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.turns = threading.BoundedSemaphore(BATCHES_AT_ONCE)
        self._resolve = resolver
        connect_s = min(settings.callback_timeout_s, settings.connect_timeout_s)
        self._connections = Connections(connect_s, httpx.create_ssl_context())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="callbacks", daemon=True
        )
        self._thread.start()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        self._run(self._connections.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def send(self, outgoing: Sequence[Outgoing]) -> list[Attempt]:
        """POST each of `outgoing` to its URL, signed, all at once; what happened to each,
        whatever it was, in the same order."""
        refusals = {key: self._refusal(*key) for key in {(o.url, o.tenant) for o in outgoing}}
        return self._run(self._attempts(outgoing, [refusals[o.url, o.tenant] for o in outgoing]))

    async def _attempts(
        self, outgoing: Sequence[Outgoing], refusals: Sequence[str | None]
    ) -> list[Attempt]:
        return list(
            await asyncio.gather(
                *(self._attempt(o, refused) for o, refused in zip(outgoing, refusals, strict=True))
            )
        )

    async def _attempt(self, outgoing: Outgoing, refused: str | None) -> Attempt:
        at = utcnow()
        started = time.perf_counter()

        def attempt(status: int | None, answer: str, error: str | None = None) -> Attempt:
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            return Attempt(at, status, latency_ms, answer[:KEPT_ANSWER_CHARS], error)

        if refused is not None:
            return attempt(None, "", f"refused: {refused}")
        signed = signed_headers(outgoing.webhook_id, at, outgoing.body, outgoing.secrets)
        headers = [*HEADERS, *signed.items()]
        limit_s = self.settings.callback_timeout_s
        try:
            async with asyncio.timeout(limit_s):
                answer = await self._connections.post(
                    outgoing.url, headers, outgoing.body, self.settings.callback_max_answer_bytes
                )
        except TimeoutError:
            return attempt(None, "", f"timeout: no whole answer within {limit_s:g}s")
        except (OSError, h11.ProtocolError) as exc:
            return attempt(None, "", f"{type(exc).__name__}: {exc}"[:KEPT_ANSWER_CHARS])
        error = None
        if answer.location is not None:
            error = f"redirect to {answer.location[:100]!r} not followed"
        return attempt(answer.status, answer.body.decode(errors="replace"), error)

    def _refusal(self, url: str, tenant: str) -> str | None:
        try:
            self._check(url, tenant)
        except Refused as exc:
            return str(exc)
        return None

    def _check(self, url: str, tenant: str) -> None:
        """The allow-list (it may have changed since the job was queued), and the address:
        a name must resolve to public addresses only; a private or loopback address is
        called only when the operator listed that very address (or `localhost`)."""
        issues = url_issues(url, tenant, self.settings)
        if issues:
            raise Refused(issues[0].message)
        parsed = httpx.URL(url)
        host = parsed.host.lower()
        if host == "localhost" or _is_literal(host):
            return
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = self._resolve(host, port)
        except OSError as exc:
            raise Refused(f"{host} does not resolve") from exc
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                raise Refused(f"{host} resolves to the non-public address {address}")


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
