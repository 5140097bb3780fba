"""The operators' routes of web (/metrics and the API documents) on a public bind.

On a loopback bind they answer anyone who can reach them, as before. On any other
address they need `Authorization: Bearer` with FLUXFARM_OPS_TOKEN, the way Prometheus
scrapes a protected target; with no ops token set they answer nobody there. The token is
a setting, not a stored one, so /metrics keeps answering while the store is down.
"""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from farmdomain import metrics
from farmdomain.errors import FieldIssue
from farmdomain.settings import Settings
from farmdomain.views import ErrorBody
from farmweb.auth import is_loopback

OPS_PATHS = frozenset({"/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class OpsRoutes:
    """ASGI middleware refusing the operators' routes to callers without the ops token."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self._open = is_loopback(settings.bind_host)
        token = settings.ops_token
        self._expected = None if token is None else f"Bearer {token.get_secret_value()}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._open or scope["type"] != "http" or scope["path"] not in OPS_PATHS:
            await self.app(scope, receive, send)
            return
        presented = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if self._expected is not None and hmac.compare_digest(presented, self._expected):
            await self.app(scope, receive, send)
            return
        await _refuse(send, self._expected is None)


async def _refuse(send: Send, unset: bool) -> None:
    metrics.metrics().requests_rejected.labels("ops", "unauthenticated").inc()
    reason = (
        "set FLUXFARM_OPS_TOKEN to serve this on a non-loopback bind"
        if unset
        else "send Authorization: Bearer <FLUXFARM_OPS_TOKEN>"
    )
    body = ErrorBody.of([FieldIssue("authorization", "ops_token", reason)])
    payload = orjson.dumps(body.model_dump(mode="json"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
