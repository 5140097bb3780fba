"""Sending callbacks: one signed POST per attempt, to allowed hosts only, no redirects
followed, the whole exchange and the answer's size bounded; every attempt described.

The exchange runs on one event loop per worker process, on its own thread, with one
connection pool: asyncio bounds the whole attempt (a receiver trickling its answer a byte
at a time cannot hold a worker thread past FLUXFARM_CALLBACK_TIMEOUT_S), which a blocking
client's per-read timeouts cannot.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx
from standardwebhooks import Webhook

from farmdomain.callbacks import Attempt, url_issues
from farmdomain.settings import Settings
from farmdomain.values import utcnow

# what an attempt keeps of the answer, or of the error
KEPT_ANSWER_CHARS = 256
USER_AGENT = "fluxfarm-callbacks/0.1"

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


class CallbackSender:
    """Delivers callbacks under the rules of `settings`; one per worker process."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve) -> None:
        self.settings = settings
        self._resolve = resolver
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="callbacks", daemon=True
        )
        self._thread.start()
        self._http = self._run(self._client())

    async def _client(self) -> httpx.AsyncClient:
        timeout = self.settings.callback_timeout_s
        return httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, self.settings.connect_timeout_s)),
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        )

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        self._run(self._http.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def send(
        self, url: str, tenant: str, webhook_id: str, body: bytes, secrets: Sequence[str]
    ) -> Attempt:
        """POST `body` to `url`, signed; what happened, whatever it was."""
        at = utcnow()
        started = time.perf_counter()

        def attempt(status: int | None, answer: str, error: str | None = None) -> Attempt:
            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            return Attempt(at, status, latency_ms, answer[:KEPT_ANSWER_CHARS], error)

        try:
            self._check(url, tenant)
        except Refused as exc:
            return attempt(None, "", f"refused: {exc}")
        headers = signed_headers(webhook_id, at, body, secrets)
        try:
            status, answer, error = self._run(self._exchange(url, body, headers))
        except TimeoutError:
            limit = self.settings.callback_timeout_s
            return attempt(None, "", f"timeout: no whole answer within {limit:g}s")
        except httpx.HTTPError as exc:
            return attempt(None, "", f"{type(exc).__name__}: {exc}"[:KEPT_ANSWER_CHARS])
        return attempt(status, answer, error)

    async def _exchange(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, str | None]:
        limit = self.settings.callback_max_answer_bytes
        async with (
            asyncio.timeout(self.settings.callback_timeout_s),
            self._http.stream("POST", url, content=body, headers=headers) as response,
        ):
            kept = bytearray()
            async for chunk in response.aiter_raw():
                kept += chunk
                if len(kept) >= limit:
                    # enough to keep: the rest is not waited for
                    break
            answer = bytes(kept[:limit]).decode(errors="replace")
            error = None
            if response.is_redirect:
                location = response.headers.get("location", "")
                error = f"redirect to {location[:100]!r} not followed"
            return response.status_code, answer, error

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
