"""One broker's benchmark: our pipeline, the no-op ceiling and the blocking design, one farm.

Every figure comes from the same farm on the same broker and worker concurrency: the job
store's timestamps and events, the web process's canonical log lines, and /proc.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import redis
from celery import Celery
from kombu import Connection
from sqlalchemy import func, select, text

from bench import blocking as bench_blocking
from bench import noop as bench_noop
from bench.procs import ZERO, Usage, parent_of, pid_of_command, tree_usage
from farmdomain.broker import SUBMIT_QUEUE, celery_config
from farmdomain.jobs import TERMINAL_STATES, JobState
from farmdomain.request_schema import parse_request
from farmdomain.settings import Settings
from fluxfarm.processes import Child, Farm, start_pipeline
from fluxfarm_client import Client as HttpClient
from jobstore.api_tokens import ApiTokenStore
from jobstore.schema import callback_events, events, jobs, result_copies, results
from jobstore.store import JobStore
from producers.client import FluxfarmClient
from tests.callback_receiver import CallbackReceiver
from tests.http_servers import serve_asgi
from tests.private_servers import PrivateRedis, running
from tests.servers import fresh_postgres_database

SIMULATOR_KEY = "bench-key"
# the benchmark's own Celery apps are not installed: their workers import them from here
CHECKOUT_ENV = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
REQUEST: dict[str, Any] = {
    "positivePrompt": "A lighthouse of stacked teacups on a basalt cliff, storm light",
    "width": 512,
    "height": 512,
    "numberResults": 1,
}
KINDS = ("web", "worker", "beat", "simulator")
# the servers the pipeline leans on, whose CPU is part of each job's cost too
SERVERS = ("database", "broker")
# where a callback's cost lands: sent by workers, driven by beat, its event written by the
# database's trigger
FARM_KINDS = ("web", "worker", "beat", *SERVERS)
# the generation times of the half-rate run spread over 0 to this many seconds
HALF_RATE_SPREAD_S = 2.0
STAGES = ("queue_wait", "submit_http", "webhook_to_succeeded", "created_to_succeeded")

# submits that many jobs in one call
Submit = Callable[[int], None]
# a tenant's submitter for the length of one phase
Producer = Callable[[str], AbstractContextManager[Submit]]


@dataclass(frozen=True)
class BenchConfig:
    """What every broker's run shares: sizes, concurrency and where the servers are."""

    jobs: int
    sqlite_jobs: int
    concurrency: int
    pool: str
    producers: int
    # jobs per submit call in the main phase (client.submit_many); 1 is client.submit
    submit_batch: int
    blocking_jobs: int
    blocking_latency_s: float
    postgres_url: str
    amqp_url: str
    work_dir: Path
    timeout_s: float


@dataclass(frozen=True)
class Percentiles:
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Percentiles:
        if len(values_ms) < 2:
            only = values_ms[0] if values_ms else float("nan")
            return cls(only, only, only)
        cuts = statistics.quantiles(values_ms, n=100, method="inclusive")
        return cls(round(cuts[49], 2), round(cuts[94], 2), round(cuts[98], 2))


@dataclass(frozen=True)
class ProcessFigures:
    cpu_s_per_1k_jobs: float
    peak_rss_mb: float


