"""The in-flight scale test: up to 100,000 jobs submitted and waiting for their webhooks.

The simulator holds every generation for an hour, so each job stays `submitted`; the
test records the submit rate and each process's memory as 1k, 10k and 100k jobs are in
flight, and stops by itself at the job count or the time limit. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

from sqlalchemy import func, select

from bench.farms import bench_farm
from bench.procs import tree_usage
from bench.run import REQUEST, SIMULATOR_KEY
from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from fluxfarm.processes import Farm, free_port, simulated
from jobstore.schema import jobs
from jobstore.store import JobStore
from producers.client import FluxfarmClient

CHECKPOINTS = (1_000, 10_000, 100_000)
KINDS = ("web", "worker", "beat", "simulator")
WINDOW_S = 10.0
HELD_S = 3600  # longer than any run: no webhook arrives while the test lasts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in-flight-jobs", type=int, default=100_000)
    parser.add_argument("--in-flight-broker", default="redis", help="redis or rabbitmq")
    parser.add_argument(
        "--in-flight-limit-s", type=float, default=1200, help="the test stops after this"
    )


@dataclass(frozen=True)
class Checkpoint:
    in_flight: int
    elapsed_s: float
    jobs_per_s: float
    rss_mb: dict[str, float]


def run(args: argparse.Namespace) -> int:
    data_dir = (args.work_dir / "in-flight").resolve()
    with ExitStack() as stack:
        made = bench_farm(stack, data_dir, args.postgres_url)
        farm, private, database_url = made.farm, made.redis, made.database_url
        simulator_url = farm.start_simulator(
            "--api-keys", SIMULATOR_KEY, "--fast-images", "--latency-s", str(HELD_S)
        )
        web_port = free_port()
        settings = simulated(
            farm,
            simulator_url,
            SIMULATOR_KEY,
            web_port,
            broker_url=private.url if args.in_flight_broker == "redis" else args.amqp_url,
            database_url=database_url,
            log_format="json",
            job_deadline_s=4 * HELD_S,
            # the reaper would otherwise poll every job the simulator is still holding
            submitted_poll_after_s=2 * HELD_S,
        )
        farm.start_web(web_port)
        farm.start_worker("worker", args.concurrency, args.pool)
        farm.start_beat()
        store = JobStore.from_settings(settings)
        stack.callback(store.engine.dispose)
        checkpoints = _watch(farm, settings, store, args)
    print(_table(checkpoints, args))
    return 0


def _watch(
    farm: Farm, settings: Settings, store: JobStore, args: argparse.Namespace
) -> list[Checkpoint]:
    stop = threading.Event()
    total = args.in_flight_jobs
    client = FluxfarmClient(settings, tenant="in-flight", store=store)
    threads = [
        threading.Thread(target=_produce, args=(client, share, args.submit_batch, stop))
        for share in [
            total // args.producers + (i < total % args.producers) for i in range(args.producers)
        ]
    ]
    for thread in threads:
        thread.start()
    children = {c.name: c.process.pid for c in farm.children}
    query = select(func.count()).where(jobs.c.state == JobState.SUBMITTED.value)
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    found: list[Checkpoint] = []
    pending = [c for c in CHECKPOINTS if c <= total] or [total]
    try:
        while pending and time.monotonic() - started < args.in_flight_limit_s:
            time.sleep(1)
            with store.engine.connect() as conn:
                in_flight = conn.execute(query).scalar_one()
            now = time.monotonic() - started
            samples.append((now, in_flight))
            if in_flight >= pending[0]:
                pending.pop(0)
                found.append(_checkpoint(in_flight, now, samples, children))
                print(f"# {in_flight} in flight after {now:.0f}s", flush=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        client.close()
    return found


def _checkpoint(
    in_flight: int, now: float, samples: list[tuple[float, int]], children: dict[str, int]
) -> Checkpoint:
    # over the last window, or since the start (nothing in flight) if it is shorter
    earlier = [s for s in samples if s[0] <= now - WINDOW_S] or [(0.0, 0)]
    then, count_then = earlier[-1]
    rate = (in_flight - count_then) / max(now - then, 1e-9)
    rss = {k: round(tree_usage(children[k]).rss_bytes / 2**20, 1) for k in KINDS}
    return Checkpoint(in_flight, round(now, 1), round(rate, 1), rss)


def _produce(client: FluxfarmClient, count: int, batch: int, stop: threading.Event) -> None:
    for first in range(0, count, batch):
        if stop.is_set():
            return
        client.submit_many([REQUEST] * min(batch, count - first))


def _table(checkpoints: list[Checkpoint], args: argparse.Namespace) -> str:
    lines = [
        f"In flight on {args.in_flight_broker} + PostgreSQL, worker --pool {args.pool} "
        f"--concurrency {args.concurrency}, {args.submit_batch} jobs per submit_many call; "
        f"submit rate over the last {WINDOW_S:g} s, RSS now "
        "(MB, a process and its pool children). Target: both flat from 1k to 100k.",
        "",
        "| in flight | after | jobs/s | " + " | ".join(KINDS) + " |",
        "|---|---|---|" + "---|" * len(KINDS),
    ]
    for c in checkpoints:
        memory = " | ".join(f"{c.rss_mb[k]:.0f}" for k in KINDS)
        lines.append(f"| {c.in_flight:,} | {c.elapsed_s:.0f} s | {c.jobs_per_s:.0f} | {memory} |")
    return "\n".join(lines)
