"""The hostile-input suite's web app, store dumps and tally of what it tried."""

from __future__ import annotations

import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import HealthCheck, settings
from sqlalchemy import select

from farmdomain.jobs import Job
from farmdomain.settings import Settings
from farmweb.app import create_app
from jobstore.api_tokens import ApiTokenStore
from jobstore.migrations import upgrade
from jobstore.schema import metadata
from jobstore.store import JobStore
from runware_edge.tokens import sign

with warnings.catch_warnings():
    # starlette 1.x prefers the httpx2 package, which the dev extras do not list yet
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = "security-suite-secret"
PREVIOUS_SECRET = "security-suite-previous-secret"
PARAMS = {"positivePrompt": "a lighthouse", "width": 256, "height": 256}

# derandomized: CI explores the same inputs every run, so a failure always reproduces
settings.register_profile(
    "security",
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Tally:
    """Per surface: inputs tried, 5xx answers seen, store changes after a rejected input."""

    inputs: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    store_changes: Counter[str] = field(default_factory=Counter)

    def record(self, surface: str, status: int, changed_on_reject: bool = False) -> None:
        self.inputs[surface] += 1
        self.server_errors[surface] += status >= 500
        self.store_changes[surface] += changed_on_reject


TALLY = Tally()


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not TALLY.inputs:
        return
    terminalreporter.section("hostile-input suite")
    for surface in sorted(TALLY.inputs):
        terminalreporter.write_line(
            f"{surface:<16} inputs {TALLY.inputs[surface]:>6}   5xx {TALLY.server_errors[surface]}"
            f"   store changes from rejected input {TALLY.store_changes[surface]}"
        )


Dump = dict[str, list[tuple[Any, ...]]]


@dataclass
class Farm:
    """The whole web app over a real SQLite store, with a client that never raises."""

    http: TestClient
    settings: Settings
    store: JobStore
    tokens: ApiTokenStore

    def dump(self) -> Dump:
        with self.store.engine.connect() as conn:
            return {
                table.name: [tuple(row) for row in conn.execute(select(table)).all()]
                for table in metadata.sorted_tables
            }

    def job(self, tenant: str = "acme", submitted: bool = True) -> Job:
        job, _ = self.store.create_job(
            {**PARAMS, "tag": uuid.uuid4().hex}, tenant=tenant, deadline_s=600
        )
        assert self.store.claim(job.id, 0) is not None
        if submitted:
            assert self.store.mark_submitted(job.id, {})
        return self.store.get(job.id)

    def bearer(self, tenant: str = "acme", *, can_write: bool = True) -> dict[str, str]:
        _record, token = self.tokens.create(tenant, f"{tenant} service", can_write=can_write)
        return {"Authorization": f"Bearer {token}"}

    def webhook(self, task_uuid: str, content: bytes, token: str | None = None) -> tuple[int, bool]:
        """POST a webhook body: its status, and whether the store changed."""
        before = self.dump()
        response = self.http.post(
            f"/webhooks/runware/{task_uuid}",
            params={"token": sign(task_uuid, SECRET.encode()) if token is None else token},
            content=content,
            headers={"Content-Type": "application/json"},
        )
        return response.status_code, self.dump() != before


def make_farm(tmp_path: Path, **overrides: Any) -> Iterator[Farm]:
    built = Settings(
        **{
            "data_dir": tmp_path,
            "webhook_secret": SECRET,
            "webhook_secret_previous": PREVIOUS_SECRET,
            "runware_api_key": "runware-key-never-shown",
            "api_auth": "required",
            # the rate limit has its own tests; the fuzzers must not be throttled
            "api_rate_per_s": 1e6,
            "api_rate_burst": 10**6,
            "log_level": "WARNING",
            **overrides,
        }
    )
    upgrade(built.resolved_database_url())
    app = create_app(built)
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000)) as http:
        context = app.state.context
        yield Farm(http, built, context.store, ApiTokenStore(context.store.engine))


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    yield from make_farm(tmp_path)