@dataclass
class BrokerResult:
    """Everything one broker's run measured."""

    broker: str
    store: str
    jobs: int
    failed: int
    jobs_per_s: float
    produced_per_s: float
    # the same jobs submitted one per call (client.submit)
    single_jobs_per_s: float
    single_produced_per_s: float
    # the same jobs through fluxfarm-client and web's job API, batched and one per call
    http_jobs_per_s: float
    http_produced_per_s: float
    http_single_jobs_per_s: float
    http_single_produced_per_s: float
    noop_per_s: float
    stages: dict[str, Percentiles]
    half_rate_jobs_per_s: float
    half_rate_webhook: Percentiles
    processes: dict[str, ProcessFigures]
    single_processes: dict[str, ProcessFigures]
    http_processes: dict[str, ProcessFigures]
    http_single_processes: dict[str, ProcessFigures]
    # the main phase again with a callbackUrl on every job, once every callback is delivered
    callback_processes: dict[str, ProcessFigures]
    callbacks_delivered: int
    slow_jobs: int
    slow_jobs_per_s: float
    blocking_jobs_per_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def ceiling_ratio(self) -> float:
        return self.jobs_per_s / self.noop_per_s

    @property
    def single_ceiling_ratio(self) -> float:
        return self.single_jobs_per_s / self.noop_per_s

    @property
    def http_ceiling_ratio(self) -> float:
        return self.http_jobs_per_s / self.noop_per_s

    @property
    def http_single_ceiling_ratio(self) -> float:
        return self.http_single_jobs_per_s / self.noop_per_s

    @property
    def callback_cpu_ms_per_job(self) -> float:
        """What delivering a job's callback adds to the farm's CPU: its processes and its
        servers, callbacks phase minus main phase (CPU s per 1,000 jobs = ms per job)."""
        return round(
            sum(
                self.callback_processes[kind].cpu_s_per_1k_jobs
                - self.processes[kind].cpu_s_per_1k_jobs
                for kind in FARM_KINDS
            ),
            2,
        )

    @property
    def blocking_ratio(self) -> float:
        return self.slow_jobs_per_s / self.blocking_jobs_per_s


@dataclass(frozen=True)
class Phase:
    """The jobs of one tenant, once all of them are terminal."""

    count: int
    failed: int
    jobs_per_s: float
    produced_per_s: float
    queue_wait_ms: list[float]
    created_to_succeeded_ms: list[float]
    submit_http_ms: list[float]
    task_uuids: frozenset[str]


def run_broker(broker: str, config: BenchConfig, run: int = 1) -> BrokerResult:
    """Start a farm on `broker`, measure every figure, stop it."""
    # a directory per run: kombu keeps its embedded broker's engine per file path for the
    # life of the process, and a file deleted under it is read-only to that engine
    data_dir = (config.work_dir / broker / f"run-{run}").resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    count = config.sqlite_jobs if broker == "sqlite" else config.jobs
    with ExitStack() as stack:
        farm = stack.enter_context(Farm(Settings(data_dir=data_dir), log_dir=data_dir / "logs"))
        counter = PrivateRedis(data_dir / "redis")
        stack.enter_context(running(counter))
        broker_url = {"rabbitmq": config.amqp_url, "redis": counter.url}.get(broker)
        database_url = (
            None
            if broker == "sqlite"
            else stack.enter_context(fresh_postgres_database(config.postgres_url, "fluxfarm_b_"))
        )
        if broker == "rabbitmq":
            _purge_rabbitmq(config.amqp_url)
        receiver = CallbackReceiver()
        hook_url = stack.enter_context(serve_asgi(receiver.app())) + "/hook"
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=("--fast-images", "--max-tasks-per-request", "100"),
            concurrency=config.concurrency,
            pool=config.pool,
            broker_url=broker_url,
            database_url=database_url,
            log_format="json",
            callback_allowed_hosts=httpx.URL(hook_url).netloc.decode(),
        )
        settings, worker, simulator_url = pipeline.settings, pipeline.worker, pipeline.simulator_url
        store = JobStore.from_settings(settings)
        stack.callback(store.engine.dispose)
        runner = Runner(farm, settings, store, config, counter, pipeline.web_url, hook_url)
        return runner.measure(broker, count, worker, simulator_url, counter.url)


