"""Token buckets for the job API's rate limits: in Redis, shared by every web process of a
farm, or in the process when the farm has no Redis.

Redis holds each bucket as a hash that one Lua script refills and takes from, atomically
and on Redis's own clock, so any number of web processes on any number of hosts draw from
one bucket per caller, and no process's clock matters. Idle buckets expire on their own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

# buckets kept in one process; the least recently used are forgotten beyond this
MAX_LOCAL_BUCKETS = 10_000
# the answer of Redis a request waits for at most; past it the request goes unthrottled
REDIS_TIMEOUT_S = 0.25
KEY_PREFIX = "fluxfarm:rate:"

# KEYS[1] the bucket; ARGV rate (tokens/s), burst, cost (0: only look). Returns whether
# the cost was taken and the tokens left, as text (Lua numbers reach redis-py as integers).
_TAKE = """
local now_s, now_us = unpack(redis.call('TIME'))
local now = tonumber(now_s) + tonumber(now_us) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken = 0
if cost > 0 and tokens >= cost then
  tokens = tokens - cost
  taken = 1
end
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + 1) * 1000))
end
return {taken, tostring(tokens)}
"""


@dataclass(frozen=True)
class Decision:
    """What one bucket said: taken (or, when only looked at, whether it could be), and
    what the RateLimit-* headers tell the caller."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float

    @classmethod
    def of(cls, allowed: bool, tokens: float, rate: float, burst: float) -> Decision:
        return cls(
            allowed=allowed,
            limit=int(burst),
            remaining=max(0, int(tokens)),
            reset_s=max(0.0, (burst - tokens) / rate),
            retry_after_s=0.0 if allowed else max(0.0, (1 - tokens) / rate),
        )


class Buckets(Protocol):
    """Where the buckets live; `cost` 0 looks without taking."""

    async def take(self, key: str, rate: float, burst: int, cost: int = 1) -> Decision: ...

    async def close(self) -> None: ...


class LocalBuckets:
    """Buckets in this process: a farm without Redis runs one web process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    async def take(self, key: str, rate: float, burst: int, cost: int = 1) -> Decision:
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            taken = 0 < cost <= tokens
            self._buckets[key] = (tokens - cost if taken else tokens, now)
            while len(self._buckets) > MAX_LOCAL_BUCKETS:
                self._buckets.popitem(last=False)
        allowed = taken or (cost == 0 and tokens >= 1)
        return Decision.of(allowed, tokens - cost if taken else tokens, rate, burst)

    async def close(self) -> None:
        return None


class RedisBuckets:
    """Buckets in Redis, shared by every web process that names the same Redis."""

    def __init__(self, url: str) -> None:
        self._redis = Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._take = self._redis.register_script(_TAKE)
        self._warned = False

    async def take(self, key: str, rate: float, burst: int, cost: int = 1) -> Decision:
        try:
            taken, tokens = await self._take(keys=[KEY_PREFIX + key], args=[rate, burst, cost])
        except (RedisError, OSError) as exc:
            # a limiter that is away must not take the API down with it: the request goes
            # on unthrottled, and the operator hears of it once per outage
            if not self._warned:
                self._warned = True
                log.warning("rate_limit.unavailable", error=type(exc).__name__)
            return Decision.of(True, float(burst), rate, burst)
        self._warned = False
        left = float(tokens)
        return Decision.of(bool(taken) or (cost == 0 and left >= 1), left, rate, burst)

    async def close(self) -> None:
        # redis-py 5 renamed close() aclose() (close warns); types-redis predates it
        await self._redis.aclose()  # type: ignore[attr-defined]
