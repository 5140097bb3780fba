"""Limits on the job API in front of every route: request rate, body size, time, nesting.

Each breach is answered 4xx in the API's error shape, before authentication or parsing
spend anything on it, and counted in `fluxfarm_requests_rejected_total{surface="api"}`.
Webhooks are left to their receiver: Runware's retries must not be rate-limited, and
their larger body limit is enforced there (FLUXFARM_WEBHOOK_MAX_BODY_BYTES).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farmdomain import metrics
from farmdomain.errors import FieldIssue, LimitExceeded
from farmdomain.settings import Settings
from farmdomain.views import ErrorBody

API_PREFIX = "/v1/"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# one bucket per client address; the oldest are forgotten so a spray of addresses is bounded
MAX_TRACKED_CLIENTS = 10_000
# a string literal (skipped whole, escapes included) or one bracket
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_too_deep(raw: bytes, limit: int) -> bool:
    """True when arrays and objects in `raw` nest deeper than `limit`.

    A scan, not a parse: it runs before the decoder so a hostile depth never reaches a
    recursive parser, and it is linear in the size, which the body limit already caps.
    """
    depth = 0
    for match in _JSON_TOKEN.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


class RateLimiter:
    """Token buckets per client: `rate` requests a second sustained, `burst` at once."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 if `client` may go now, else the seconds until it may."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
            return wait


class RequestLimits:
    """ASGI middleware applying the limits of `settings` to the job API's routes."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.rates = RateLimiter(settings.api_rate_per_s, settings.api_rate_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        try:
            client = scope["client"][0] if scope.get("client") else "unknown"
            wait = self.rates.take(client)
            if wait:
                headers["Retry-After"] = str(max(1, round(wait)))
                raise LimitExceeded("rate", 429, "too many requests from this client")
            if scope["method"] in _WITH_BODY:
                body = await self._read_body(scope, receive)
                receive = _replay(body, receive)
        except LimitExceeded as exc:
            await _refuse(send, exc, headers)
            return
        await self.app(scope, receive, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.api_max_body_bytes
        too_large = LimitExceeded("too_large", 413, f"body over {limit} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.api_body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError as exc:
            timeout = self.settings.api_body_timeout_s
            raise LimitExceeded("slow_body", 408, f"body not sent within {timeout:g}s") from exc
        body = b"".join(chunks)
        if json_too_deep(body, self.settings.api_max_json_depth):
            depth = self.settings.api_max_json_depth
            raise LimitExceeded("too_deep", 400, f"JSON nested over {depth} levels")
        return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body to the app, then the server's own."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(send: Send, exc: LimitExceeded, extra: dict[str, str]) -> None:
    metrics.metrics().requests_rejected.labels("api", exc.reason).inc()
    body = ErrorBody.of([FieldIssue("body", exc.reason, str(exc))]).model_dump(mode="json")
    payload = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        # the unread rest of a refused body would otherwise be taken as the next request
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
