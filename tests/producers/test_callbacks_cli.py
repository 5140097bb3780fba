"""`fluxfarm callbacks`: secrets, rotation, the outbox listed and replayed, on a real store
(SQLite and PostgreSQL) and the embedded broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from farmdomain.broker import CALLBACK_QUEUE, DELIVER_TASK, celery_config
from farmdomain.callbacks import Attempt, CallbackStatus, event_id
from farmdomain.settings import Settings, get_settings
from farmdomain.values import Failure, utcnow
from jobstore.callback_events import AttemptRecord, CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from jobstore.engine import make_engine
from jobstore.schema import jobs
from jobstore.store import JobStore
from producers import callbacks_cli, cli
from tests.producers.conftest import BrokerQueue
from tests.services import fresh_postgres_database

PARAMS = {"positivePrompt": "a fox", "width": 1024, "height": 1024}
HOOK = "https://hooks.example.com/in"
# what a hostile receiver answers: clear the screen and fake a line
ANSI = "\x1b[2J\x1b[1;1Hstatus: delivered\r\n"

Run = Any


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def farm_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "sqlite":
        return settings
    url: str = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, callback_secrets CASCADE"))
    engine.dispose()
    return Settings(data_dir=settings.data_dir, database_url=url)


@pytest.fixture
def store(farm_settings: Settings) -> Iterator[JobStore]:
    made = JobStore.from_settings(farm_settings)
    yield made
    made.engine.dispose()


@pytest.fixture
def callback_queue(farm_settings: Settings) -> BrokerQueue:
    # the broker contract also prepares the embedded broker that a plain kombu URL names
    celery_config(farm_settings)
    return BrokerQueue(farm_settings.resolved_broker_url(), CALLBACK_QUEUE)


@pytest.fixture
def run(
    farm_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """main(argv) with the store's settings in the environment: (exit code, stdout, stderr)."""
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(farm_settings.data_dir))
    if farm_settings.database_url is not None:
        monkeypatch.setenv("FLUXFARM_DATABASE_URL", farm_settings.database_url)
    get_settings.cache_clear()
    monkeypatch.setattr(callbacks_cli, "configure_logging", lambda _settings, _process: None)

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(["callbacks", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def _terminal(store: JobStore, tenant: str = "acme") -> str:
    """A failed job with a callbackUrl: its event is in the outbox, never tried."""
    job, _ = store.create_job(PARAMS, tenant=tenant, deadline_s=60)
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(callback_url=HOOK))
    assert store.fail(job.id, Failure("provider", "no"))
    return job.id


def _attempted(
    store: JobStore,
    status: CallbackStatus,
    code: int | None,
    answer: str = "",
    tenant: str = "acme",
) -> str:
    """A terminal job whose event had one attempt, left `status`."""
    job_id = _terminal(store, tenant)
    outbox = CallbackOutbox(store.engine)
    [event] = outbox.claim([job_id], lease_s=30)
    error = None if code is not None else "ConnectError: refused"
    next_in_s = 300.0 if status is CallbackStatus.PENDING else None
    attempt = Attempt(utcnow(), code, 2.0, answer, error)
    outbox.record([AttemptRecord(event, b"{}", attempt, status, next_in_s)])
    return job_id


def test_secret_is_made_once_and_printed_alone(run: Run, store: JobStore) -> None:
    code, out, _err = run("secret", "acme")
    assert code == 0
    [secret] = out.split()
    assert secret.startswith("whsec_")
    assert run("secret", "acme")[1].split() == [secret]
    assert CallbackSecrets(store.engine).signing("acme") == [secret]


def test_rotate_prints_a_new_secret_and_the_old_one_signs_during_the_overlap(
    run: Run, store: JobStore
) -> None:
    old = run("secret", "acme")[1].strip()
    code, out, err = run("rotate", "acme", "--overlap", "3600")
    assert code == 0
    new = out.strip()
    assert new.startswith("whsec_")
    assert new != old
    assert "the previous one also signs until" in err
    assert CallbackSecrets(store.engine).signing("acme") == [new, old]

    # no overlap: the secret it replaces stops at once; the first keeps its own overlap
    code, out, _err = run("rotate", "acme", "--overlap", "0")
    assert code == 0
    assert CallbackSecrets(store.engine).signing("acme") == [out.strip(), old]


def test_a_malformed_tenant_is_one_line_naming_the_argument_and_changes_nothing(
    run: Run, store: JobStore
) -> None:
    for argv, argument in [
        (("secret", "Bad Tenant"), "TENANT"),
        (("rotate", "acme/../x"), "TENANT"),
        (("list", "--tenant", "\x1b[2J"), "--tenant"),
    ]:
        code, out, err = run(*argv)
        assert code == 2
        assert out == ""
        assert err.startswith(f"error: {argument}: pattern: ")
        assert len(err.splitlines()) == 1
        assert "\x1b" not in err
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM callback_secrets")).scalar() == 0


def test_list_shows_each_event_and_escapes_what_the_receiver_answered(
    run: Run, store: JobStore
) -> None:
    dead = _attempted(store, CallbackStatus.DEAD, 500, ANSI)
    gone = _attempted(store, CallbackStatus.GONE, 410, "gone for good")
    retrying = _attempted(store, CallbackStatus.PENDING, None)
    fresh = _terminal(store)
    other = _attempted(store, CallbackStatus.DEAD, 503, tenant="globex")

    code, out, _err = run("list")
    assert code == 0
    assert "\x1b" not in out
    assert "\r" not in out
    header, *lines = out.splitlines()
    assert header.split()[:5] == ["job", "tenant", "type", "status", "tries"]
    rows = {line.split()[0]: line for line in lines}
    assert set(rows) == {dead, gone, retrying, fresh, other}
    assert rows[dead].split()[1:5] == ["acme", "job.failed", "dead", "1"]
    assert rows[dead].endswith(" 500 \\x1b[2J\\x1b[1;1Hstatus: delivered\\r\\n")
    assert rows[gone].endswith(" 410 gone for good")
    assert "next " in rows[retrying]
    assert "ConnectError: refused" in rows[retrying]
    assert "never tried" in rows[fresh]
    assert rows[fresh].split()[3:5] == ["pending", "0"]

    failed = run("list", "--failed")[1].splitlines()[1:]
    assert {line.split()[0] for line in failed} == {dead, gone, other}
    acme_failed = run("list", "--failed", "--tenant", "acme")[1].splitlines()[1:]
    assert {line.split()[0] for line in acme_failed} == {dead, gone}
    assert len(run("list", "--limit", "2")[1].splitlines()) == 3


def test_list_json_carries_every_attempt(run: Run, store: JobStore) -> None:
    dead = _attempted(store, CallbackStatus.DEAD, 500, ANSI)
    code, out, _err = run("list", "--json")
    assert code == 0
    assert "\x1b" not in out
    [event] = json.loads(out)
    assert event["jobId"] == dead
    assert event["webhookId"] == event_id(dead)
    assert event["status"] == "dead"
    assert event["nextAttemptAt"] is None
    [attempt] = event["attempts"]
    assert attempt["statusCode"] == 500
    assert attempt["answer"] == ANSI


def test_replay_by_id_restarts_the_schedule_and_asks_a_worker_for_each(
    run: Run, store: JobStore, callback_queue: BrokerQueue
) -> None:
    dead = _attempted(store, CallbackStatus.DEAD, 500)
    gone = _attempted(store, CallbackStatus.GONE, 410)
    code, out, err = run("replay", dead, gone)
    assert (code, out, err) == (0, "replayed 2 callback events\n", "")
    outbox = CallbackOutbox(store.engine)
    for job_id in (dead, gone):
        event = outbox.get(job_id)
        assert event is not None
        assert (event.status, event.tries) == (CallbackStatus.PENDING, 0)
    assert sorted(callback_queue.drain()) == sorted(
        [(DELIVER_TASK, [dead]), (DELIVER_TASK, [gone])]
    )


def test_replay_names_each_event_it_could_not_replay(
    run: Run, store: JobStore, callback_queue: BrokerQueue
) -> None:
    dead = _attempted(store, CallbackStatus.DEAD, 500)
    retrying = _attempted(store, CallbackStatus.PENDING, 500)
    unknown = "00000000-0000-0000-0000-000000000000"
    code, out, err = run("replay", dead, retrying, unknown)
    assert code == 1
    assert out == "replayed 1 callback event\n"
    assert err.splitlines() == [
        f"error: {retrying}: not replayed: still being delivered",
        f"error: {unknown}: not replayed: no callback event",
    ]
    assert callback_queue.drain() == [(DELIVER_TASK, [dead])]


def test_replay_since_takes_every_dead_or_gone_event_created_since(
    run: Run, store: JobStore, callback_queue: BrokerQueue
) -> None:
    before = _attempted(store, CallbackStatus.DEAD, 500)
    since = utcnow()
    dead = _attempted(store, CallbackStatus.DEAD, 500)
    gone = _attempted(store, CallbackStatus.GONE, 410)
    delivered = _attempted(store, CallbackStatus.DELIVERED, 204)
    code, out, _err = run("replay", "--since", since.isoformat().replace("+00:00", "Z"))
    assert (code, out) == (0, "replayed 2 callback events\n")
    assert sorted(args[0] for _task, args in callback_queue.drain()) == sorted([dead, gone])
    statuses = {
        job_id: event.status
        for job_id in (before, delivered)
        if (event := CallbackOutbox(store.engine).get(job_id)) is not None
    }
    assert statuses == {before: CallbackStatus.DEAD, delivered: CallbackStatus.DELIVERED}


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (("--since", "yesterday"), "error: --since: timestamp: not an ISO 8601 time"),
        (("--since", "2026-12-03T06:00:00"), "error: --since: timezone: needs a zone"),
        ((), "error: ID|--since: one_of: "),
        (("some-id", "--since", "2026-12-03T06:00:00Z"), "error: ID|--since: one_of: "),
    ],
)
def test_replay_refuses_a_bad_timestamp_or_selection_in_one_line(
    run: Run, store: JobStore, callback_queue: BrokerQueue, argv: tuple[str, ...], error: str
) -> None:
    dead = _attempted(store, CallbackStatus.DEAD, 500)
    code, out, err = run("replay", *argv)
    assert code == 2
    assert out == ""
    assert err.startswith(error)
    assert len(err.splitlines()) == 1
    event = CallbackOutbox(store.engine).get(dead)
    assert event is not None
    assert event.status is CallbackStatus.DEAD
    assert callback_queue.drain() == []


def test_an_unreachable_store_is_one_line_and_exit_4(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLUXFARM_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    code, out, err = run("list")
    assert (code, out) == (4, "")
    assert err.startswith("error: the job store cannot be reached")
    assert len(err.splitlines()) == 1
