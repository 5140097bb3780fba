"""What the web process makes once at start and shares: settings, store, results store,
webhook recorder."""

from __future__ import annotations

from dataclasses import dataclass, field

from farmdomain.claims import ClaimRules
from farmdomain.settings import Settings
from farmweb.copy_requests import CopyRequests
from farmweb.recorder import WebhookRecorder, judged_by_claims
from imagestore import ResultsStore, open_results_store
from jobstore.protocol import Store


@dataclass
class WebContext:
    settings: Settings
    store: Store
    webhook_recorder: WebhookRecorder = field(init=False)
    webhook_secrets: list[bytes] = field(init=False)
    # signs the images' durable URLs (presigned, or served by farmweb.images)
    results: ResultsStore = field(init=False)

    def __post_init__(self) -> None:
        rules = ClaimRules.from_settings(self.settings)
        self.webhook_recorder = WebhookRecorder(
            self.store,
            judged_by_claims(self.store, rules),
            after=CopyRequests(self.settings).recorded,
        )
        self.webhook_secrets = self.settings.webhook_secrets()
        self.results = open_results_store(self.settings)
