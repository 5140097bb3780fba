"""The fleet-wide admission count: units of a Runware key's capacity, taken by claims under
the key row's lock and given back by the terminal transition's trigger; the key's pause,
set when Runware asks to slow down, during which no first claim takes anything; the limit
under the cap that the pause lowers (AdaptiveLimit); and the backlog flag, set while jobs
wait, during which only the dispatcher's claims take units."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Connection,
    Float,
    Integer,
    String,
    bindparam,
    exists,
    or_,
    select,
    text,
    update,
)

from farmdomain.admission import DEFAULT_AGING_S, AdaptiveLimit, runware_key_id
from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from jobstore.schema import jobs, runware_capacity


@dataclass(frozen=True)
class Admission:
    """Which key a store's claims count against, the most it may hold (0: no limit), and
    what one step of a job's priority is worth in waiting."""

    key_id: str
    cap: int
    aging_s: float = DEFAULT_AGING_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        key = settings.runware_api_key
        return cls(
            runware_key_id(key.get_secret_value() if key else None),
            settings.runware_max_in_flight,
            settings.admission_priority_aging_s,
        )


UNCAPPED = Admission(runware_key_id(None), 0)


@dataclass(frozen=True)
class Room:
    """What a locked key row allows a claim: `free` units of the `wanted`, under `limit`."""

    wanted: int
    free: int
    # the fleet's limit under the cap; None when uncapped
    limit: AdaptiveLimit | None
    # the claim found jobs waiting, or leaves some of its own waiting: a backlog exists
    backlog: bool


# what a claim of retries alone needs: no unit, no lock of the key's row
NO_ROOM = Room(0, 0, None, False)


@dataclass(frozen=True)
class KeyState:
    """A key's row as the dispatcher reads it."""

    held: int
    cap: int
    # what may be held now: the cap, or the adaptive limit under it (0: uncapped)
    limit: int
    paused_until: datetime | None


_COLUMNS = runware_capacity.c
# Makes the key's row exist with this process's cap, takes its lock and reads it: one
# statement on both dialects. Every first claim passes here, so claims of one key are
# serialized on this row until their transaction commits, and none reads a stale count.
_LOCK = (
    text(
        "INSERT INTO runware_capacity (key_id, held, cap, backlog) VALUES (:key_id, 0, :cap,"
        " false) ON CONFLICT (key_id) DO UPDATE SET cap = excluded.cap"
        " RETURNING held, cap, paused_until, backlog, adaptive_limit"
    )
    .bindparams(bindparam("key_id", type_=String()), bindparam("cap", type_=Integer()))
    .columns(
        _COLUMNS.held,
        _COLUMNS.cap,
        _COLUMNS.paused_until,
        _COLUMNS.backlog,
        _COLUMNS.adaptive_limit,
    )
)
_TAKE = (
    update(runware_capacity)
    .where(_COLUMNS.key_id == bindparam("of_key"))
    .values(
        held=_COLUMNS.held + bindparam("taken", type_=Integer()),
        backlog=bindparam("backlog", type_=Boolean()),
        adaptive_limit=bindparam("limit", type_=Float()),
    )
)
# a pause only ever grows: a shorter Retry-After read later does not cut a longer one short
_PAUSE = (
    update(runware_capacity)
    .where(
        _COLUMNS.key_id == bindparam("of_key"),
        or_(_COLUMNS.paused_until.is_(None), _COLUMNS.paused_until < bindparam("until")),
    )
    .values(paused_until=bindparam("until"))
)
_LOWER = (
    update(runware_capacity)
    .where(_COLUMNS.key_id == bindparam("of_key"))
    .values(adaptive_limit=bindparam("limit", type_=Float()))
)
# the backlog is over once no job waits; a job that starts waiting meanwhile sets it again
# with its claim, and the dispatcher's next round reads it from the store either way
_BACKLOG_OVER = (
    update(runware_capacity)
    .where(_COLUMNS.key_id == bindparam("of_key"), _COLUMNS.backlog)
    .where(~exists().where(jobs.c.state == JobState.QUEUED.value, jobs.c.attempts == 0))
    .values(backlog=False)
)


