"""Fleet-wide leases: one holder at a time, an expiry that frees a dead holder's lease,
and a race of many contenders with exactly one winner."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from jobstore.leases import Leases
from jobstore.store import JobStore
from tests.jobstore.conftest import Clock


def _name() -> str:
    # the PostgreSQL database is shared by the session's tests: a name of each test's own
    return f"duty-{uuid.uuid4().hex[:12]}"


def test_one_holder_at_a_time_until_it_gives_back(store: JobStore, clock: Clock) -> None:
    leases, name = Leases(store.engine, clock), _name()

    assert leases.take(name, "worker-a", ttl_s=30)
    assert not leases.take(name, "worker-b", ttl_s=30)
    # the holder renews its own
    assert leases.take(name, "worker-a", ttl_s=30)
    clock.advance(5)
    leases.give_back(name, "worker-a")

    lease = leases.get(name)
    assert lease is not None
    assert lease.finished_at == clock()
    assert leases.take(name, "worker-b", ttl_s=30)


def test_a_dead_holders_lease_frees_when_it_expires(store: JobStore, clock: Clock) -> None:
    leases, name = Leases(store.engine, clock), _name()
    assert leases.take(name, "worker-a", ttl_s=30)

    clock.advance(29)
    assert not leases.take(name, "worker-b", ttl_s=30)
    clock.advance(1)
    assert leases.take(name, "worker-b", ttl_s=30)
    # a late give-back by the old holder does not end the new holder's lease
    leases.give_back(name, "worker-a")
    assert not leases.take(name, "worker-c", ttl_s=30)


def test_contenders_racing_for_a_new_lease_have_one_winner(store: JobStore, clock: Clock) -> None:
    leases, name = Leases(store.engine, clock), _name()
    contenders = 8
    start = Barrier(contenders)

    def contend(index: int) -> bool:
        start.wait()
        return leases.take(name, f"worker-{index}", ttl_s=30)

    with ThreadPoolExecutor(contenders) as pool:
        won = list(pool.map(contend, range(contenders)))

    assert won.count(True) == 1
    lease = leases.get(name)
    assert lease is not None
    assert lease.holder == f"worker-{won.index(True)}"
