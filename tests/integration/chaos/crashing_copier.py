"""The farm's worker app with a results store that dies, as a `kill -9` would, at planned
copies: `celery -A tests.integration.chaos.crashing_copier`.

The plan (JSON in FLUXFARM_TEST_COPY_CRASH_PLAN) lists windows and a copy number:
`{"windows": ["before_put", "after_put"], "on_job": 5, "ledger": PATH}`. `before_put`:
the image fetched and checked, nothing written; `after_put`: the object written, the copy
not recorded. The worker process whose fifth copy reaches the next window of the list
dies there; the ledger makes the fleet (restarted processes included) hit each window
once, in order, as tests/integration/chaos/crashing_worker.py does for submits.
"""

from __future__ import annotations

import functools
from typing import Any

from celery.signals import worker_init

from farmdomain.settings import Settings
from imagestore import ResultsStore
from imagestore.protocol import StoredObject
from tests.integration.chaos.crashing_worker import PlannedCrashes, app_attribute, planned
from worker.app import FarmCelery, create_app


class CrashingStore:
    """`inner`, with a planned death on each side of a write."""

    def __init__(self, inner: ResultsStore, crashes: PlannedCrashes) -> None:
        self.inner = inner
        self.crashes = crashes
        self.kind = inner.kind

    def put(self, key: str, data: bytes, content_type: str, sha256: str) -> bool:
        self.crashes.reached("before_put")
        written = self.inner.put(key, data, content_type, sha256)
        self.crashes.reached("after_put")
        return written

    def head(self, key: str) -> StoredObject | None:
        return self.inner.head(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def url(self, key: str, expires_s: int) -> str:
        return self.inner.url(key, expires_s)

    def upload_url(self, key: str, content_type: str, expires_s: int) -> str | None:
        return self.inner.upload_url(key, content_type, expires_s)


@functools.cache
def _app() -> FarmCelery:
    crashes = planned("FLUXFARM_TEST_COPY_CRASH_PLAN")
    app = create_app(Settings())

    def wrap_store(**_: Any) -> None:
        # the worker's own handler opened the context (a threads pool: this one process)
        copier = app.context.copier
        if not isinstance(copier.results, CrashingStore):
            copier.results = CrashingStore(copier.results, crashes)

    worker_init.connect(wrap_store, weak=False)
    return app


__getattr__ = app_attribute(_app)
