"""Limits on the job API in front of every route: request rate, body size, time, nesting.

Each breach is answered 4xx in the API's error shape, before authentication or parsing
spend anything on it, and counted in `fluxfarm_requests_rejected_total{surface="api"}`.
Every answer of the job API carries the caller's RateLimit-Limit, -Remaining and -Reset.
Webhooks are left to their receiver: Runware's retries must not be rate-limited, and
their larger body limit is enforced there (FLUXFARM_WEBHOOK_MAX_BODY_BYTES).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import OrderedDict

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farmdomain import metrics
from farmdomain.errors import FieldIssue, LimitExceeded
from farmdomain.settings import Settings
from farmdomain.views import ErrorBody
from farmweb.buckets import Buckets, Decision, LocalBuckets, RedisBuckets
from jobstore.api_tokens import digest

API_PREFIX = "/v1/"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# tokens remembered as working, per process; the least recently seen are forgotten
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


class RequestLimits:
    """ASGI middleware applying the limits of `settings` to the job API's routes.

    Rates are per caller: a bearer token's bucket is its own (keyed by the token's
    digest, as the store knows it, so nothing is looked up first), and a caller without
    one has its address's. Every web process of a farm draws from the same buckets
    (farmweb.buckets). An address whose requests keep failing authentication also has a
    bucket of failures: once it is empty, its requests with tokens not yet seen to work are
    refused before they reach the token lookup, so fresh made-up tokens gain nothing.
    """

    def __init__(self, app: ASGIApp, settings: Settings, buckets: Buckets | None = None) -> None:
        self.app = app
        self.settings = settings
        self.buckets = buckets or buckets_for(settings)
        # digests of tokens that recently passed authentication in this process
        self._known: OrderedDict[str, None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        address = scope["client"][0] if scope.get("client") else "unknown"
        token = _presented_token(scope)
        key = f"t:{digest(token)}" if token else f"a:{address}"
        rate, burst = self.settings.api_rate_per_s, self.settings.api_rate_burst
        headers: dict[str, str] = {}
        try:
            if key not in self._known:
                failures = await self.buckets.take(f"f:{address}", rate, burst, cost=0)
                if not failures.allowed:
                    headers["Retry-After"] = _seconds(failures.retry_after_s)
                    raise LimitExceeded("rate", 429, "too many failed authentications")
            decision = await self.buckets.take(key, rate, burst)
            headers.update(_rate_headers(decision))
            if not decision.allowed:
                headers["Retry-After"] = _seconds(decision.retry_after_s)
                raise LimitExceeded("rate", 429, "too many requests for this token or address")
            if scope["method"] in _WITH_BODY:
                body = await self._read_body(scope, receive)
                receive = _replay(body, receive)
        except LimitExceeded as exc:
            await _refuse(send, exc, headers)
            return
        await self.app(scope, receive, self._answering(send, key, address, headers))

    def _answering(self, send: Send, key: str, address: str, headers: dict[str, str]) -> Send:
        """`send` with the rate headers added, noting how authentication went."""
        extra = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
                if message["status"] == 401:
                    self._known.pop(key, None)
                    await self.buckets.take(
                        f"f:{address}", self.settings.api_rate_per_s, self.settings.api_rate_burst
                    )
                else:
                    self._known[key] = None
                    self._known.move_to_end(key)
                    while len(self._known) > MAX_TRACKED_CLIENTS:
                        self._known.popitem(last=False)
            await send(message)

        return answer

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


def buckets_for(settings: Settings) -> Buckets:
    """Redis buckets shared by the farm's web processes, or this process's own."""
    url = settings.resolved_rate_limit_url()
    return RedisBuckets(url) if url else LocalBuckets()


def _presented_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _seconds(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


def _rate_headers(decision: Decision) -> dict[str, str]:
    """The RateLimit-* fields: the bucket's size, what is left, and the seconds until full."""
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }


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
