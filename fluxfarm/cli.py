"""The `fluxfarm` command: the producer commands plus the farm's own (web, demo)."""

from __future__ import annotations

import argparse
import sys

from fluxfarm import demo
from producers.cli import add_commands


def _serve_web(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    uvicorn.run(
        "fluxfarm.web:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxfarm", description="Queue, run and account for FLUX.2 [pro] jobs on Runware."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers)
    demo.add_command(subparsers)
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
