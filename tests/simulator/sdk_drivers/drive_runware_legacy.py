"""Drives the older `runware` SDK (0.5.x, WebSocket only) as a user's code would: one client
per scenario, connected first, then `imageInference`, `getResponse` or `getTaskDetails`.
Typed request fields go into `IImageInference`; `extra` goes into its `extraArgs`, the SDK's
way to send what its dataclass lacks (promptUpsampling, or values it would not build).
Runs in the SDK's own venv; see protocol.py."""

from __future__ import annotations

import asyncio
from typing import Any

from protocol import jsonable, serve
from runware import IImageInference, IInputs, Runware, RunwareAPIError

CALLS = ("imageInference", "getResponse", "getTaskDetails")


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RunwareAPIError):
        return {
            "class": "RunwareAPIError",
            "code": exc.code,
            "error_data": exc.error_data,
            "message": str(exc),
        }
    return {"class": type(exc).__name__, "message": str(exc)}


def _request(params: dict[str, Any], on_partial: Any) -> IImageInference:
    typed = dict(params)
    extra = typed.pop("extra", {})
    if isinstance(typed.get("inputs"), dict):
        typed["inputs"] = IInputs(**typed["inputs"])
    return IImageInference(**typed, extraArgs=extra, onPartialImages=on_partial)


async def run(scenario: dict[str, Any]) -> dict[str, Any]:
    call = scenario.get("call", "imageInference")
    if call not in CALLS:
        raise ValueError(f"unknown call {call!r}")
    partial: list[Any] = []

    def on_partial(images: list[Any], error: Any) -> None:
        partial.append({"images": jsonable(images), "error": jsonable(error)})

    client = Runware(api_key=scenario["api_key"], url=scenario["ws_url"])
    outcome: dict[str, Any]
    try:
        await client.connect()
        params = scenario["params"]
        if call == "imageInference":
            returned = await client.imageInference(requestImage=_request(params, on_partial))
        elif call == "getResponse":
            returned = await client.getResponse(**params)
        else:
            returned = await client.getTaskDetails(**params)
        kind = type(returned).__name__ if not isinstance(returned, list) else "list"
        outcome = {"ok": True, "kind": kind, "results": jsonable(returned)}
    except Exception as exc:
        # RunwareAPIError for Runware's errors, ConnectionError for a refused key or a lost
        # socket, and a plain Exception for its own timeouts ("Timeout waiting for ...")
        outcome = {"ok": False, "error": _error(exc)}
    finally:
        await client.disconnect()
    outcome["on_partial"] = partial
    return outcome


if __name__ == "__main__":
    asyncio.run(serve(run))
