"""The test servers themselves: private ones come up, survive a kill and leave nothing
behind; shared ones give each run a db and a vhost no other run holds."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from multiprocessing.synchronize import Barrier
from pathlib import Path

import psycopg
import pytest
import redis
from kombu import Connection

from tests import services
from tests.hosts import network, unavailable_reason
from tests.private_servers import (
    PrivatePostgres,
    PrivateRabbitMQ,
    PrivateRedis,
    restart,
    running,
    server_dir,
)
from tests.s3server import mend_recording

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_private_postgres_keeps_committed_rows_across_a_kill_and_a_restart() -> None:
    with server_dir("postgres") as directory:
        server = PrivatePostgres(directory)
        with running(server):
            url = server.create_database("kept").replace("+psycopg", "")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE t (n int)")
                conn.execute("INSERT INTO t VALUES (7)")
            server.kill()
            server.start()
            restart(server)
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT n FROM t").fetchall() == [(7,)]
            assert server.server.process is not None
            pid = server.server.process.pid
        assert not _alive(pid)
    assert not directory.exists()


def test_private_redis_loses_its_keys_on_a_restart_and_the_machine_redis_keeps_its_own() -> None:
    machine = redis.Redis.from_url(services.REDIS_URL.rsplit("/", 1)[0] + "/0")
    marker = f"fluxfarm:test-marker:{services.RUN_ID}"
    machine.set(marker, "1", ex=60)
    try:
        with server_dir("redis") as directory:
            server = PrivateRedis(directory)
            with running(server):
                client = redis.Redis.from_url(server.url)
                client.set("k", "v")
                server.kill()
                server.start()
                assert client.get("k") is None
                client.close()
        assert machine.get(marker) == b"1"
    finally:
        machine.delete(marker)
        machine.close()


@pytest.mark.timeout(180)
def test_private_rabbitmq_node_keeps_durable_queues_across_a_restart() -> None:
    with server_dir("rabbitmq") as directory:
        server = PrivateRabbitMQ(directory, "selftest")
        assert server.port != 5672
        with running(server):
            with Connection(server.url) as conn:
                queue = conn.SimpleQueue("kept")
                queue.put({"n": 1})
                queue.close()
            restart(server)
            assert "kept\t1" in server.ctl("list_queues", "name", "messages")
            assert server.server.process is not None
            pid = server.server.process.pid
        assert not _alive(pid)


def test_running_stops_the_server_when_the_block_fails() -> None:
    with server_dir("redis") as directory:
        server = PrivateRedis(directory)
        with contextlib.suppress(ZeroDivisionError), running(server):
            process = server.server.process
            _ = 1 / 0
        assert process is not None
        assert process.poll() is not None


def test_two_runs_get_different_redis_dbs_and_each_releases_its_own() -> None:
    admin = redis.Redis.from_url(services.REDIS_URL.rsplit("/", 1)[0] + "/0")
    with services.run_redis_db() as first, services.run_redis_db() as second:
        assert first != second
        claims = [f"fluxfarm:test-db:{url.rsplit('/', 1)[1]}" for url in (first, second)]
        assert [admin.get(claim) for claim in claims] == [services.RUN_ID.encode()] * 2
    assert [admin.get(claim) for claim in claims] == [None, None]
    admin.close()


def test_a_run_vhost_exists_while_held_and_is_deleted_after() -> None:
    # a purpose of its own: the plain vhost is the session's, which other tests hold
    with services.run_rabbitmq_vhost("probe") as url:
        vhost = url.rsplit("/", 1)[1]
        assert services.RUN_ID in vhost
        with Connection(url) as conn:
            conn.SimpleQueue("probe").put({"n": 1})
        assert vhost in services.rabbitmqctl("list_vhosts").split()
    assert vhost not in services.rabbitmqctl("list_vhosts").split()


@pytest.mark.parametrize(
    ("written", "mended"),
    [
        (b'{"a": 1}\n{"b": 2}\n', b'{"a": 1}\n{"b": 2}\n'),
        (b'{"a": 1}\n{"b": 2}', b'{"a": 1}\n{"b": 2}\n'),
        (b'{"a": 1}\n{"b": ', b'{"a": 1}\n'),
        (b'{"b": ', b""),
        # two requests recorded at once: both records, then both newlines
        (b'{"a": 1}{"b": "}{"}\n\n{"c": 3}\n', b'{"a": 1}\n{"b": "}{"}\n{"c": 3}\n'),
        (b'{"a": 1}\n{"b": 2}{"c": ', b'{"a": 1}\n{"b": 2}\n'),
    ],
    ids=["whole", "newline-missing", "torn-line", "only-a-torn-line", "glued", "glued-torn"],
)
def test_a_moto_recording_is_mended_to_one_whole_request_a_line(
    tmp_path: Path, written: bytes, mended: bytes
) -> None:
    """What replay reads after a kill, or after two requests recorded at once."""
    recording = tmp_path / "moto-requests.jsonl"
    recording.write_bytes(written)
    mend_recording(recording)
    assert recording.read_bytes() == mended


def _subnet_of_a_network(start: Barrier, found: multiprocessing.Queue[str]) -> None:
    start.wait()
    with network(["a", "b"]) as net:
        found.put(net["a"].address.rsplit(".", 1)[0])
        # held until every run has made its own
        start.wait()


@pytest.mark.skipif(unavailable_reason() is not None, reason="no network namespaces here")
def test_runs_making_their_hosts_at_once_each_get_a_subnet_of_their_own() -> None:
    runs = 4
    context = multiprocessing.get_context("fork")
    start, found = context.Barrier(runs), context.Queue()
    processes = [
        context.Process(target=_subnet_of_a_network, args=(start, found)) for _ in range(runs)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * runs
    subnets = [found.get(timeout=1) for _ in range(runs)]
    assert len(set(subnets)) == runs, subnets
