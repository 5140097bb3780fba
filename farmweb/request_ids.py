"""An X-Request-Id on every answer of web: the caller's own when it sent a sane one, else
a new one; bound to every log line written while the request is served."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bound_contextvars

HEADER = b"x-request-id"
# what a caller's id may be to be echoed back and logged: no spaces, quotes or controls
_SANE = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(scope: Scope) -> str:
    """The id the caller sent, when it is sane; a fresh one otherwise."""
    for name, value in scope["headers"]:
        if name == HEADER and _SANE.fullmatch(value):
            return bytes(value).decode()
    return uuid.uuid4().hex


class RequestIds:
    """ASGI middleware in front of everything web serves, webhooks included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = request_id(scope)
        header = (HEADER, found.encode())

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() != HEADER]
                message = {**message, "headers": [*kept, header]}
            await send(message)

        with bound_contextvars(request_id=found):
            await self.app(scope, receive, answer)
