"""The provider seam: what the worker needs of Runware, whichever client answers it."""

from __future__ import annotations

from typing import Protocol

from runware_edge.client import Exchange, SubmittedBatch
from runware_edge.wire import InferenceTask, ResultItem


class Provider(Protocol):
    """Runware as the worker and the reaper use it; `RunwareClient` is the real one."""

    def submit(self, task: InferenceTask) -> list[ResultItem]:
        """One task in its own request; the answer's items."""
        ...

    def submit_batch(self, tasks: list[InferenceTask]) -> SubmittedBatch:
        """Several tasks in one request; each judged on its own answer."""
        ...

    def get_response(self, task_uuid: str) -> Exchange:
        """What Runware has for a task now (getResponse)."""
        ...

    def close(self) -> None: ...