def _limit(cap: int, kept: float | None) -> AdaptiveLimit | None:
    return None if cap == 0 else AdaptiveLimit.restored(cap, kept)


def lock_free(
    conn: Connection, admission: Admission, wanted: int, now: datetime, admitted: bool
) -> Room:
    """Lock the key's row in the caller's transaction; how many of `wanted` units are free:
    none while the key is paused, and none for a submit message's claim (not `admitted` by
    the dispatcher) while jobs wait under a cap."""
    row = conn.execute(_LOCK, {"key_id": admission.key_id, "cap": admission.cap}).one()
    limit = _limit(admission.cap, row.adaptive_limit)
    if row.paused_until is not None and row.paused_until > now:
        return Room(wanted, 0, limit, limit is not None)
    if limit is None:
        return Room(wanted, wanted, None, False)
    if row.backlog and not admitted:
        return Room(wanted, 0, limit, True)
    free = max(0, min(wanted, int(limit.limit) - row.held))
    return Room(wanted, free, limit, row.backlog or (free < wanted and not admitted))


def take(conn: Connection, admission: Admission, room: Room, taken: int) -> None:
    """`taken` more units held, in the transaction that locked the row and claimed them;
    the limit climbs by what was admitted, and the backlog is recorded."""
    if room.limit is None and not taken:
        return
    if room.limit is not None:
        room.limit.acknowledged(taken)
    params = {
        "of_key": admission.key_id,
        "taken": taken,
        "backlog": room.backlog,
        "limit": None if room.limit is None else room.limit.limit,
    }
    conn.execute(_TAKE, params)


def held(conn: Connection, key_id: str) -> tuple[int, int]:
    """(held, cap) of a key; (0, 0) before its first claim."""
    query = select(_COLUMNS.held, _COLUMNS.cap).where(_COLUMNS.key_id == key_id)
    row = conn.execute(query).first()
    return (row.held, row.cap) if row else (0, 0)


def key_state(conn: Connection, key_id: str) -> KeyState:
    """The key's count, cap, limit under the cap and pause, in one read."""
    query = select(runware_capacity).where(_COLUMNS.key_id == key_id)
    row = conn.execute(query).first()
    if row is None:
        return KeyState(0, 0, 0, None)
    limit = _limit(row.cap, row.adaptive_limit)
    return KeyState(row.held, row.cap, 0 if limit is None else int(limit.limit), row.paused_until)


def pause(conn: Connection, admission: Admission, until: datetime, now: datetime) -> None:
    """No first claim of the key before `until`, unless it is already paused for longer;
    the limit under the cap halves, once per pause: refusals that arrive together are one
    sign of overload, not many."""
    row = conn.execute(_LOCK, {"key_id": admission.key_id, "cap": admission.cap}).one()
    limit = _limit(admission.cap, row.adaptive_limit)
    if limit is not None and (row.paused_until is None or row.paused_until <= now):
        limit.overloaded(0.0)
        conn.execute(_LOWER, {"of_key": admission.key_id, "limit": limit.limit})
    conn.execute(_PAUSE, {"of_key": admission.key_id, "until": until})


def paused_until(conn: Connection, key_id: str) -> datetime | None:
    """The end of the key's latest pause, past or not; None if it was never paused."""
    query = select(_COLUMNS.paused_until).where(_COLUMNS.key_id == key_id)
    found: datetime | None = conn.execute(query).scalar_one_or_none()
    return found


def end_backlog(conn: Connection, key_id: str) -> None:
    """Submit messages claim their own jobs again, if no job waits."""
    conn.execute(_BACKLOG_OVER, {"of_key": key_id})
