"""A real callback receiver for tests: every request verified with the `standardwebhooks`
library against the tenant's secrets, answered as the test says (ok, 500, or held open)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    webhook_id: str
    verified: bool
    body: bytes
    headers: dict[str, str]
    answered: int


@dataclass
class CallbackReceiver:
    """Keeps every request; `answer` is the status it gives, `hold` keeps requests open."""

    secrets: Sequence[str] = ()
    answer: int = 200
    hold: threading.Event | None = None
    received: list[Received] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verified(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body.decode(), headers)
            except WebhookVerificationError:
                continue
            return True
        return False

    async def _post(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        hold = self.hold
        if hold is not None:
            self.held.set()
            # a worker thread, not the event loop: the loop keeps serving
            await asyncio.to_thread(hold.wait)
        status = self.answer
        with self._lock:
            self.received.append(
                Received(
                    headers.get("webhook-id", ""),
                    self.verified(body, headers),
                    body,
                    headers,
                    status,
                )
            )
        return Response(status_code=status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._post, methods=["POST"])])

    def delivered_ids(self) -> set[str]:
        """The webhook-ids answered 2xx after verifying."""
        with self._lock:
            return {r.webhook_id for r in self.received if r.verified and r.answered < 300}

    def events(self) -> dict[str, dict[str, object]]:
        """Each delivered webhook-id's body, parsed."""
        with self._lock:
            return {
                r.webhook_id: orjson.loads(r.body)
                for r in self.received
                if r.verified and r.answered < 300
            }
