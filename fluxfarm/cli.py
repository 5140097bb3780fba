"""The `fluxfarm` command: the producer commands plus the farm's own (web, demo)."""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from pathlib import Path
from types import ModuleType

from farmdomain import metrics
from farmdomain.errors import ConfigurationError
from farmdomain.settings import Settings
from fluxfarm import demo
from producers.cli import add_commands, run

# against slow and greedy clients (farmweb.limits caps the job API's bodies and rate)
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_HEADER_BYTES = 16 * 1024  # request line and headers, beyond which uvicorn answers 400
MAX_CONCURRENCY = 1000  # connections and tasks at once per worker; 503 beyond


def _serve_web(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs the server
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    from farmweb.app import check_web_settings, create_app  # noqa: PLC0415 - nor the app

    # the app decides between open and token-only by the address it is served on
    settings = Settings(bind_host=args.host)
    try:
        check_web_settings(settings)
    except ConfigurationError as exc:
        raise SystemExit(f"fluxfarm web: {exc}") from None
    metrics.start_group(settings)
    config = uvicorn.Config(
        functools.partial(create_app, settings),
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=MAX_CONCURRENCY,
        # a forwarded client address is only as true as whoever sent it: rate limits and
        # open mode's loopback check key on it, so only the configured proxies are believed
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    if config.workers > 1:
        # each worker process builds the app from the same settings, passed, not inherited
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
    return 0


def _bench_module() -> ModuleType:
    """The benchmarks live in the checkout's `bench/`, which is not installed."""
    try:
        return importlib.import_module("bench.main")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parent.parent
        if not (checkout / "bench" / "main.py").exists():
            raise SystemExit(
                "fluxfarm bench: run it from a source checkout (bench/ is not installed)"
            ) from None
        sys.path.insert(0, str(checkout))
        return importlib.import_module("bench.main")


def _bench(args: argparse.Namespace) -> int:
    code: int = _bench_module().main(args.bench_arguments)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxfarm", description="Queue, run and account for FLUX.2 [pro] jobs on Runware."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers)
    demo.add_command(subparsers)
    bench = subparsers.add_parser(
        "bench",
        add_help=False,
        help="measure throughput against Celery's own ceiling (from a source checkout)",
    )
    bench.set_defaults(handler=_bench)
    web = subparsers.add_parser("web", help="serve the job API, webhooks and health")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--workers", type=int, default=1)
    web.set_defaults(handler=_serve_web)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `fluxfarm bench`'s own options are the benchmark's, parsed by it
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_arguments = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
