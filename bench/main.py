"""`fluxfarm bench`: the pipeline's throughput, stage latencies and cost per process, per broker.

For each broker one farm runs, in order: our pipeline at zero generation latency, again
at half that rate, again at a 2 s generation next to a blocking design, and then a no-op
Celery task on the same broker and concurrency, the engine's ceiling. `--in-flight` runs
the scale test of bench.inflight instead, `--fairness` the tenants' run of bench.fairness,
`--copy` the results store's costs of bench.copying, `--backlog` the backlog's scale run of
bench.backlog.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from pathlib import Path

import orjson

from bench import backlog as bench_backlog
from bench import copying as bench_copying
from bench import fairness as bench_fairness
from bench import inflight as bench_inflight
from bench.run import (
    SERVERS,
    STAGES,
    BenchConfig,
    BrokerResult,
    Percentiles,
    run_broker,
)
from farmdomain.logs import configure_logging
from farmdomain.settings import Settings

BROKERS = ("rabbitmq", "redis", "sqlite")
TARGET_CEILING_RATIO = 0.5
TARGET_WEBHOOK_P99_MS = 20.0
TARGET_CALLBACK_CPU_MS = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated subset")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per run on a real broker")
    parser.add_argument(
        "--sqlite-jobs", type=int, default=1000, help="jobs per run on the embedded broker"
    )
    defaults = Settings()
    parser.add_argument(
        "--concurrency", type=int, default=defaults.worker_concurrency, help="worker pool size"
    )
    parser.add_argument(
        "--pool", default=defaults.worker_pool, help="Celery pool: threads, prefork, solo"
    )
    parser.add_argument("--producers", type=int, default=4, help="threads creating jobs")
    parser.add_argument(
        "--submit-batch",
        type=int,
        default=50,
        help="jobs per client.submit_many call in the main run (a second run submits one by one)",
    )
    parser.add_argument(
        "--blocking-jobs",
        type=int,
        default=160,
        help="jobs through each design at 2 s (ten times the default concurrency)",
    )
    parser.add_argument("--blocking-latency-s", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per broker, for the spread")
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--work-dir", type=Path, default=Path(".fluxfarm/bench"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds a phase may take")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--in-flight", action="store_true", help="run the in-flight scale test instead"
    )
    bench_inflight.add_arguments(parser)
    parser.add_argument(
        "--fairness", action="store_true", help="run the tenants' fairness run instead"
    )
    bench_fairness.add_arguments(parser)
    parser.add_argument(
        "--backlog", action="store_true", help="run the backlog's scale run instead"
    )
    bench_backlog.add_arguments(parser)
    bench_copying.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    configure_logging(Settings(log_level="WARNING"), "bench")
    if args.in_flight:
        return bench_inflight.run(args)
    if args.fairness:
        return bench_fairness.run(args)
    if args.backlog:
        return bench_backlog.run(args)
    config = BenchConfig(
        jobs=args.jobs,
        sqlite_jobs=args.sqlite_jobs,
        concurrency=args.concurrency,
        pool=args.pool,
        producers=args.producers,
        submit_batch=args.submit_batch,
        blocking_jobs=args.blocking_jobs,
        blocking_latency_s=args.blocking_latency_s,
        postgres_url=args.postgres_url,
        amqp_url=args.amqp_url,
        work_dir=args.work_dir,
        timeout_s=args.timeout,
    )
    if args.copy:
        return bench_copying.run(args, config)
    results: list[BrokerResult] = []
    for broker in args.brokers.split(","):
        for attempt in range(args.repeat):
            print(f"# {broker}: run {attempt + 1} of {args.repeat}", file=sys.stderr, flush=True)
            results.append(run_broker(broker, config, attempt + 1))
    print(report(results, config))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "machine": {"cpus": os.cpu_count()},
            "config": {**dataclasses.asdict(config), "work_dir": str(config.work_dir)},
            "runs": [dataclasses.asdict(r) for r in results],
        }
        args.json.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return 0 if all(r.failed == 0 for r in results) else 1


def report(results: list[BrokerResult], config: BenchConfig) -> str:
    """Markdown tables: throughput against the ceiling, stage latencies, cost per process."""
    lines = [
        f"{os.cpu_count()} CPUs; worker --pool {config.pool} --concurrency "
        f"{config.concurrency}; {config.producers} producer threads; zero generation latency.",
        f"`batched`: jobs submitted {config.submit_batch} per call (client.submit_many); "
        "`one by one`: the same number through client.submit, one per call.",
        f"Jobs per run: {config.jobs} on RabbitMQ and Redis (store: PostgreSQL), "
        f"{config.sqlite_jobs} on the embedded SQLite broker and store (it is much slower).",
        "",
        "| broker | jobs | no-op ceiling /s | batched jobs/s (producer) | batched / ceiling "
        f"(target ≥ {TARGET_CEILING_RATIO:.0%}) | one by one jobs/s (producer) | one by one / "
        f"ceiling | ours @{config.blocking_latency_s:g} s | "
        f"blocking @{config.blocking_latency_s:g} s | ours / blocking |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.broker} | {r.jobs} | {r.noop_per_s:.0f} | {r.jobs_per_s:.0f} "
            f"({r.produced_per_s:.0f}) | {_verdict(r.ceiling_ratio)} | "
            f"{r.single_jobs_per_s:.0f} ({r.single_produced_per_s:.0f}) | "
            f"{_verdict(r.single_ceiling_ratio)} | {r.slow_jobs_per_s:.1f} | "
            f"{r.blocking_jobs_per_s:.2f} | {r.blocking_ratio:.1f}x |"
        )
    lines += ["", *_spread(results), "", *_http(results, config), "", *_callbacks(results)]
    lines += ["", *_latencies(results), "", *_processes(results)]
    return "\n".join(lines)


def _verdict(ratio: float) -> str:
    return f"{ratio:.0%} ({'met' if ratio >= TARGET_CEILING_RATIO else 'missed'})"


def _spread(results: list[BrokerResult]) -> list[str]:
    lines = []
    for broker in dict.fromkeys(r.broker for r in results):
        rates = [r.jobs_per_s for r in results if r.broker == broker]
        ratios = [r.ceiling_ratio for r in results if r.broker == broker]
        if len(rates) > 1:
            lines.append(
                f"{broker}: {len(rates)} runs, jobs/s median {statistics.median(rates):.0f} "
                f"(min {min(rates):.0f}, max {max(rates):.0f}); ours / ceiling "
                f"{min(ratios):.0%} to {max(ratios):.0%}"
            )
    return lines


def _http(results: list[BrokerResult], config: BenchConfig) -> list[str]:
    lines = [
        "Over HTTP: the same jobs through fluxfarm-client -> web's job API -> store -> broker, "
        f"from {config.producers} threads sharing one client, each phase a tenant with its "
        "own token.",
        "",
        "| broker | no-op ceiling /s | HTTP batched jobs/s (producer) | HTTP batched / ceiling "
        "| HTTP one by one jobs/s (producer) | HTTP one by one / ceiling "
        f"(target ≥ {TARGET_CEILING_RATIO:.0%}) | in-process one by one jobs/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.broker} | {r.noop_per_s:.0f} | {r.http_jobs_per_s:.0f} "
            f"({r.http_produced_per_s:.0f}) | {r.http_ceiling_ratio:.0%} | "
            f"{r.http_single_jobs_per_s:.0f} ({r.http_single_produced_per_s:.0f}) | "
            f"{_verdict(r.http_single_ceiling_ratio)} | {r.single_jobs_per_s:.0f} |"
        )
    return lines


def _callbacks(results: list[BrokerResult]) -> list[str]:
    lines = [
        "Callbacks: the batched phase again with a callbackUrl on every job, measured until "
        "every callback is delivered; what that adds to the CPU of web, worker, beat, "
        f"PostgreSQL and the broker (target < {TARGET_CALLBACK_CPU_MS:g} ms per job).",
        "",
        "| broker | jobs | callbacks delivered | added CPU ms per job |",
        "|---|---|---|---|",
    ]
    for r in results:
        added = r.callback_cpu_ms_per_job
        verdict = "met" if added < TARGET_CALLBACK_CPU_MS else "missed"
        lines.append(
            f"| {r.broker} | {r.jobs} | {r.callbacks_delivered} | {added:.2f} ({verdict}) |"
        )
    return lines


def _latencies(results: list[BrokerResult]) -> list[str]:
    lines = [
        "Stage latencies, ms (p50 / p95 / p99). Webhook -> succeeded is the handler's time from "
        "the request to the committed result; `at half rate` is the same at half the peak "
        f"rate (target p99 < {TARGET_WEBHOOK_P99_MS:g} ms).",
        "",
        "| broker | queue wait | submit HTTP | webhook -> succeeded | created -> succeeded "
        "| webhook -> succeeded at half rate |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [_cell(r.stages[stage]) for stage in STAGES]
        half = r.half_rate_webhook
        verdict = "met" if half.p99_ms < TARGET_WEBHOOK_P99_MS else "missed"
        lines.append(
            f"| {r.broker} | {' | '.join(cells)} | {half.p50_ms:.1f} / {half.p95_ms:.1f} / "
            f"{half.p99_ms:.1f} ({verdict}, {r.half_rate_jobs_per_s:.0f} jobs/s) |"
        )
    return lines


def _cell(p: Percentiles) -> str:
    return f"{p.p50_ms:.1f} / {p.p95_ms:.1f} / {p.p99_ms:.1f}"


def _processes(results: list[BrokerResult]) -> list[str]:
    kinds = [k for k in results[0].processes if k not in SERVERS] if results else []
    lines = [
        "CPU seconds per 1,000 jobs / peak RSS in MB (summed over a process and its pool "
        "children; `producer` is the benchmark's own job-creating threads), then the CPU "
        "of PostgreSQL (every backend) and of the broker's server over the same jobs.",
        "",
        "| broker | submitted | " + " | ".join(kinds) + " | " + " | ".join(SERVERS) + " | all |",
        "|---|---|" + "---|" * (len(kinds) + len(SERVERS) + 1),
    ]
    for r in results:
        for submitted, figures in (
            ("batched", r.processes),
            ("one by one", r.single_processes),
            ("HTTP batched", r.http_processes),
            ("HTTP one by one", r.http_single_processes),
            ("batched, calling back", r.callback_processes),
        ):
            cells = [
                f"{figures[k].cpu_s_per_1k_jobs:.1f} s / {figures[k].peak_rss_mb:.0f} MB"
                for k in kinds
            ]
            cells += [f"{figures[k].cpu_s_per_1k_jobs:.1f} s" for k in SERVERS]
            total = sum(p.cpu_s_per_1k_jobs for p in figures.values())
            row = [r.broker, submitted, *cells, f"{total:.1f} s"]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fluxfarm bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
