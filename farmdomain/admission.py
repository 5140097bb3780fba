"""Admission: which waiting jobs go to Runware next, and how many may be in flight at once.

This module holds the part of admission without I/O: the order (`FairShare`), the rank of a
job inside its tenant (`ranked_at`), the limit (`AdaptiveLimit`) and the rules of weights
and priorities. The store's count (jobstore.capacity) and the dispatcher (worker.dispatcher)
apply them:

- **The count lives in the store.** A job holds one unit of its Runware key's capacity
  from the `queued -> submitting` claim to its terminal transition. The claim takes the
  unit under the key row's lock, in the claim's transaction, and a trigger gives it back
  in the terminal transition's statement, so every process on every host sees one exact
  figure. A unit held by a worker that died after its claim is a job stuck in
  `submitting`; the reaper resubmits it (same taskUUID) after `submitting_stale_after_s`,
  so capacity is never lost for longer than that bound plus one reaper interval.
- **Waiting happens in the store, not on the broker.** A submit message claims its own
  job only while nothing waits; once a claim finds no free unit, the key's row says a
  backlog exists and every message's claim takes nothing until the dispatcher has
  admitted every waiting job. The dispatcher reads the waiting jobs from the store, orders
  them with `FairShare` and claims as many as the free units allow. Broker order does not
  matter: a tenant's 10,000-job backlog does not stand in front of another tenant's first
  job, and messages still arriving do not pass jobs that wait.
- **Fairness** is weighted fair queueing by virtual time (start-time fair queueing, the
  idea of Hatchet's GROUP_ROUND_ROBIN with weights), over occupancy: each round starts a
  tenant's virtual time at the units it holds divided by its weight, and each job admitted
  advances it by 1/weight; the lowest goes next. Since the units held are in the store,
  every dispatcher in every process computes the same order, none keeps state, and a
  tenant back from idleness holds nothing, so it goes first without banking credit. With
  every tenant backlogged the units, and so the admissions, split by weight.
- **Priority inside a tenant** ranks a job at its creation time moved earlier by
  priority times `aging_s`: a job of priority p goes before any job of priority q < p
  created less than (p - q) times `aging_s` before it, and after that the older first,
  so no job waits forever behind fresher high-priority ones.
- **Backpressure** is `AdaptiveLimit`: the fleet's limit under the cap halves on a
  429/503/504 (and nothing is admitted while Runware's Retry-After runs) and climbs back
  by one per limit's worth of admissions. The limit is kept in the key's row beside the
  count; a refused job is retried with its unit until its deadline.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from farmdomain.errors import FieldIssue

# a job's priority inside its tenant: higher goes first
PRIORITY_MIN, PRIORITY_MAX, DEFAULT_PRIORITY = -10, 10, 0
# waiting this long is worth one step of priority (FLUXFARM_ADMISSION_PRIORITY_AGING_S)
DEFAULT_AGING_S = 60.0
# a tenant's weight in the fair sharing between tenants; without one, a tenant weighs 1
DEFAULT_WEIGHT = 1.0
WEIGHT_MAX = 1000.0


def runware_key_id(api_key: str | None) -> str:
    """The store's name for a Runware key's capacity: a digest that names the key without
    revealing it, the same in every process that holds the key."""
    digest = hashlib.sha256(b"fluxfarm runware key\0" + (api_key or "").encode()).hexdigest()
    return digest[:32]


def priority_issues(priority: object) -> list[FieldIssue]:
    """Why `priority` cannot be a job's priority (field `priority`), if it cannot."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        return [FieldIssue("priority", "integer", "must be an integer")]
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        message = f"must be {PRIORITY_MIN} to {PRIORITY_MAX}"
        return [FieldIssue("priority", "range", message)]
    return []


def weight_issues(weight: float) -> list[FieldIssue]:
    """Why `weight` cannot be a tenant's weight (field `weight`), if it cannot."""
    if not (math.isfinite(weight) and 0 < weight <= WEIGHT_MAX):
        return [
            FieldIssue("weight", "range", f"must be a number over 0 and at most {WEIGHT_MAX:g}")
        ]
    return []


def ranked_at(created_at: datetime, priority: int, aging_s: float) -> datetime:
    """A job's place in its tenant's line: the earliest goes first (see the module's doc)."""
    return created_at - timedelta(seconds=priority * aging_s)


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

    `virtual` and `clock` may be kept by the caller between rounds; the dispatcher makes
    one per round with `from_occupancy` instead, so the share is the store's, the same in
    every process. `weights` default to DEFAULT_WEIGHT.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    virtual: dict[str, float] = field(default_factory=dict)
    # the virtual time of the latest admission: where a tenant that had no work rejoins
    clock: float = 0.0
    aging_s: float = DEFAULT_AGING_S

    @classmethod
    def from_occupancy(
        cls, weights: Mapping[str, float], held: Mapping[str, int], aging_s: float
    ) -> FairShare:
        """A round's fair share: each tenant starts at the units it holds over its weight."""
        made = cls(weights, aging_s=aging_s)
        made.virtual = {tenant: units / made.weight(tenant) for tenant, units in held.items()}
        return made

    def weight(self, tenant: str) -> float:
        return self.weights.get(tenant, DEFAULT_WEIGHT)

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

    @classmethod
    def restored(cls, cap: int, limit: float | None) -> AdaptiveLimit:
        """The limit as the store kept it (None: never lowered, the cap)."""
        made = cls(cap)
        if limit is not None:
            made.limit = min(float(cap), max(float(made.floor), limit))
        return made

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
