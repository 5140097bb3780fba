"""The drivers' side of the line protocol, shared by both: one JSON request per stdin line,
`{"id", "scenarios": [...]}`, its scenarios run concurrently, one JSON answer per stdout line,
`{"id", "outcomes": [...]}` in the same order, behind a marker so that anything an SDK prints
cannot be mistaken for an answer. Runs in the SDK's own venv: standard library only."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

MARKER = "@@driver@@ "
Runner = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def jsonable(value: Any) -> Any:
    """Dataclasses (the older SDK's results) and anything else as plain JSON values."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "__dict__"):
        return {
            key: jsonable(item)
            for key, item in vars(value).items()
            if not key.startswith("_") and not callable(item)
        }
    return repr(value)


async def _outcome(run: Runner, scenario: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        outcome = await asyncio.wait_for(run(scenario), scenario.get("timeout_s", 60.0))
    except TimeoutError:
        outcome = {"ok": False, "error": {"class": "DriverTimeout", "message": "no outcome"}}
    except Exception as exc:
        outcome = {
            "ok": False,
            "error": {"class": "DriverCrash", "message": repr(exc)},
            "traceback": traceback.format_exc(),
        }
    outcome["elapsed_s"] = round(time.monotonic() - started, 3)
    return outcome


async def serve(run: Runner) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        request = json.loads(line)
        outcomes = await asyncio.gather(*(_outcome(run, s) for s in request["scenarios"]))
        answer = {"id": request["id"], "outcomes": jsonable(outcomes)}
        sys.stdout.write(MARKER + json.dumps(answer) + "\n")
        sys.stdout.flush()
