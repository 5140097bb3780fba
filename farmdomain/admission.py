"""Admission: which waiting jobs go to Runware next, and how many may be in flight at once.

This module holds the part of admission without I/O: the order (`FairShare`) and the
limit (`AdaptiveLimit`). The store's count and the dispatcher that will use them are
designed as follows and not built yet; until they are, workers submit what they hold.

- **The count lives in the store.** A job holds one unit of its Runware key's capacity
  from the `queued -> submitting` claim to its terminal transition. The claim is one
  conditional statement: it takes the unit only while the key's row says fewer than the
  cap are held, and the terminal transition gives it back in the same transaction, so
  every process on every host sees one exact figure. A unit held by a worker that died
  after its claim is a job stuck in `submitting`; the reaper resubmits it (same taskUUID)
  after `submitting_stale_after_s`, so capacity is never lost for longer than that bound
  plus one reaper interval, and the job keeps its unit meanwhile (it may be in flight).
- **Waiting happens in the store, not on the broker.** A queued job's message only wakes
  a dispatcher; the dispatcher reads the waiting jobs per tenant from the store, orders
  them with `FairShare` below and claims as many as the free capacity allows. A job that
  is not admitted stays `queued` with no message going round: it is picked when a
  terminal transition frees a unit (the dispatcher is woken by it, and also runs on a
  short timer, so nothing depends on a wake-up arriving). Broker order does not matter:
  a tenant's 10,000-job backlog does not stand in front of another tenant's first job.
- **Fairness** is weighted fair queueing by virtual time (the start-time fair queueing of
  Goyal et al., the same idea as Hatchet's GROUP_ROUND_ROBIN with weights): each tenant
  with work has a virtual time that each admitted job advances by 1/weight; the tenant
  with the lowest virtual time goes next. A tenant that comes back after an idle spell
  starts at the virtual time of the latest admission, so idleness is not banked credit.
  Inside a tenant a job's priority orders it, aged by its wait so no job starves.
- **Backpressure** is `AdaptiveLimit`: the fleet's limit under the cap falls by half on a
  429/503/504 (and admits nothing until a Retry-After has passed) and climbs back by one
  per limit's worth of acknowledged submissions. The limit is shared by keeping it in the
  key's row beside the count; a refused job goes back to `queued` and waits for admission
  again, until its deadline.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Waiting:
    """A job waiting for admission, as the dispatcher sees it."""

    tenant: str
    job_id: str
    priority: int = 0
    # seconds it has been waiting when the dispatcher looks
    waited_s: float = 0.0


def effective_priority(job: Waiting, aging_s: float) -> float:
    """The job's priority plus one step for every `aging_s` it has waited: a low-priority
    job overtakes fresher high-priority ones in time, so none waits forever."""
    return job.priority + job.waited_s / aging_s


@dataclass
class FairShare:
    """Weighted fair sharing of admissions between tenants by virtual time.

    `virtual` and `clock` are kept by the caller between rounds (the store keeps them), so
    a share holds across dispatchers and restarts; `weights` default to 1.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    virtual: dict[str, float] = field(default_factory=dict)
    # the virtual time of the latest admission: where a tenant that had no work rejoins
    clock: float = 0.0
    aging_s: float = 60.0

    def weight(self, tenant: str) -> float:
        return self.weights.get(tenant, 1.0)

    def admit(self, waiting: Iterable[Waiting], slots: int) -> list[Waiting]:
        """Up to `slots` of `waiting`, in the order they should be admitted; the tenants'
        virtual times advance by what each was given."""
        per_tenant: dict[str, list[tuple[float, float, str, Waiting]]] = {}
        for job in waiting:
            # highest effective priority first, then the longest waiting
            key = (-effective_priority(job, self.aging_s), -job.waited_s, job.job_id, job)
            per_tenant.setdefault(job.tenant, []).append(key)
        if not per_tenant or slots <= 0:
            return []
        for queue in per_tenant.values():
            heapq.heapify(queue)
        for tenant in per_tenant:
            # a tenant back from idleness joins at the current virtual time, not behind it
            self.virtual[tenant] = max(self.virtual.get(tenant, self.clock), self.clock)
        turns = [(self.virtual[t], t) for t in per_tenant]
        heapq.heapify(turns)
        admitted: list[Waiting] = []
        while turns and len(admitted) < slots:
            self.clock, tenant = heapq.heappop(turns)
            queue = per_tenant[tenant]
            admitted.append(heapq.heappop(queue)[3])
            self.virtual[tenant] += 1.0 / self.weight(tenant)
            if queue:
                heapq.heappush(turns, (self.virtual[tenant], tenant))
        return admitted


@dataclass
class AdaptiveLimit:
    """The fleet's in-flight limit under the configured cap: additive increase on
    acknowledged submissions, multiplicative decrease on overload answers."""

    cap: int
    floor: int = 1
    decrease: float = 0.5
    limit: float = field(init=False)
    # monotonic seconds before which nothing is admitted (a Retry-After)
    paused_until: float = 0.0

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ValueError(f"cap: must be at least 1, got {self.cap}")
        if not 1 <= self.floor <= self.cap:
            raise ValueError(f"floor: must be between 1 and cap ({self.cap}), got {self.floor}")
        self.limit = float(self.cap)

    def allowed(self, now: float) -> int:
        """How many tasks may be in flight at `now`."""
        return 0 if now < self.paused_until else int(self.limit)

    def free(self, in_flight: int, now: float) -> int:
        """Slots a dispatcher may fill at `now` with `in_flight` already held."""
        return max(0, self.allowed(now) - in_flight)

    def acknowledged(self, count: int = 1) -> None:
        """Runware took `count` tasks: one more slot per limit's worth of them."""
        self.limit = min(float(self.cap), self.limit + count / self.limit)

    def overloaded(self, now: float, retry_after_s: float | None = None) -> None:
        """Runware answered 429/503/504: halve the limit, and hold off for Retry-After."""
        self.limit = max(float(self.floor), self.limit * self.decrease)
        if retry_after_s:
            self.paused_until = max(self.paused_until, now + retry_after_s)
