"""What a worker process makes once and its tasks share: settings, store, Runware client,
batchers, callback sender, the tenants' weights the dispatcher reads, and the hooks at the
two dangerous moments of a submission."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Protocol

from celery import Celery

from farmdomain.batching import Batcher
from farmdomain.jobs import Job
from farmdomain.settings import Settings
from jobstore.protocol import Store
from jobstore.tenant_shares import CachedWeights, TenantShares
from runware_edge.provider import Provider
from worker.callbacks import CallbackSender

if TYPE_CHECKING:
    from worker.copying import Copier

# a job handed to the batcher: (job_id, the attempt count its message expects)
Claim = tuple[str, int]
# the submit path: (context, claims, whether the dispatcher admitted them) -> one None each
Submit = Callable[["WorkerContext", list[Claim], bool], list[None]]


class SubmitHooks(Protocol):
    """Told at the two moments where a crash could lose or double-pay a job: claimed but
    not POSTed, and POSTed but `submitted` not recorded. The chaos tests crash there."""

    def after_claim(self, jobs: Sequence[Job]) -> None: ...

    def after_post(self, jobs: Sequence[Job]) -> None: ...


class NoHooks:
    """Production: nothing happens at either moment."""

    def after_claim(self, jobs: Sequence[Job]) -> None:
        pass

    def after_post(self, jobs: Sequence[Job]) -> None:
        pass


@dataclass
class WorkerContext:
    """One per worker process, opened when the process starts (after the fork in a
    prefork child), closed when it stops; tasks reach it through their bound task."""

    settings: Settings
    app: Celery
    store: Store
    runware: Provider
    hooks: SubmitHooks
    submit: InitVar[Submit]
    copier: Copier
    webhook_secrets: list[bytes] = field(init=False)
    # the submit messages' claims, and the dispatcher's, which pass a backlog's hold
    batcher: Batcher[Claim, None] = field(init=False)
    admitted: Batcher[Claim, None] = field(init=False)
    callbacks: CallbackSender = field(init=False)
    # the tenants' weights in the dispatcher's fair sharing, read again every few seconds
    weights: CachedWeights = field(init=False)

    def __post_init__(self, submit: Submit) -> None:
        self.webhook_secrets = self.settings.webhook_secrets()
        size, posts = self.settings.submit_batch_max, self.settings.submit_parallel_posts
        self.batcher = Batcher(lambda claims: submit(self, claims, False), size, posts, "submit")
        self.admitted = Batcher(lambda claims: submit(self, claims, True), size, posts, "admit")
        self.callbacks = CallbackSender(self.settings)
        self.weights = CachedWeights(
            TenantShares(self.store.engine), self.settings.admission_tenants_cache_s
        )

    def close(self) -> None:
        self.batcher.close()
        self.admitted.close()
        self.copier.close()
        self.callbacks.close()
        self.runware.close()
        self.store.engine.dispose()
