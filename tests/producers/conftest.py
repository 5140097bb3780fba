"""Fixtures for the producer tests: a real SQLite store and SQLite broker in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from structlog.typing import EventDict

from farmdomain.broker import SUBMIT_QUEUE, SUBMIT_TASK, celery_config
from farmdomain.settings import Settings, get_settings
from jobstore.migrations import upgrade
from producers import budgets_cli, cli, tenants_cli
from producers.client import FluxfarmClient

# the one host the producer tests' jobs may call back
CALLBACK_HOST = "hooks.example.com"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    built = Settings(data_dir=tmp_path / "data", callback_allowed_hosts=CALLBACK_HOST)
    upgrade(built.resolved_database_url())
    return built


# `fluxfarm ARGV...` run in this process: (exit code, stdout, stderr)
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logs: list[EventDict],
) -> Run:
    """cli.main(argv) with the store's settings in the environment; the commands' logs
    captured, not printed."""
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    for module in (budgets_cli, cli, tenants_cli):
        monkeypatch.setattr(module, "configure_logging", lambda _settings, _process: None)

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def valid_request() -> dict[str, Any]:
    return {"positivePrompt": "a lighthouse at dusk", "width": 1024, "height": 768}


@pytest.fixture
def client(settings: Settings) -> Iterator[FluxfarmClient]:
    with FluxfarmClient(settings) as made:
        yield made


class BrokerQueue:
    """A queue (the submit queue unless told) as the broker holds it, read with a plain
    kombu connection."""

    def __init__(self, url: str, queue: str = SUBMIT_QUEUE) -> None:
        self.url = url
        self.queue = queue

    def size(self) -> int:
        with Connection(self.url) as conn:
            queue = conn.SimpleQueue(self.queue)
            try:
                return int(queue.qsize())
            finally:
                queue.close()

    def drain(self) -> list[tuple[str, list[Any]]]:
        """Take every message off the queue: (task name, positional args) each."""
        taken = []
        with Connection(self.url) as conn:
            queue = conn.SimpleQueue(self.queue)
            try:
                while queue.qsize():
                    message = queue.get(timeout=1)
                    args, _kwargs, _embed = message.payload
                    taken.append((message.headers["task"], args))
                    message.ack()
            finally:
                queue.close()
        return taken

    def job_ids(self) -> list[str]:
        """Take every message off the queue: the ids of the jobs they carry, in order."""
        found: list[str] = []
        for task, args in self.drain():
            found += [args[0]] if task == SUBMIT_TASK else [job_id for job_id, _ in args[0]]
        return found


@pytest.fixture
def broker(settings: Settings) -> BrokerQueue:
    # the broker contract also prepares the embedded broker that a plain kombu URL names
    celery_config(settings)
    return BrokerQueue(settings.resolved_broker_url())
