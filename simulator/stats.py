"""Counters the simulator exposes on /_sim/stats, including the exact amount charged."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


def plain(amount: Decimal) -> str:
    """An exact amount without exponent or trailing zeros, e.g. '0.045'."""
    return format(amount.normalize(), "f")


@dataclass
class Stats:
    """Plain counters: the event loop is the only writer, so no locking is needed."""

    requests: int = 0
    tasks_accepted: int = 0
    images_generated: int = 0
    image_errors: int = 0
    webhook_attempts: int = 0
    webhook_deliveries: int = 0
    webhook_failed_attempts: int = 0
    webhooks_abandoned: int = 0
    webhooks_dropped: int = 0
    webhooks_duplicated: int = 0
    upload_attempts: int = 0
    uploads_delivered: int = 0
    uploads_abandoned: int = 0
    ws_connections: int = 0
    ws_sessions_resumed: int = 0
    ws_frames_buffered: int = 0
    ws_frames_replayed: int = 0
    submits_rejected: Counter[str] = field(default_factory=Counter)
    charged_usd: Decimal = Decimal(0)
    # the most tasks each key (by envelope.key_label) ever had accepted and not finished
    max_in_flight_per_key: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        fresh = Stats()
        for spec in dataclasses.fields(self):
            setattr(self, spec.name, getattr(fresh, spec.name))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "tasks_accepted": self.tasks_accepted,
            "images_generated": self.images_generated,
            "image_errors": self.image_errors,
            "webhook_attempts": self.webhook_attempts,
            "webhook_deliveries": self.webhook_deliveries,
            "webhook_failed_attempts": self.webhook_failed_attempts,
            "webhooks_abandoned": self.webhooks_abandoned,
            "webhooks_dropped": self.webhooks_dropped,
            "webhooks_duplicated": self.webhooks_duplicated,
            "upload_attempts": self.upload_attempts,
            "uploads_delivered": self.uploads_delivered,
            "uploads_abandoned": self.uploads_abandoned,
            "ws_connections": self.ws_connections,
            "ws_sessions_resumed": self.ws_sessions_resumed,
            "ws_frames_buffered": self.ws_frames_buffered,
            "ws_frames_replayed": self.ws_frames_replayed,
            "submits_rejected": dict(self.submits_rejected),
            "charged_usd": round(float(self.charged_usd), 6),
            "charged_usd_exact": plain(self.charged_usd),
            "max_in_flight_per_key": dict(self.max_in_flight_per_key),
        }