class Runner:
    """One farm's phases: producers, the jobs' figures, each process's usage, the ceiling."""

    def __init__(
        self,
        farm: Farm,
        settings: Settings,
        store: JobStore,
        config: BenchConfig,
        redis_server: PrivateRedis,
        web_url: str,
        hook_url: str,
    ) -> None:
        self.farm = farm
        self.web_url = web_url
        self.hook_url = hook_url
        self.redis = redis_server
        self.settings = settings
        self.store = store
        self.config = config
        self.producer = Celery("bench.main.producer", set_as_current=False)
        self.server_pids: dict[str, int | None] = {}
        self.producer.conf.update(celery_config(settings))
        # what the producers submit
        self.request = REQUEST

    def child(self, name: str) -> Child:
        return next(c for c in reversed(self.farm.children) if c.name == name)

    def usage(self) -> dict[str, Usage]:
        found = {kind: tree_usage(self.child(kind).process.pid) for kind in KINDS}
        own = resource.getrusage(resource.RUSAGE_SELF)
        found["producer"] = Usage(own.ru_utime + own.ru_stime, own.ru_maxrss * 1024, 0)
        for server, pid in self.server_pids.items():
            found[server] = tree_usage(pid) if pid is not None else ZERO
        return found

    def find_servers(self, broker: str) -> None:
        """The PostgreSQL postmaster (its backends are its children) and the broker's server;
        the embedded default has neither: both run inside our own processes."""
        postmaster = None
        if self.store.engine.dialect.name == "postgresql":
            with self.store.engine.connect() as conn:
                backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            postmaster = parent_of(backend)
        broker_pid = None
        if broker == "rabbitmq":
            broker_pid = pid_of_command("beam.smp")
        elif broker == "redis" and self.redis.server.process is not None:
            # the Redis that counts the no-op tasks is the broker's too
            broker_pid = self.redis.server.process.pid
        self.server_pids = {"database": postmaster, "broker": broker_pid}

    def measure(
        self, broker: str, count: int, worker: Child, simulator_url: str, counter_url: str
    ) -> BrokerResult:
        self.find_servers(broker)
        # a short warm-up so imports, connections and JIT-less caches are not in the figures
        self.run_phase("warmup", min(50, count), self.in_process, batch=self.config.submit_batch)
        self.run_phase("http-warmup", min(50, count), self._over_http, batch=1)
        web = self.child("web")
        offset = _log_size(web)
        main, processes = self.measured_phase(
            "main", count, self.in_process, self.config.submit_batch
        )
        webhook_ms = _webhook_durations(web, offset, main.task_uuids)
        called_back, callback_processes = self.measured_phase(
            "callbacks",
            count,
            self._in_process_calling_back,
            self.config.submit_batch,
            settle=lambda: self._wait_delivered("callbacks", count),
        )
        single, single_processes = self.measured_phase("single", count, self.in_process, 1)
        http, http_processes = self.measured_phase(
            "http", count, self._over_http, self.config.submit_batch
        )
        http_single, http_single_processes = self.measured_phase(
            "http-single", count, self._over_http, 1
        )
        offset = _log_size(web)
        # Generations take seconds, and not all the same: spread over 0-2 s, the webhooks of
        # a batch arrive as a real farm's do, not in one burst the zero latency would make
        _set_latency(
            simulator_url,
            latency_dist="uniform",
            latency_min_s=0.0,
            latency_max_s=HALF_RATE_SPREAD_S,
        )
        # as many jobs as the main run, over twice its time: a p99 rests on its slowest 1 %
        half = self.run_phase(
            "half",
            count,
            self.in_process,
            rate=main.jobs_per_s / 2,
            batch=self.config.submit_batch,
        )
        half_webhook_ms = _webhook_durations(web, offset, half.task_uuids)
        _set_latency(simulator_url, latency_dist="fixed", latency_s=self.config.blocking_latency_s)
        slow = self.run_phase("slow", self.config.blocking_jobs, self.in_process)
        self.farm.kill(worker)
        blocker = self.farm.start_worker(
            "blocking-worker",
            self.config.concurrency,
            self.config.pool,
            app=bench_blocking.__name__,
            queues=(bench_blocking.BLOCKING_QUEUE,),
            extra_env=CHECKOUT_ENV,
        )
        blocking = self.run_phase("blocking", self.config.blocking_jobs, self._blocking)
        self.farm.kill(blocker)
        noop_per_s = self.noop_rate(count, counter_url)
        return BrokerResult(
            broker=broker,
            store="sqlite" if broker == "sqlite" else "postgresql",
            jobs=main.count,
            failed=sum(
                p.failed
                for p in (main, called_back, single, http, http_single, half, slow, blocking)
            ),
            jobs_per_s=main.jobs_per_s,
            produced_per_s=main.produced_per_s,
            single_jobs_per_s=single.jobs_per_s,
            single_produced_per_s=single.produced_per_s,
            http_jobs_per_s=http.jobs_per_s,
            http_produced_per_s=http.produced_per_s,
            http_single_jobs_per_s=http_single.jobs_per_s,
            http_single_produced_per_s=http_single.produced_per_s,
            noop_per_s=noop_per_s,
            stages={
                "queue_wait": Percentiles.of(main.queue_wait_ms),
                "submit_http": Percentiles.of(main.submit_http_ms),
                "webhook_to_succeeded": Percentiles.of(webhook_ms),
                "created_to_succeeded": Percentiles.of(main.created_to_succeeded_ms),
            },
            half_rate_jobs_per_s=half.jobs_per_s,
            half_rate_webhook=Percentiles.of(half_webhook_ms),
            processes=processes,
            single_processes=single_processes,
            http_processes=http_processes,
            http_single_processes=http_single_processes,
            callback_processes=callback_processes,
            callbacks_delivered=self._delivered("callbacks"),
            slow_jobs=slow.count,
            slow_jobs_per_s=slow.jobs_per_s,
            blocking_jobs_per_s=blocking.jobs_per_s,
        )

    def measured_phase(
        self,
        tenant: str,
        count: int,
        producer: Producer,
        batch: int,
        settle: Callable[[], None] = lambda: None,
    ) -> tuple[Phase, dict[str, ProcessFigures]]:
        """A phase, with each process kind's CPU per 1,000 of its jobs and peak memory;
        `settle` waits for what the phase leaves running after its jobs are terminal."""
        before = self.usage()
        phase = self.run_phase(tenant, count, producer, batch=batch)
        # each phase's images are copied after its jobs are terminal: a phase that did not
        # wait for them would leave its copies' cost to the next one
        self._wait_copied(tenant)
        settle()
        after = self.usage()
        return phase, {
            kind: ProcessFigures(
                round((after[kind] - before[kind]).cpu_s * 1000 / phase.count, 2),
                round(after[kind].peak_rss_bytes / 2**20, 1),
            )
            for kind in after
        }

    @contextmanager
    def in_process(self, tenant: str) -> Iterator[Submit]:
        """The farm's own client: straight to the store and the broker."""
        with FluxfarmClient(self.settings, tenant=tenant, store=self.store) as client:
            yield _submitter(client, self.request)

    @contextmanager
    def _in_process_calling_back(self, tenant: str) -> Iterator[Submit]:
        """The farm's own client, each job calling back the bench's receiver."""
        with FluxfarmClient(self.settings, tenant=tenant, store=self.store) as client:
            yield _submitter(_CallingBack(client, self.hook_url), self.request)

    def _delivered(self, tenant: str) -> int:
        query = select(func.count()).where(
            callback_events.c.tenant == tenant, callback_events.c.delivered_at.is_not(None)
        )
        with self.store.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _wait_copied(self, tenant: str) -> None:
        kept = result_copies.c
        uncopied = (
            select(func.count())
            .select_from(
                results.join(jobs, jobs.c.id == results.c.job_id).outerjoin(
                    result_copies,
                    (kept.task_uuid == results.c.task_uuid)
                    & (kept.image_uuid == results.c.image_uuid),
                )
            )
            .where(jobs.c.tenant == tenant, kept.stored_at.is_(None), kept.given_up_at.is_(None))
        )
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            with self.store.engine.connect() as conn:
                if conn.execute(uncopied).scalar_one() == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tenant}: images not copied in {self.config.timeout_s}s")
            time.sleep(0.1)

    def _wait_delivered(self, tenant: str, count: int) -> None:
        deadline = time.monotonic() + self.config.timeout_s
        while self._delivered(tenant) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tenant}: callbacks not delivered in {self.config.timeout_s}s")
            time.sleep(0.1)

    @contextmanager
    def _over_http(self, tenant: str) -> Iterator[Submit]:
        """A service's path: fluxfarm-client -> web's job API -> store -> broker, with the
        tenant's own token (open mode would put every phase under one tenant)."""
        _, token = ApiTokenStore(self.store.engine).create(tenant, "bench")
        with HttpClient(self.web_url, token) as client:
            yield _submitter(client, self.request)

    @contextmanager
    def _blocking(self, tenant: str) -> Iterator[Submit]:
        parsed = parse_request(REQUEST)

        def submit(count: int) -> None:
            for _ in range(count):
                job, _ = self.store.create_job(
                    parsed.runware_params(),
                    tenant=tenant,
                    deadline_s=self.settings.job_deadline_s,
                    fingerprint=parsed.fingerprint(),
                )
                self.producer.send_task(
                    bench_blocking.BLOCKING_TASK,
                    args=[job.id],
                    queue=bench_blocking.BLOCKING_QUEUE,
                )

        yield submit

    def run_phase(
        self,
        tenant: str,
        count: int,
        producer: Producer,
        rate: float | None = None,
        batch: int = 1,
    ) -> Phase:
        """Submit `count` jobs from several producer threads, `batch` per call, then wait for
        all of them; `rate` paces the calls to that many jobs a second."""
        threads = self.config.producers
        with producer(tenant) as submit:
            shares = [count // threads + (i < count % threads) for i in range(threads)]
            pace = None if rate is None else threads * batch / rate
            started = time.perf_counter()
            # paced threads take turns, so that calls come evenly, not all threads at once
            offsets = [0.0 if pace is None else i * pace / threads for i in range(threads)]
            workers = [
                threading.Thread(
                    target=_produce, args=(submit, share, batch, pace, started + offset)
                )
                for share, offset in zip(shares, offsets, strict=True)
            ]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()
            produced_per_s = count / (time.perf_counter() - started)
            self._wait_terminal(tenant, count)
        return self._phase(tenant, produced_per_s)

    def _wait_terminal(self, tenant: str, count: int) -> None:
        deadline = time.monotonic() + self.config.timeout_s
        terminal = [s.value for s in TERMINAL_STATES]
        query = select(func.count()).where(jobs.c.tenant == tenant, jobs.c.state.in_(terminal))
        while time.monotonic() < deadline:
            with self.store.engine.connect() as conn:
                if conn.execute(query).scalar_one() >= count:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{tenant}: jobs still not terminal after {self.config.timeout_s}s")

    def _phase(self, tenant: str, produced_per_s: float) -> Phase:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                select(
                    jobs.c.state,
                    jobs.c.created_at,
                    jobs.c.claimed_at,
                    jobs.c.finished_at,
                    jobs.c.task_uuid,
                ).where(jobs.c.tenant == tenant)
            ).all()
            acks = conn.execute(
                select(events.c.detail)
                .join(jobs, jobs.c.id == events.c.job_id)
                .where(jobs.c.tenant == tenant, events.c.kind == "acknowledged")
            ).scalars()
            submit_ms = [float(detail["duration_ms"]) for detail in acks]
        done = [r for r in rows if r.state == JobState.SUCCEEDED.value]
        first: datetime = min(r.created_at for r in rows)
        last: datetime = max(r.finished_at for r in rows if r.finished_at is not None)
        return Phase(
            count=len(rows),
            failed=len(rows) - len(done),
            jobs_per_s=round(len(rows) / (last - first).total_seconds(), 1),
            produced_per_s=round(produced_per_s, 1),
            queue_wait_ms=[_ms(r.claimed_at - r.created_at) for r in done],
            created_to_succeeded_ms=[_ms(r.finished_at - r.created_at) for r in done],
            submit_http_ms=submit_ms,
            task_uuids=frozenset(r.task_uuid for r in rows),
        )

    def noop_rate(self, count: int, counter_url: str) -> float:
        """The no-op task's rate on the same broker, concurrency and pool: the ceiling."""
        noop = self.farm.start_worker(
            "noop-worker",
            self.config.concurrency,
            self.config.pool,
            app=bench_noop.__name__,
            queues=(bench_noop.NOOP_QUEUE,),
            extra_env=CHECKOUT_ENV,
        )
        counter = redis.Redis.from_url(counter_url)
        key = f"noop:{uuid.uuid4().hex}"
        started = time.perf_counter()
        for _ in range(count):
            self.producer.send_task(
                bench_noop.NOOP_TASK, args=[counter_url, key], queue=bench_noop.NOOP_QUEUE
            )
        deadline = time.monotonic() + self.config.timeout_s
        while int(counter.get(key) or 0) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("no-op tasks still running")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        self.farm.kill(noop)
        return round(count / elapsed, 1)


