"""Asking the workers to copy the images of results the webhook receiver just recorded."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from farmdomain.broker import COPY_QUEUE, COPY_TASK, BrokerCelery, celery_config
from farmdomain.settings import Settings
from farmdomain.values import BodyRecorded, ParsedBody
from jobstore.copies import keys_to_copy

log = structlog.get_logger(__name__)


class CopyRequests:
    """Publishes one copy message per batch of recorded webhook bodies."""

    def __init__(self, settings: Settings) -> None:
        self._celery = BrokerCelery("fluxfarm.web", set_as_current=False)
        self._celery.conf.update(celery_config(settings))

    def recorded(self, bodies: Sequence[ParsedBody], done: Sequence[BodyRecorded]) -> None:
        keys = keys_to_copy(bodies, done)
        if not keys:
            return
        try:
            self._celery.send_task(COPY_TASK, args=([list(k) for k in keys],), queue=COPY_QUEUE)
        except Exception as exc:  # whatever the transport raised: the reaper sends it again
            log.warning("copy.publish_failed", results=len(keys), error=type(exc).__name__)
