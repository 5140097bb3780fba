"""Completion callbacks with real processes: simulator, web, Celery workers and beat on
PostgreSQL and Redis, and a receiver that verifies every callback with `standardwebhooks`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from farmdomain.callbacks import CallbackStatus, event_id, new_secret
from farmdomain.settings import Settings
from farmdomain.values import utcnow
from fluxfarm.demo import demo_requests
from fluxfarm.processes import Child, Farm, free_port, settings_env, simulated
from jobstore.callback_events import CallbackOutbox
from jobstore.callback_secrets import CallbackSecrets
from jobstore.engine import make_engine
from jobstore.migrations import upgrade
from producers.client import FluxfarmClient
from tests.callback_receiver import CallbackReceiver
from tests.http_servers import serve_asgi
from tests.services import fresh_postgres_database

pytestmark = pytest.mark.integration

SIMULATOR_KEY = "callbacks-key"
TENANT = "default"
WAIT_S = 180


@dataclass
class CallbackFarm:
    farm: Farm
    settings: Settings
    receiver: CallbackReceiver
    hook_port: int
    outbox: CallbackOutbox
    stack: ExitStack

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.hook_port}/hook"

    def serve(self) -> None:
        """The receiver listening (again) on its port."""
        self.stack.enter_context(serve_asgi(self.receiver.app(), self.hook_port))

    def submit(self, count: int) -> list[str]:
        """`count` jobs calling back the receiver, queued before any worker runs."""
        with FluxfarmClient(self.settings) as client:
            requests = demo_requests(count)
            step = self.settings.submit_many_max
            return [
                job_id
                for start in range(0, count, step)
                for job_id in client.submit_many(
                    requests[start : start + step], callback_url=self.hook_url
                )
            ]

    def start_worker(self, name: str) -> Child:
        return self.farm.start_worker(name, concurrency=8, pool="threads")

    def statuses(self, job_ids: list[str]) -> dict[str, CallbackStatus | None]:
        found = {job_id: self.outbox.get(job_id) for job_id in job_ids}
        return {job_id: None if e is None else e.status for job_id, e in found.items()}


def wait_for(what: str, done: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # polling for an outcome, not asserting on time
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def callback_farm(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., CallbackFarm]]:
    """A farm started up to web; workers and beat are the test's to start."""
    with ExitStack() as stack:

        def start(
            receiver: CallbackReceiver, *, serve: bool = True, **overrides: Any
        ) -> CallbackFarm:
            database_url = stack.enter_context(fresh_postgres_database())
            hook_port = free_port()
            farm = stack.enter_context(Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs"))
            simulator_url = farm.start_simulator("--api-keys", SIMULATOR_KEY, "--fast-images")
            web_port = free_port()
            settings = simulated(
                farm,
                simulator_url,
                SIMULATOR_KEY,
                web_port,
                webhook_secret="callbacks-secret",
                broker_url=redis_url,
                database_url=database_url,
                callback_allowed_hosts=f"127.0.0.1:{hook_port}",
                **overrides,
            )
            upgrade(database_url)
            farm.start_web(web_port)
            engine = make_engine(database_url)
            stack.callback(engine.dispose)
            if not receiver.secrets:
                receiver.secrets = CallbackSecrets(engine).signing(TENANT)
            running = CallbackFarm(
                farm, settings, receiver, hook_port, CallbackOutbox(engine), stack
            )
            if serve:
                running.serve()
            return running

        yield start


def test_every_terminal_event_of_two_hundred_jobs_arrives_verified_under_one_id(
    callback_farm: Callable[..., CallbackFarm],
) -> None:
    receiver = CallbackReceiver()
    farm = callback_farm(receiver)
    job_ids = farm.submit(200)
    farm.start_worker("worker-a")
    farm.start_worker("worker-b")
    farm.farm.start_beat()

    expected = {event_id(job_id) for job_id in job_ids}
    wait_for("every callback", lambda: expected <= receiver.delivered_ids())
    assert receiver.delivered_ids() == expected
    assert all(r.verified for r in receiver.received)
    for job_id, event in receiver.events().items():
        assert event["type"] == f"job.{event['data']['state']}"  # type: ignore[index]
        assert event_id(event["data"]["id"]) == job_id  # type: ignore[index]
    wait_for(
        "every event recorded as delivered",
        lambda: set(farm.statuses(job_ids).values()) == {CallbackStatus.DELIVERED},
    )


def test_a_worker_killed_mid_send_leaves_the_callback_to_be_sent_again(
    callback_farm: Callable[..., CallbackFarm],
) -> None:
    receiver = CallbackReceiver(hold=threading.Event())
    farm = callback_farm(receiver, callback_timeout_s=5.0)
    [job_id] = farm.submit(1)
    doomed = farm.start_worker("worker-a")
    farm.farm.start_beat()
    wait_for("the receiver to hold the first attempt", receiver.held.is_set)
    farm.farm.kill(doomed)
    hold = receiver.hold
    receiver.hold = None
    assert hold is not None
    hold.set()
    farm.start_worker("worker-b")

    wait_for(
        "the event delivered", lambda: farm.statuses([job_id])[job_id] is CallbackStatus.DELIVERED
    )
    assert event_id(job_id) in receiver.delivered_ids()
    event = farm.outbox.get(job_id)
    assert event is not None
    # the killed worker recorded nothing; the second attempt sent the same id again
    assert len(event.attempts) == 1
    assert event.attempts[0].delivered
    assert [r.webhook_id for r in receiver.received].count(event_id(job_id)) == 2


def test_a_receiver_down_then_back_gets_every_callback(
    callback_farm: Callable[..., CallbackFarm],
) -> None:
    receiver = CallbackReceiver()
    farm = callback_farm(receiver, serve=False, callback_retry_schedule_s=[0.0, 0.5, 1.0, 2.0])
    job_ids = farm.submit(10)
    farm.start_worker("worker-a")
    farm.farm.start_beat()
    wait_for(
        "a failed attempt of every event",
        lambda: all((e := farm.outbox.get(j)) is not None and e.tries > 0 for j in job_ids),
    )
    farm.serve()

    wait_for(
        "every event delivered",
        lambda: set(farm.statuses(job_ids).values()) == {CallbackStatus.DELIVERED},
    )
    assert receiver.delivered_ids() == {event_id(job_id) for job_id in job_ids}


def test_a_wrong_secret_or_a_tampered_body_fails_verification(
    callback_farm: Callable[..., CallbackFarm],
) -> None:
    receiver = CallbackReceiver(secrets=[new_secret()])
    farm = callback_farm(receiver)
    [job_id] = farm.submit(1)
    farm.start_worker("worker-a")
    farm.farm.start_beat()
    wait_for("the callback", lambda: bool(receiver.received))

    [wrong] = receiver.received
    assert not wrong.verified
    right = CallbackReceiver(secrets=CallbackSecrets(farm.outbox.engine).signing(TENANT))
    assert right.verified(wrong.body, wrong.headers)
    tampered = wrong.body.replace(job_id.encode(), b"0" * len(job_id))
    assert tampered != wrong.body
    assert not right.verified(tampered, wrong.headers)


def fluxfarm(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real `fluxfarm` command line, in a process of its own, seeing `settings`."""
    return subprocess.run(
        [sys.executable, "-m", "fluxfarm.cli", *argv],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def answers_by_id(receiver: CallbackReceiver) -> dict[str, list[int]]:
    """Each webhook-id's answers, in the order the receiver gave them."""
    found: dict[str, list[int]] = {}
    for received in receiver.received:
        found.setdefault(received.webhook_id, []).append(received.answered)
    return found


COMPRESSED = [0.0, 0.2, 0.4]


def test_events_refused_forever_go_dead_and_replay_delivers_each_once_fixed(
    callback_farm: Callable[..., CallbackFarm],
) -> None:
    receiver = CallbackReceiver(answer=500)
    farm = callback_farm(receiver, callback_retry_schedule_s=COMPRESSED)
    since = utcnow()
    job_ids = farm.submit(3)
    farm.start_worker("worker-a")
    farm.farm.start_beat()
    wait_for(
        "every event dead", lambda: set(farm.statuses(job_ids).values()) == {CallbackStatus.DEAD}
    )
    ids = {event_id(job_id) for job_id in job_ids}
    # the fault landed: every attempt of the schedule reached the receiver and was refused
    assert answers_by_id(receiver) == {webhook_id: [500] * len(COMPRESSED) for webhook_id in ids}

    receiver.answer = 200
    replayed = fluxfarm(farm.settings, "callbacks", "replay", "--since", since.isoformat())
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == "replayed 3 callback events\n"

    wait_for(
        "every replayed event delivered",
        lambda: set(farm.statuses(job_ids).values()) == {CallbackStatus.DELIVERED},
    )
    assert answers_by_id(receiver) == {
        webhook_id: [500] * len(COMPRESSED) + [200] for webhook_id in ids
    }
    assert all(r.verified for r in receiver.received)
    listed = fluxfarm(farm.settings, "callbacks", "list", "--failed")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == []


def test_an_endpoint_answering_410_is_gone_and_never_called_again(
    callback_farm: Callable[..., CallbackFarm],
) -> None:
    receiver = CallbackReceiver(answer=410)
    farm = callback_farm(receiver, callback_retry_schedule_s=COMPRESSED)
    [gone] = farm.submit(1)
    farm.start_worker("worker-a")
    farm.farm.start_beat()
    wait_for("the event gone", lambda: farm.statuses([gone])[gone] is CallbackStatus.GONE)

    # a later job's whole run outlasts the schedule that a retry of the first would follow
    receiver.answer = 200
    [later] = farm.submit(1)
    wait_for("the later event", lambda: farm.statuses([later])[later] is CallbackStatus.DELIVERED)
    assert answers_by_id(receiver) == {event_id(gone): [410], event_id(later): [200]}
    event = farm.outbox.get(gone)
    assert event is not None
    assert (event.status, event.tries, len(event.attempts)) == (CallbackStatus.GONE, 1, 1)
    listed = fluxfarm(farm.settings, "callbacks", "list", "--failed", "--json")
    assert [e["jobId"] for e in json.loads(listed.stdout)] == [gone]


def test_after_a_rotation_each_delivery_verifies_with_the_old_or_the_new_secret(
    callback_farm: Callable[..., CallbackFarm],
) -> None:
    receiver = CallbackReceiver()
    farm = callback_farm(receiver)
    [old] = receiver.secrets
    rotated = fluxfarm(farm.settings, "callbacks", "rotate", TENANT, "--overlap", "3600")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("whsec_")
    assert new != old
    shown = fluxfarm(farm.settings, "callbacks", "secret", TENANT)
    assert shown.stdout.strip() == new

    job_ids = farm.submit(3)
    farm.start_worker("worker-a")
    farm.farm.start_beat()
    expected = {event_id(job_id) for job_id in job_ids}
    wait_for("every callback", lambda: expected <= receiver.delivered_ids())
    with_old, with_new = CallbackReceiver(secrets=[old]), CallbackReceiver(secrets=[new])
    for received in receiver.received:
        assert len(received.headers["webhook-signature"].split()) == 2
        assert with_old.verified(received.body, received.headers)
        assert with_new.verified(received.body, received.headers)
        assert not CallbackReceiver(secrets=[new_secret()]).verified(
            received.body, received.headers
        )
