"""Throughput benchmark of the simulator: async submits with webhooks, end to end, on 127.0.0.1.

Starts `python -m simulator` (fast images, zero latency) and a trivial webhook receiver as
two subprocesses, submits N tasks with bounded concurrency, waits until every webhook is
delivered, prints submits/s, webhooks/s and end-to-end tasks/s, then stops everything.

    .venv/bin/python ops/bench_simulator.py --tasks 5000 --json bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from simulator.transport import StreamTransport

HOST = "127.0.0.1"
API_KEY = "bench-key"
READY_TIMEOUT_S = 20.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def _receiver_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Acknowledge every webhook with 204 after reading its body."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def serve_receiver() -> None:
    import socket  # noqa: PLC0415 - only the receiver process needs it

    import uvicorn  # noqa: PLC0415

    sock = socket.socket()
    sock.bind((HOST, 0))
    config = uvicorn.Config(_receiver_app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    print(f"receiver listening on http://{HOST}:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


def _start(command: list[str], prefix: str) -> tuple[subprocess.Popen[str], str]:
    # The argv is built in this file from sys.executable; nothing comes from outside.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(prefix):
        process.kill()
        raise RuntimeError(f"{command[2:]} did not start: {line!r}")
    return process, line.removeprefix(prefix).strip()


def _task(webhook_url: str) -> bytes:
    return orjson.dumps(
        [
            {
                "taskType": "imageInference",
                "taskUUID": str(uuid.uuid4()),
                "model": "bfl:5@1",
                "positivePrompt": "benchmark",
                "width": 1024,
                "height": 1024,
                "deliveryMethod": "async",
                "includeCost": True,
                "webhookURL": webhook_url,
            }
        ]
    )


async def _submit_all(
    api_url: str, webhook_url: str, tasks: int, concurrency: int
) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    bodies = [_task(webhook_url) for _ in range(tasks)]
    failures = 0
    # httpx's default pool slows sharply under many concurrent requests; see transport.py.
    transport = StreamTransport(concurrency)
    async with httpx.AsyncClient(transport=transport, headers=headers, timeout=30.0) as client:

        async def worker(queue: list[bytes]) -> None:
            nonlocal failures
            while queue:
                response = await client.post(api_url, content=queue.pop())
                failures += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker(bodies) for _ in range(concurrency)))
        return time.perf_counter() - started, failures


async def _wait_delivered(stats_url: str, tasks: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout_s
    async with httpx.AsyncClient(timeout=10.0) as client:
        while True:
            stats: dict[str, Any] = (await client.get(stats_url)).json()
            settled = stats["webhook_deliveries"] + stats["webhooks_abandoned"]
            if settled >= tasks or time.perf_counter() > deadline:
                return stats
            await asyncio.sleep(0.02)


async def _run(base_url: str, webhook_url: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    submit_s, failures = await _submit_all(
        base_url + "/v1", webhook_url, args.tasks, args.concurrency
    )
    stats = await _wait_delivered(base_url + "/_sim/stats", args.tasks, args.timeout)
    total_s = time.perf_counter() - started
    return {
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "submit_failures": failures,
        "submit_seconds": round(submit_s, 3),
        "total_seconds": round(total_s, 3),
        "submits_per_s": round(args.tasks / submit_s, 1),
        "webhooks_per_s": round(stats["webhook_deliveries"] / total_s, 1),
        "tasks_per_s": round(args.tasks / total_s, 1),
        "webhook_deliveries": stats["webhook_deliveries"],
        "webhook_failed_attempts": stats["webhook_failed_attempts"],
        "charged_usd": stats["charged_usd_exact"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up waiting after")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver()
        return
    simulator, base_url = _start(
        [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            HOST,
            "--port",
            "0",
            "--api-keys",
            API_KEY,
            "--fast-images",
            "--latency-s",
            "0",
            "--random-seed",
            "1",
        ],
        "simulator listening on ",
    )
    try:
        receiver, receiver_url = _start(
            [sys.executable, __file__, "--serve-receiver"], "receiver listening on "
        )
        try:
            figures = asyncio.run(_run(base_url, receiver_url + "/hook?token=bench", args))
        finally:
            receiver.terminate()
            receiver.wait(timeout=10)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    for name, value in figures.items():
        print(f"{name:>24}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