class _Submits(Protocol):
    """What both clients offer: one request per call, or several in one."""

    def submit(self, request: dict[str, Any]) -> object: ...

    def submit_many(self, requests: list[dict[str, Any]]) -> object: ...


class _CallingBack:
    """The in-process client with every job's callbackUrl set."""

    def __init__(self, client: FluxfarmClient, hook_url: str) -> None:
        self._client = client
        self._hook_url = hook_url

    def submit(self, request: dict[str, Any]) -> object:
        return self._client.submit(request, callback_url=self._hook_url)

    def submit_many(self, requests: list[dict[str, Any]]) -> object:
        return self._client.submit_many(requests, callback_url=self._hook_url)


def _submitter(client: _Submits, request: dict[str, Any]) -> Submit:
    def submit(count: int) -> None:
        if count == 1:
            client.submit(request)
        else:
            client.submit_many([request] * count)

    return submit


def _produce(
    submit: Submit,
    count: int,
    batch: int,
    pace: float | None,
    start_at: float,
) -> None:
    """`count` jobs in calls of `batch`; if `pace` is given, one call every `pace` seconds
    from `start_at` on."""
    for call, first in enumerate(range(0, count, batch)):
        if pace is not None:
            time.sleep(max(0.0, start_at + call * pace - time.perf_counter()))
        submit(min(batch, count - first))


