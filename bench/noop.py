"""The engine's ceiling: a Celery task that does nothing, on the farm's own Celery config.

`celery -A bench.noop worker` runs it with the broker, acks_late and prefetch
every farm process uses; each task counts itself in Redis so the benchmark knows when
the last one ran.
"""

from __future__ import annotations

from functools import cache

import redis
from celery import Celery

from farmdomain.broker import celery_config
from farmdomain.settings import get_settings

NOOP_TASK = "bench.noop"
NOOP_QUEUE = "bench.noop"

app = Celery("bench.noop")
# lazily: importing the module (the benchmark does, for the names) reads no settings
app.add_defaults(lambda: celery_config(get_settings()))


@cache
def _counter(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(url)


@app.task(name=NOOP_TASK, ignore_result=True)
def noop(counter_url: str, key: str) -> None:
    _counter(counter_url).incr(key)
