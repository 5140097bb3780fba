"""`fluxfarm bench --copy`: what keeping every result image costs, per results store.

For each mode (the directory; an S3 server, moto over HTTP on 127.0.0.1, copied into or
uploaded to by Runware; URL or inline output) one farm runs on a private Redis and
PostgreSQL, its copies on a worker of their own
(`--queues fluxfarm.copy`) so that this worker's CPU is the copies' alone. Jobs are
submitted in batches and measured until every image is kept: the copy's CPU-ms and
seconds per image (the copy task's own time: fetch, decode, hash, write, record), bytes
kept per second, and jobs/s created -> kept against the no-op ceiling of the same broker.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from bench.farms import bench_farm
from bench.procs import tree_usage
from bench.run import SIMULATOR_KEY, BenchConfig, Runner
from farmdomain.broker import COPY_QUEUE, QUEUES
from fluxfarm.processes import Child, start_pipeline
from jobstore.schema import jobs, result_copies, results
from jobstore.store import JobStore
from tests.s3server import ACCESS_KEY, SECRET_KEY, MotoS3


@dataclass(frozen=True)
class Mode:
    """One way of keeping images: the store, whether Runware uploads (uploadEndpoint),
    and the jobs' outputType."""

    store: str
    upload: bool
    output_type: str


MODES = {
    "directory": Mode("directory", False, "URL"),
    "s3": Mode("s3", False, "URL"),
    "s3-upload": Mode("s3", True, "URL"),
    "s3-inline": Mode("s3", False, "base64Data"),
    "s3-inline-upload": Mode("s3", True, "base64Data"),
}
TARGET_CEILING_RATIO = 0.5
# a result of a usual size; the simulator's fast images compress as a photo would not
COPY_REQUEST: dict[str, Any] = {
    "positivePrompt": "A lighthouse of stacked teacups on a basalt cliff, storm light",
    "width": 1024,
    "height": 1024,
    "numberResults": 1,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--copy", action="store_true", help="measure the copy into the results store instead"
    )
    parser.add_argument("--copy-jobs", type=int, default=1000, help="jobs per store")
    parser.add_argument(
        "--copy-modes",
        default=",".join(MODES),
        help=f"comma-separated subset of {', '.join(MODES)}",
    )


@dataclass(frozen=True)
class CopyResult:
    """One mode's run."""

    mode: str
    jobs: int
    images: int
    bytes_per_image: float
    copy_cpu_ms_per_image: float
    # the worker that submits (and presigns), and the S3 server, per image
    worker_cpu_ms_per_image: float
    server_cpu_ms_per_image: float
    copy_ms_p50: float
    copy_ms_p99: float
    kept_bytes_per_s: float
    kept_jobs_per_s: float
    # the same jobs created -> terminal, as the main benchmark counts them
    terminal_jobs_per_s: float
    noop_per_s: float

    @property
    def ceiling_ratio(self) -> float:
        return self.kept_jobs_per_s / self.noop_per_s


def run(args: argparse.Namespace, config: BenchConfig) -> int:
    results = [run_mode(mode, config, args.copy_jobs) for mode in args.copy_modes.split(",")]
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        body = [{**vars(r), "ceiling_ratio": r.ceiling_ratio} for r in results]
        args.json.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return 0


def run_mode(name: str, config: BenchConfig, count: int) -> CopyResult:
    mode = MODES[name]
    data_dir = (config.work_dir / "copy" / name).resolve()
    with ExitStack() as stack:
        made = bench_farm(stack, data_dir, config.postgres_url)
        farm, counter, database_url = made.farm, made.redis, made.database_url
        storage: dict[str, Any] = {"results_upload": "all" if mode.upload else "never"}
        server: Child | None = None
        if mode.store == "s3":
            s3 = MotoS3(farm, data_dir / "s3")
            s3.directory.mkdir()
            s3.start()
            server = s3.server
            storage |= {
                "results_url": s3.results_url(),
                "results_access_key_id": ACCESS_KEY,
                "results_secret_access_key": SECRET_KEY,
            }
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images", "--max-tasks-per-request", "100"),
            concurrency=config.concurrency,
            pool=config.pool,
            broker_url=counter.url,
            database_url=database_url,
            log_format="json",
            **storage,
        )
        # the copies on a worker of their own, everything else on the other
        farm.kill(pipeline.worker)
        others = tuple(q for q in QUEUES if q != COPY_QUEUE)
        worker = farm.start_worker("worker", config.concurrency, config.pool, queues=others)
        copier = farm.start_worker("copier", config.concurrency, config.pool, queues=(COPY_QUEUE,))
        job_store = JobStore.from_settings(pipeline.settings)
        stack.callback(job_store.engine.dispose)
        runner = Runner(
            farm, pipeline.settings, job_store, config, counter, pipeline.web_url, hook_url=""
        )
        runner.request = {**COPY_REQUEST, "outputType": mode.output_type}
        measured = {"copier": copier, "worker": worker, "server": server}
        return _measure(name, runner, measured, count, counter.url)


