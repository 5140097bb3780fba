"""What the web process makes once at start and shares: settings, store, webhook recorder."""

from __future__ import annotations

from dataclasses import dataclass, field

from farmdomain.settings import Settings
from farmweb.recorder import WebhookRecorder
from jobstore.store import JobStore


@dataclass
class WebContext:
    settings: Settings
    store: JobStore
    webhook_recorder: WebhookRecorder = field(init=False)
    webhook_secrets: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.webhook_recorder = WebhookRecorder(self.store)
        self.webhook_secrets = self.settings.webhook_secrets()
