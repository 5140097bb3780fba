"""The dispatcher (started by beat): admits the jobs waiting for the Runware cap, in fair
order between tenants, as units free.

A first claim that finds the cap held in full, or the fleet paused by a rate refusal
(`JobStore.pause_claims`), leaves its job `queued` and its message is done: nothing goes
round on the broker, and the key's row records a backlog, during which submit messages
claim nothing, so jobs still arriving queue behind the fair order instead of passing it.
The waiting jobs are read from the store, ordered by `FairShare` over the units each
tenant holds and the tenants' weights (`fluxfarm tenants weight`), and handed to the
submit path (the process's `admitted` batcher), whose claim takes each job's unit exactly:
several dispatchers at once, or a submit message racing one, can admit no more than the
cap. Once none waits, the backlog is over and messages claim their own jobs again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from farmdomain.admission import FairShare
from farmdomain.values import utcnow
from jobstore.waiting import held_by_tenant, waiting_jobs

if TYPE_CHECKING:
    from worker.app import FarmTask
    from worker.context import WorkerContext

log = structlog.get_logger(__name__)

# the runs' reads of the key's row while jobs wait, per interval: one row by its key
POLLS_PER_INTERVAL = 10


def dispatch(task: FarmTask) -> None:
    """Admit waiting jobs until none waits or the interval is over; the next run, one
    interval after this one started, goes on from there."""
    context = task.context
    interval_s = context.settings.admission_dispatch_interval_s
    until = time.monotonic() + interval_s
    admitted = 0
    while True:
        count, more = dispatch_once(context)
        admitted += count
        if not more or time.monotonic() + interval_s / POLLS_PER_INTERVAL >= until:
            break
        time.sleep(interval_s / POLLS_PER_INTERVAL)
    if admitted:
        log.info("dispatcher.admitted", jobs=admitted)


def dispatch_once(context: WorkerContext) -> tuple[int, bool]:
    """One round: as many waiting jobs as the limit under the cap has free units, in fair
    order, submitted, once no pause holds the fleet back; returns how many were handed to
    the submit path and whether jobs may still be waiting."""
    now = utcnow()
    key = context.store.key_state()
    if key.paused_until is not None and key.paused_until > now:
        # every claim would take nothing: the jobs wait, and only the key's row is read
        return 0, True
    created_before = None
    if key.cap == 0:
        if key.paused_until is None:
            # uncapped and never paused: every submit message claims its own job
            return 0, False
        # uncapped: only the jobs whose messages met a pause wait here, all created before
        # its end; those created after it are claimed by their own messages
        free, created_before = context.settings.submit_batch_max, key.paused_until
    else:
        free = key.limit - key.held
    if free <= 0:
        return 0, True
    engine = context.store.engine
    # one more than the units free: whether any is left waiting after this round
    waiting = waiting_jobs(engine, free + 1, now, created_before)
    chosen = []
    if waiting:
        held = held_by_tenant(engine, context.store.admission.key_id)
        share = FairShare.from_occupancy(
            context.weights.current(), held, context.settings.admission_priority_aging_s
        )
        chosen = share.admit(waiting, free)
        context.admitted.run_all([(job.job_id, 0) for job in chosen])
    more = len(waiting) > len(chosen)
    if not more and key.cap:
        context.store.end_backlog()
    return len(chosen), more
