"""What a worker process makes once and shares: settings, store, Runware client."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from farmdomain.settings import Settings, get_settings
from jobstore.store import JobStore
from runware_edge.client import RunwareClient


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
    def webhook_secrets(self) -> list[bytes]:
        return self.settings.webhook_secrets()


@cache
def process_context() -> ProcessContext:
    """This process's context; cleared after a fork so children never share sockets."""
    return ProcessContext(get_settings())