def _measure(
    name: str, runner: Runner, measured: dict[str, Child | None], count: int, counter_url: str
) -> CopyResult:
    engine = runner.store.engine
    runner.run_phase("warmup", min(50, count), runner.in_process, batch=50)
    _wait_kept(runner, "warmup")
    copier = measured["copier"]
    assert copier is not None
    offset = copier.log_path.stat().st_size
    before = _cpu_s(measured)
    phase = runner.run_phase("copy", count, runner.in_process, batch=50)
    _wait_kept(runner, "copy")
    after = _cpu_s(measured)
    cpu_ms = {kind: (after[kind] - before[kind]) * 1000 for kind in after}
    kept = _kept(engine, "copy")
    durations = _copy_durations(copier.log_path, offset)
    window_s = (kept.last_stored - kept.first_created).total_seconds()
    return CopyResult(
        mode=name,
        jobs=kept.jobs,
        images=kept.images,
        bytes_per_image=round(kept.size / kept.images),
        copy_cpu_ms_per_image=round(cpu_ms["copier"] / kept.images, 2),
        worker_cpu_ms_per_image=round(cpu_ms["worker"] / kept.images, 2),
        server_cpu_ms_per_image=round(cpu_ms["server"] / kept.images, 2),
        copy_ms_p50=round(statistics.median(durations), 1),
        copy_ms_p99=round(statistics.quantiles(durations, n=100)[98], 1),
        kept_bytes_per_s=round(kept.size / window_s),
        kept_jobs_per_s=round(kept.jobs / window_s, 1),
        terminal_jobs_per_s=phase.jobs_per_s,
        noop_per_s=runner.noop_rate(count, counter_url),
    )


def _cpu_s(children: dict[str, Child | None]) -> dict[str, float]:
    return {
        kind: tree_usage(child.process.pid).cpu_s if child is not None else 0.0
        for kind, child in children.items()
    }


@dataclass(frozen=True)
class _Kept:
    jobs: int
    images: int
    size: int
    first_created: datetime
    last_stored: datetime


def _kept(engine: Engine, tenant: str) -> _Kept:
    query = (
        select(
            func.count(func.distinct(jobs.c.id)),
            func.count(result_copies.c.stored_at),
            func.coalesce(func.sum(result_copies.c.bytes), 0),
            func.min(jobs.c.created_at),
            func.max(result_copies.c.stored_at),
        )
        .select_from(jobs)
        .join(results, results.c.job_id == jobs.c.id)
        .outerjoin(
            result_copies,
            (result_copies.c.task_uuid == results.c.task_uuid)
            & (result_copies.c.image_uuid == results.c.image_uuid),
        )
        .where(jobs.c.tenant == tenant)
    )
    with engine.connect() as conn:
        found = conn.execute(query).one()
    return _Kept(int(found[0]), int(found[1]), int(found[2]), found[3], found[4])


def _wait_kept(runner: Runner, tenant: str) -> None:
    """Until every result of the tenant's jobs is kept (they are all terminal already)."""
    engine = runner.store.engine
    query = (
        select(func.count())
        .select_from(results)
        .join(jobs, jobs.c.id == results.c.job_id)
        .outerjoin(
            result_copies,
            (result_copies.c.task_uuid == results.c.task_uuid)
            & (result_copies.c.image_uuid == results.c.image_uuid),
        )
        .where(jobs.c.tenant == tenant, result_copies.c.stored_at.is_(None))
    )

    deadline = time.monotonic() + runner.config.timeout_s
    while True:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one() == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tenant}: images still not kept after {runner.config.timeout_s}s")
        time.sleep(0.1)


def _copy_durations(log_path: Path, offset: int) -> list[float]:
    """The copy task's own time per image, from the copier's `image.stored` lines."""
    with log_path.open("rb") as log_file:
        log_file.seek(offset)
        lines = log_file.read().splitlines()
    return [
        float(entry["duration_ms"])
        for line in lines
        if b"image.stored" in line and (entry := orjson.loads(line)).get("event") == "image.stored"
    ]


def report(results: list[CopyResult]) -> str:
    lines = [
        "Keeping images in the results store: jobs submitted 50 per call, one image each,"
        " measured until every image is kept; the copies (or the checks of Runware's uploads)"
        " on a worker of their own; CPU ms per image of that worker, of the submitting worker"
        " and of the S3 server.",
        "",
        "| mode | jobs | bytes per image | CPU ms per image: copier / worker / S3 server "
        "| copy ms p50 / p99 | kept MB/s | terminal jobs/s | kept jobs/s | no-op ceiling /s "
        f"| kept / ceiling (target ≥ {TARGET_CEILING_RATIO:.0%}) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        verdict = "met" if r.ceiling_ratio >= TARGET_CEILING_RATIO else "missed"
        lines.append(
            f"| {r.mode} | {r.jobs} | {r.bytes_per_image:.0f} | {r.copy_cpu_ms_per_image:.1f} /"
            f" {r.worker_cpu_ms_per_image:.1f} / {r.server_cpu_ms_per_image:.1f} |"
            f" {r.copy_ms_p50:.1f} / {r.copy_ms_p99:.1f} | {r.kept_bytes_per_s / 1e6:.1f} |"
            f" {r.terminal_jobs_per_s:.0f} | {r.kept_jobs_per_s:.0f} | {r.noop_per_s:.0f} |"
            f" {r.ceiling_ratio:.0%} ({verdict}) |"
        )
    return "\n".join(lines)
