"""What a worker process makes once and its tasks share: settings, store, Runware client,
batcher, callback sender, and the hooks at the two dangerous moments of a submission."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Protocol

from celery import Celery

from farmdomain.batching import Batcher
from farmdomain.jobs import Job
from farmdomain.settings import Settings
from jobstore.protocol import Store
from runware_edge.provider import Provider
from worker.callbacks import CallbackSender

if TYPE_CHECKING:
    from worker.copying import Copier

# a job handed to the batcher: (job_id, the attempt count its message expects)
Claim = tuple[str, int]


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
    submit: InitVar[Callable[[WorkerContext, list[Claim]], list[None]]]
    copier: Copier
    webhook_secrets: list[bytes] = field(init=False)
    batcher: Batcher[Claim, None] = field(init=False)
    callbacks: CallbackSender = field(init=False)

    def __post_init__(self, submit: Callable[[WorkerContext, list[Claim]], list[None]]) -> None:
        self.webhook_secrets = self.settings.webhook_secrets()
        self.batcher = Batcher(
            lambda claims: submit(self, claims),
            self.settings.submit_batch_max,
            self.settings.submit_parallel_posts,
            name="submit",
        )
        self.callbacks = CallbackSender(self.settings)

    def close(self) -> None:
        self.batcher.close()
        self.copier.close()
        self.callbacks.close()
        self.runware.close()
        self.store.engine.dispose()
