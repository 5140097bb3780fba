"""The backlog scale run: a backlog queued behind the cap (the issue's 1,000,000 jobs by
default) and drained at the cap's pace, sampled every WINDOW_S: the drain rate against the
cap's, each process's memory, the worker's CPU per admitted job, the reaper's last pass and
a scrape of /metrics. Stops at the time limit; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from bench.farms import bench_farm
from bench.procs import tree_usage
from farmdomain.jobs import JobState
from fluxfarm.processes import Farm, Pipeline, start_pipeline
from jobstore.schema import jobs, leases
from jobstore.store import JobStore
from producers.client import FluxfarmClient
from worker.reaper import REAPER_LEASE

SIMULATOR_KEY = "backlog-key"
REQUEST = {"positivePrompt": "a quarry at noon", "width": 512, "height": 512}
KINDS = ("web", "worker", "beat", "simulator")
WINDOW_S = 30.0
PRODUCERS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backlog-jobs", type=int, default=1_000_000)
    parser.add_argument("--backlog-cap", type=int, default=20)
    parser.add_argument("--backlog-latency-s", type=float, default=0.2)
    parser.add_argument("--backlog-limit-s", type=float, default=900, help="the run stops here")


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    queued: int
    admitted: int
    drain_per_s: float
    worker_cpu_ms_per_job: float
    rss_mb: dict[str, float]
    reaper_pass_age_s: float
    scrape_ms: float


def run(args: argparse.Namespace) -> int:
    data_dir = (Path(args.work_dir) / "backlog").resolve()
    with ExitStack() as stack:
        made = bench_farm(stack, data_dir, args.postgres_url)
        farm, redis, database_url = made.farm, made.redis, made.database_url
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images", "--latency-s", str(args.backlog_latency_s)),
            concurrency=8,
            pool="threads",
            broker_url=redis.url,
            database_url=database_url,
            log_format="json",
            runware_max_in_flight=args.backlog_cap,
            # no job reaches its deadline while the run lasts
            job_deadline_s=24 * 3600,
        )
        store = JobStore.from_settings(pipeline.settings)
        stack.callback(store.engine.dispose)
        samples = _watch(farm, pipeline, store, args)
    print(_table(samples, args))
    return 0


def _watch(
    farm: Farm, pipeline: Pipeline, store: JobStore, args: argparse.Namespace
) -> list[Sample]:
    stop = threading.Event()
    client = FluxfarmClient(pipeline.settings, tenant="backlog", store=store)
    total = args.backlog_jobs
    shares = [total // PRODUCERS + (i < total % PRODUCERS) for i in range(PRODUCERS)]
    threads = [threading.Thread(target=_produce, args=(client, n, stop)) for n in shares]
    for thread in threads:
        thread.start()
    children = {c.name: c.process.pid for c in farm.children}
    children["worker"] = pipeline.worker.process.pid
    started = time.monotonic()
    samples: list[Sample] = []
    before = (0.0, 0, tree_usage(children["worker"]).cpu_s)
    try:
        while time.monotonic() - started < args.backlog_limit_s:
            time.sleep(WINDOW_S)
            now = time.monotonic() - started
            queued, admitted = _counts(store)
            cpu_s = tree_usage(children["worker"]).cpu_s
            drained = admitted - before[1]
            scrape_started = time.perf_counter()
            httpx.get(f"{pipeline.web_url}/metrics", timeout=30).raise_for_status()
            samples.append(
                Sample(
                    elapsed_s=round(now),
                    queued=queued,
                    admitted=admitted,
                    drain_per_s=drained / (now - before[0]),
                    worker_cpu_ms_per_job=1000 * (cpu_s - before[2]) / max(drained, 1),
                    rss_mb={k: tree_usage(children[k]).rss_bytes / 2**20 for k in KINDS},
                    reaper_pass_age_s=_reaper_pass_age(store),
                    scrape_ms=1000 * (time.perf_counter() - scrape_started),
                )
            )
            print(f"# {samples[-1]}", flush=True)
            before = (now, admitted, cpu_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        client.close()
    return samples


def _produce(client: FluxfarmClient, count: int, stop: threading.Event) -> None:
    size = client.settings.submit_many_max
    for first in range(0, count, size):
        if stop.is_set():
            return
        client.submit_many([REQUEST] * min(size, count - first))


def _counts(store: JobStore) -> tuple[int, int]:
    with store.engine.connect() as conn:
        queued = conn.execute(
            select(func.count()).where(jobs.c.state == JobState.QUEUED.value)
        ).scalar_one()
        admitted = conn.execute(
            select(func.count()).where(jobs.c.claimed_at.is_not(None))
        ).scalar_one()
    return int(queued), int(admitted)


def _reaper_pass_age(store: JobStore) -> float:
    with store.engine.connect() as conn:
        finished = conn.execute(
            select(leases.c.finished_at).where(leases.c.name == REAPER_LEASE)
        ).scalar_one_or_none()
    return -1.0 if finished is None else (datetime.now(UTC) - finished).total_seconds()


def _table(samples: list[Sample], args: argparse.Namespace) -> str:
    cap_rate = args.backlog_cap / args.backlog_latency_s
    lines = [
        f"Backlog: {args.backlog_jobs:,} jobs queued by {PRODUCERS} threads behind a cap of"
        f" {args.backlog_cap} at {args.backlog_latency_s:g} s per image (at most"
        f" {cap_rate:.0f} jobs/s); Redis + PostgreSQL, one worker (threads 8); every"
        f" {WINDOW_S:g} s: jobs queued, admitted so far, drain rate over the window, worker"
        " CPU-ms per admitted job (claim, POST, copies, dispatcher), RSS (MB), seconds since"
        " the reaper's last pass ended, one scrape of web's /metrics.",
        "",
        "| after | queued | admitted | jobs/s | worker CPU-ms/job | "
        + " | ".join(f"{k} MB" for k in KINDS)
        + " | reaper pass age | /metrics ms |",
        "|---|---|---|---|---|" + "---|" * len(KINDS) + "---|---|",
    ]
    for s in samples:
        memory = " | ".join(f"{s.rss_mb[k]:.0f}" for k in KINDS)
        lines.append(
            f"| {s.elapsed_s:.0f} s | {s.queued:,} | {s.admitted:,} | {s.drain_per_s:.1f} |"
            f" {s.worker_cpu_ms_per_job:.1f} | {memory} | {s.reaper_pass_age_s:.0f} s |"
            f" {s.scrape_ms:.0f} |"
        )
    return "\n".join(lines)