def _ms(delta: Any) -> float:
    return float(delta.total_seconds() * 1000)


def _log_size(child: Child) -> int:
    return child.log_path.stat().st_size


def _webhook_durations(web: Child, offset: int, task_uuids: frozenset[str]) -> list[float]:
    """Webhook handling times (received -> recorded) of the tasks `task_uuids`, from web's
    canonical log lines after `offset`: a phase begins as the one before it ends, and the
    last webhooks of that one are not this one's."""
    with web.log_path.open("rb") as log_file:
        log_file.seek(offset)
        lines = log_file.read().splitlines()
    found = []
    for line in lines:
        if b"webhook.received" not in line:
            continue
        entry = orjson.loads(line)
        if entry.get("event") == "webhook.received" and entry.get("task_uuid") in task_uuids:
            found.append(float(entry["duration_ms"]))
    return found


def _set_latency(simulator_url: str, **latency: str | float) -> None:
    """The simulator's generation latency from now on (its `latency_*` fault settings)."""
    response = httpx.post(f"{simulator_url}/_sim/faults", json=latency, timeout=10)
    response.raise_for_status()


def _purge_rabbitmq(url: str) -> None:
    with Connection(url) as conn:
        for queue in (SUBMIT_QUEUE, bench_noop.NOOP_QUEUE, bench_blocking.BLOCKING_QUEUE):
            conn.SimpleQueue(queue).clear()
