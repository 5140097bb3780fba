"""What a worker or web process makes once and shares: settings, store, Runware client."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from core.settings import Settings, get_settings
from core.store import JobStore
from worker.recorder import WebhookRecorder
from worker.runware import RunwareClient


@dataclass
class ProcessContext:
    settings: Settings

    @cached_property
    def store(self) -> JobStore:
        return JobStore.from_settings(self.settings)

    @cached_property
    def runware(self) -> RunwareClient:
        return RunwareClient(self.settings)

    @cached_property
    def webhook_recorder(self) -> WebhookRecorder:
        return WebhookRecorder(self.store)

    @cached_property
    def webhook_secrets(self) -> list[bytes]:
        return self.settings.webhook_secrets()


@cache
def process_context() -> ProcessContext:
    """This process's context; cleared after a fork so children never share sockets."""
    return ProcessContext(get_settings())
