"""Drives runware-sdk (the current SDK, REST or WebSocket) as a user's code would: one
`Runware` client per scenario, `run`, `get_response` or `get_task_details`, with the result
and progress callbacks recorded. Runs in the SDK's own venv; see protocol.py."""

from __future__ import annotations

import asyncio
from typing import Any

from protocol import serve
from runware import RunOptions, Runware, RunwareError

CALLS = ("run", "get_response", "get_task_details")


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RunwareError):
        return {
            "class": "RunwareError",
            "code": exc.code,
            "retryable": exc.retryable,
            "message": exc.message,
            "parameter": exc.parameter,
            "task_uuid": exc.task_uuid,
            "task_type": exc.task_type,
            "status_code": exc.status_code,
        }
    return {"class": type(exc).__name__, "message": str(exc)}


async def run(scenario: dict[str, Any]) -> dict[str, Any]:
    call = scenario.get("call", "run")
    if call not in CALLS:
        raise ValueError(f"unknown call {call!r}")
    results: list[dict[str, Any]] = []
    progress: list[dict[str, Any]] = []
    options = RunOptions(on_result=results.append, on_progress=progress.append)
    client = Runware(
        api_key=scenario["api_key"],
        transport=scenario["transport"],
        http_base_url=scenario["http_url"],
        ws_base_url=scenario["ws_url"],
        **scenario.get("config", {}),
    )
    outcome: dict[str, Any]
    try:
        async with client:
            if call == "run":
                returned = await client.run(scenario["params"], options)
            elif call == "get_response":
                returned = await client.get_response(scenario["params"])
            else:
                returned = await client.get_task_details(scenario["params"])
        outcome = {"ok": True, "results": returned}
    except (TimeoutError, RunwareError, OSError) as exc:
        outcome = {"ok": False, "error": _error(exc)}
    outcome["on_result"] = results
    outcome["on_progress"] = progress
    return outcome


if __name__ == "__main__":
    asyncio.run(serve(run))
