"""Outbound HTTP: webhook POSTs and uploadEndpoint PUTs, retried with capped, jittered backoff.

Runware's retry schedule is only known from its integration guide (runware-api.md §4.3): a
2xx within about 5 s, otherwise retries from 250 ms doubling to at most 8 s per wait, with
jitter. The attempt cap is UNDOCUMENTED and a setting. A webhook URL is used exactly as
given so the client's query-string token reaches it untouched.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import orjson

from simulator.faults import FaultController
from simulator.settings import SimulatorSettings
from simulator.stats import Stats


class Deliverer:
    """Sends results to the client's endpoints through one pooled AsyncClient."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: SimulatorSettings,
        faults: FaultController,
        rng: random.Random,
        stats: Stats,
    ) -> None:
        self.client = client
        self.settings = settings
        self.faults = faults
        self.rng = rng
        self.stats = stats

    def backoff_s(self, attempt: int) -> float:
        """Wait after failed attempt number `attempt` (1-based)."""
        base = self.settings.webhook_backoff_s * 2.0 ** (attempt - 1)
        wait = min(base, self.settings.webhook_backoff_max_s)
        return wait * (1.0 - self.settings.webhook_jitter * self.rng.random())

    async def _attempt(self, method: str, url: str, content: bytes, media_type: str) -> bool:
        try:
            response = await self.client.request(
                method,
                url,
                content=content,
                headers={"Content-Type": media_type},
                timeout=self.settings.webhook_timeout_s,
            )
        except httpx.HTTPError:
            return False
        # The body is irrelevant; reading it frees the pooled connection at once.
        await response.aread()
        return response.is_success

    async def _send(self, method: str, url: str, content: bytes, media_type: str) -> bool:
        """Try until a 2xx or the attempt cap; return whether it was delivered."""
        is_webhook = method == "POST"
        for attempt in range(1, self.settings.webhook_max_attempts + 1):
            if is_webhook:
                self.stats.webhook_attempts += 1
            else:
                self.stats.upload_attempts += 1
            if await self._attempt(method, url, content, media_type):
                if is_webhook:
                    self.stats.webhook_deliveries += 1
                else:
                    self.stats.uploads_delivered += 1
                return True
            if is_webhook:
                self.stats.webhook_failed_attempts += 1
            if attempt < self.settings.webhook_max_attempts:
                await asyncio.sleep(self.backoff_s(attempt))
        if is_webhook:
            self.stats.webhooks_abandoned += 1
        else:
            self.stats.uploads_abandoned += 1
        return False

    async def webhook(self, url: str, body: object) -> None:
        """POST one result or error body, subject to the drop/duplicate/reorder faults."""
        plan = self.faults.webhook_plan()
        if plan.drop:
            self.stats.webhooks_dropped += 1
            return
        if plan.delay_s > 0:
            await asyncio.sleep(plan.delay_s)
        content = orjson.dumps(body)
        delivered = await self._send("POST", url, content, "application/json")
        if delivered and plan.duplicate:
            self.stats.webhooks_duplicated += 1
            await self._send("POST", url, content, "application/json")

    async def upload(self, url: str, data: bytes, media_type: str) -> None:
        """PUT the raw image bytes, as to a presigned storage URL."""
        await self._send("PUT", url, data, media_type)
