"""Copying result images into the results store: fetched through the safe downloader (or
decoded from inline data), checked, hashed, written once, and recorded on the result. The
record of a job's last image to settle makes the job terminal (jobstore.settling):
`succeeded` once every image is stored, `failed` (storage) if some were given up on.

Each failure is one of two kinds. Transient (storage down, Runware's image host failing
or unreachable): the copy is sent again after a backoff, for as long as Runware keeps the
image's URL (FLUXFARM_RUNWARE_TTL_S from its arrival; inline data never runs out), and
the reaper sends anything left behind again. Refused (not an image, another format or
size than the job asked, over the cap, a host off the allow-list): nothing is written,
the result keeps its row with the reason, and no attempt follows. Either way the job
never waits past its deadline: the reaper fails it then, naming each image not stored.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from farmdomain.broker import COPY_QUEUE, COPY_TASK
from farmdomain.errors import DownloadRefused, ResultsStoreConflict, ResultsStoreUnavailable
from farmdomain.metrics import metrics
from farmdomain.settings import Settings
from farmdomain.values import StoreObserver, utcnow
from imagestore import ResultsStore, image_key, open_results_store, upload_key
from imagestore.verify import check_image, decode_inline
from jobstore.copies import CopyOrder, Kept, ResultCopies, ResultKey
from runware_edge.downloads import SafeDownloader
from worker.backoff import backoff_s
from worker.uploads import expects_upload, uploaded

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy import Engine

    from worker.app import FarmTask

log = structlog.get_logger(__name__)

# the image host failed or answered without the image: worth another try while the URL lives
_RETRIED_REFUSALS = frozenset({"status", "transport"})
# copies that wait for Runware's upload before fetching the image themselves
UPLOAD_WAITS = 3


class CopyRetry(Exception):
    """A copy that failed for now: the results store is not answering."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Copied:
    """What one copy attempt did: `kept` on success, else the failure's reason and
    whether another attempt is sent."""

    order: CopyOrder
    kept: Kept | None = None
    written: bool = False
    reason: str | None = None
    retry_in_s: float | None = None


class Copier:
    """One per worker process: the downloader, the results store and the copy rows."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        results: ResultsStore | None = None,
        observers: Sequence[StoreObserver] = (),
    ):
        self.settings = settings
        self.copies = ResultCopies(engine, observers=observers)
        self.results = results or open_results_store(settings)
        self.downloader = SafeDownloader(settings)

    def close(self) -> None:
        self.downloader.close()

    def copy_all(self, keys: list[ResultKey]) -> list[Copied]:
        """Copy every result of `keys` not yet kept or given up on; what each attempt did."""
        orders = self.copies.orders(keys)
        return [self.copy(order) for order in orders if not (order.stored or order.given_up)]

    def copy(self, order: CopyOrder) -> Copied:
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            job_id=order.job_id, task_uuid=order.task_uuid, image=order.image_uuid
        ):
            try:
                kept, written = self._keep(order)
            except DownloadRefused as exc:
                if exc.reason in _RETRIED_REFUSALS:
                    return self._failed(order, exc.reason, str(exc), retry=True)
                return self._failed(order, exc.reason, str(exc), retry=False)
            except ResultsStoreConflict as exc:
                return self._failed(order, "conflict", str(exc), retry=False)
            except CopyRetry as exc:
                return self._failed(order, exc.reason, str(exc), retry=True)
            recorded = self.copies.stored(order, kept)
            elapsed = time.perf_counter() - started
            store = self.results.kind
            if written:
                metrics().images_stored.labels(store).inc()
                metrics().image_bytes_stored.labels(store).inc(kept.size)
            metrics().image_copy.labels(store).observe(elapsed)
            log.info(
                "image.stored",
                key=kept.key,
                bytes=kept.size,
                written=written,
                recorded=recorded,
                duration_ms=round(elapsed * 1000, 1),
            )
        return Copied(order, kept, written)

    def _keep(self, order: CopyOrder) -> tuple[Kept, bool]:
        """The image checked and written (or Runware's upload of it checked); whether
        this call kept it."""
        where = f"{order.job_id}/{order.image_uuid}"
        upload = expects_upload(
            self.settings, self.results, order.output_type, order.number_results
        )
        if upload:
            kept = self._uploaded(where, order)
            if kept is not None:
                return kept, True
            if order.attempts < UPLOAD_WAITS:
                # the upload and the webhook race: a few backoffs for it, then the copy,
                # under the image's own key, which a late upload never writes over
                raise CopyRetry("upload_pending", "Runware's upload has not arrived yet")
        key = image_key(order.job_id, order.image_uuid, order.output_format)
        data, declared = self._bytes(order, where)
        content_type = check_image(where, data, declared, order.output_format, order.size)
        digest = hashlib.sha256(data).hexdigest()
        try:
            written = self.results.put(key, data, content_type, digest)
        except ResultsStoreUnavailable as exc:
            raise CopyRetry("storage", str(exc)) from exc
        return Kept(key, digest, len(data), content_type), written

    def _uploaded(self, where: str, order: CopyOrder) -> Kept | None:
        key = upload_key(order.job_id, order.output_format)
        try:
            return uploaded(self.results, where, key, order.output_format, order.size)
        except ResultsStoreUnavailable as exc:
            raise CopyRetry("storage", str(exc)) from exc

    def _bytes(self, order: CopyOrder, where: str) -> tuple[bytes, str | None]:
        if order.image_data is not None:
            return decode_inline(where, order.image_data, self.settings.download_max_bytes)
        if order.image_url is None:
            raise DownloadRefused(where, "no_image", "the result carries neither URL nor data")
        return self.downloader.fetch(order.image_url)

    def _failed(self, order: CopyOrder, reason: str, message: str, *, retry: bool) -> Copied:
        settings = self.settings
        delay = backoff_s(
            order.attempts + 1, settings.copy_retry_base_s, settings.copy_retry_max_s, None
        )
        if retry and order.image_data is None:
            # past Runware's ttl the URL answers nothing any more: say so, and stop
            expires_at = order.received_at + timedelta(seconds=settings.runware_ttl_s)
            if utcnow() + timedelta(seconds=delay) >= expires_at:
                retry, reason = False, "expired"
                message = f"the image URL expired before a copy landed; last: {message}"
        self.copies.failed(order, reason, message, give_up=not retry)
        metrics().image_copy_failures.labels(reason).inc()
        log.warning(
            "image.copy_failed",
            reason=reason,
            message=message,
            retry_in_s=round(delay, 3) if retry else None,
        )
        return Copied(order, reason=reason, retry_in_s=delay if retry else None)


def publish_copies(app: Celery, keys: list[ResultKey], countdown: float | None = None) -> None:
    """Ask a worker to copy the results of `keys`."""
    if not keys:
        return
    options: dict[str, Any] = {"queue": COPY_QUEUE}
    if countdown:
        options["countdown"] = countdown
    app.send_task(COPY_TASK, args=([list(key) for key in keys],), **options)


def copy_results(task: FarmTask, keys: list[list[str]]) -> None:
    """The copy task: copy each result of `keys`; the ones that failed for now are sent
    again together, after the longest of their backoffs."""
    context = task.context
    done = context.copier.copy_all([(str(t), str(i)) for t, i in keys])
    again = [(c.order.task_uuid, c.order.image_uuid) for c in done if c.retry_in_s is not None]
    if again:
        delay = max(c.retry_in_s or 0.0 for c in done)
        publish_copies(context.app, again, countdown=delay)
