"""The farm's worker app with submit hooks that die, as a `kill -9` would, at planned
jobs in the two dangerous windows: `celery -A tests.integration.chaos.crashing_worker`.

The plan (JSON in FLUXFARM_TEST_CRASH_PLAN) lists windows and a job number:
`{"windows": ["after_claim", "after_post"], "on_job": 12, "ledger": PATH}`. The worker
process whose `on_job`-th job reaches the next window of the list dies there, with that
job's batch in the window; each death is a line in the ledger, so the fleet (restarted
processes included) hits every window exactly once, in order: never by chance.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from farmdomain.jobs import Job
from farmdomain.settings import Settings
from worker.app import FarmCelery, create_app

log = structlog.get_logger(__name__)


def hits(ledger: Path) -> list[str]:
    """The windows hit so far, in order."""
    return ledger.read_text().split() if ledger.exists() else []


class PlannedCrashes:
    """Submit hooks that kill their own process at the planned job of each window."""

    def __init__(self, windows: Sequence[str], on_job: int, ledger: Path) -> None:
        self.windows = list(windows)
        self.on_job = on_job
        self.ledger = ledger
        self.jobs_seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def after_claim(self, jobs: Sequence[Job]) -> None:
        self.reached("after_claim", len(jobs))

    def after_post(self, jobs: Sequence[Job]) -> None:
        self.reached("after_post", len(jobs))

    def reached(self, window: str, jobs: int = 1) -> None:
        """`jobs` more have reached `window`: die here if the plan says so."""
        with self._lock, self.ledger.open("a+") as record:
            self.jobs_seen[window] += jobs
            # the ledger is the fleet's: another worker process may be at a window too
            fcntl.flock(record, fcntl.LOCK_EX)
            done = hits(self.ledger)
            due = len(done) < len(self.windows) and self.windows[len(done)] == window
            if not due or self.jobs_seen[window] < self.on_job:
                return
            record.write(window + "\n")
            record.flush()
            log.warning("crash_point.hit", window=window, jobs_seen=self.jobs_seen[window])
            os.kill(os.getpid(), signal.SIGKILL)


def planned(env_var: str) -> PlannedCrashes:
    """The crashes the JSON plan in `env_var` lists."""
    plan = json.loads(os.environ[env_var])
    return PlannedCrashes(plan["windows"], plan["on_job"], Path(plan["ledger"]))


def app_attribute(build: Callable[[], FarmCelery]) -> Callable[[str], Any]:
    """A module `__getattr__` that builds the app once when `celery -A` asks for `app`, as
    it does of worker.app."""

    def attribute(name: str) -> Any:
        if name == "app":
            return build()
        raise AttributeError(name)

    return attribute


@functools.cache
def _app() -> FarmCelery:
    return create_app(Settings(), planned("FLUXFARM_TEST_CRASH_PLAN"))


__getattr__ = app_attribute(_app)
