"""The `fluxfarm` command: the producer commands plus the farm's own (web, demo)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from farmdomain import metrics
from farmdomain.settings import get_settings
from fluxfarm import demo
from producers.cli import add_commands

# against slow and greedy clients (farmweb.limits caps the job API's bodies and rate)
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_HEADER_BYTES = 16 * 1024  # request line and headers, beyond which uvicorn answers 400
MAX_CONCURRENCY = 1000  # connections and tasks at once per worker; 503 beyond


def _serve_web(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    # the app decides between open and token-only by the address it is served on
    os.environ["FLUXFARM_BIND_HOST"] = args.host
    metrics.start_group(get_settings())
    uvicorn.run(
        "farmweb.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=MAX_CONCURRENCY,
    )
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
    code: int = _bench_module().main(args.arguments)
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
    bench.add_argument("arguments", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_bench)
    web = subparsers.add_parser("web", help="serve the job API, webhooks and health")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--workers", type=int, default=1)
    web.set_defaults(handler=_serve_web)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
