"""Command line: `python -m simulator --host H --port P`, one flag per setting."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from simulator.server import bind, build_server, url_of
from simulator.settings import FaultSettings, ShapeSettings, SimulatorSettings

NESTED = {"faults": FaultSettings, "shapes": ShapeSettings}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_fields(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for spec in dataclasses.fields(cls):
        if spec.name in NESTED:
            continue
        kind = hints[spec.name]
        default = getattr(defaults, spec.name)
        help_text = spec.metadata.get("help", "")
        if isinstance(kind, types.UnionType):
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        if kind is bool:
            parser.add_argument(
                _flag(spec.name),
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(
                _flag(spec.name),
                type=lambda text: tuple(part for part in text.split(",") if part),
                default=default,
                help=help_text,
                metavar="A,B",
            )
        else:
            parser.add_argument(_flag(spec.name), type=kind, default=default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description=(
            "A local imitation of Runware's API (REST and WebSocket, both on /v1)"
            " for FLUX.2 [pro] (bfl:5@1)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0 = any")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    _add_fields(parser, SimulatorSettings)
    for name, cls in NESTED.items():
        group = parser.add_argument_group(f"{name} (also settable at runtime via /_sim/{name})")
        _add_fields(typing.cast(argparse.ArgumentParser, group), cls)
    return parser


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    values = vars(args)

    def pick(cls: type[Any]) -> dict[str, Any]:
        return {
            spec.name: values[spec.name]
            for spec in dataclasses.fields(cls)
            if spec.name not in NESTED
        }

    nested = {name: cls(**pick(cls)) for name, cls in NESTED.items()}
    return SimulatorSettings(**pick(SimulatorSettings), **nested)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    sock = bind(args.host, args.port)

    def announce() -> None:
        # Process orchestrators wait for exactly this line before using the simulator.
        print(f"simulator listening on {url_of(sock)}", flush=True)

    server = build_server(settings, sock, announce, log_level=args.log_level)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; that is a normal stop here.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
