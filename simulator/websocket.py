"""The /v1 WebSocket, framed as Runware's SDKs use it: an authentication task answered with a
connectionSessionUUID, arrays of tasks whose answers are routed by taskUUID, ping/pong, and a
resume with the session key that replays what the client missed. Every task goes through the
same Simulator as a REST request.

A frame never mixes `data` and `errors`: runware-sdk drops the `data` of a frame that carries
errors (transport/websocket.py, `_dispatch`). A sync task is answered once it is done, as
over REST (ws_sync_frames=task), or with a frame per image as each finishes (=each).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.websockets import WebSocket

from simulator.envelope import (
    AUTH_TASK,
    invalid_key,
    key_is_valid,
    key_label,
    parse_task_array,
    task_error,
)
from simulator.errors import RequestRejected
from simulator.service import Simulator, timed_out
from simulator.sessions import Connection, Session
from simulator.tasks import Generation, Task

PING_TASK = "ping"
PONG = {"data": [{"taskType": PING_TASK, "pong": True}]}
IDLE_CLOSE_CODE = 1001


async def serve_websocket(websocket: WebSocket) -> None:
    simulator: Simulator = websocket.app.state.simulator
    await websocket.accept()
    simulator.stats.ws_connections += 1
    connection = Connection(websocket)
    simulator.sessions.connections.add(connection)
    conversation = _Conversation(simulator, connection, _http_base(websocket))
    try:
        await conversation.run()
    finally:
        simulator.sessions.connections.discard(connection)
        conversation.close()


def _http_base(websocket: WebSocket) -> str:
    url = str(websocket.base_url)
    return "https" + url[3:] if url.startswith("wss") else "http" + url[2:]


async def _finished(generation: Generation) -> Generation:
    await generation.finished.wait()
    return generation


class _Conversation:
    """One socket: reads messages until it closes or idles, answers through its session."""

    def __init__(self, simulator: Simulator, connection: Connection, http_base: str) -> None:
        self.simulator = simulator
        self.connection = connection
        self.base_url = simulator.settings.public_base_url or http_base
        self.session: Session | None = None
        # the label (key_label) of the key this connection authenticated with
        self.key = ""

    async def run(self) -> None:
        settings = self.simulator.settings
        while True:
            try:
                message = await asyncio.wait_for(
                    self.connection.websocket.receive(), settings.ws_idle_timeout_s
                )
            except TimeoutError:
                with contextlib.suppress(RuntimeError, OSError):
                    await self.connection.websocket.close(IDLE_CLOSE_CODE, "idle")
                return
            if message["type"] == "websocket.disconnect":
                return
            text, raw = message.get("text"), message.get("bytes")
            await self.handle(text.encode() if isinstance(text, str) else raw or b"")

    def close(self) -> None:
        self.connection.open = False
        if self.session is not None:
            self.simulator.sessions.detach(self.session, self.connection)

    async def handle(self, raw: bytes) -> None:
        """One message: control tasks answered in place, the others run in the background
        so that pings are answered while a submit hangs."""
        simulator = self.simulator
        try:
            if len(raw) > simulator.settings.max_body_bytes:
                raise RequestRejected.single(
                    413,
                    "payloadTooLarge",
                    f"The message exceeds {simulator.settings.max_body_bytes} bytes.",
                )
            tasks = parse_task_array(raw)
        except RequestRejected as rejected:
            simulator.count_rejected(rejected)
            await self.connection.send_frame({"errors": rejected.errors})
            return
        others: list[dict[str, Any]] = []
        for task in tasks:
            task_type = task.get("taskType")
            if task_type == AUTH_TASK:
                await self.authenticate(task)
            elif task_type == PING_TASK:
                await self.connection.send_frame(PONG)
            else:
                others.append(task)
        if not others:
            return
        if self.session is None:
            await self.refuse_unauthenticated(others)
            return
        simulator.stats.requests += 1
        simulator.registry.spawn(self.submit(self.session, others))

    async def authenticate(self, task: dict[str, Any]) -> None:
        simulator = self.simulator
        key = task.get("apiKey")
        if not key_is_valid(key, simulator.settings.api_keys):
            rejected = invalid_key()
            simulator.count_rejected(rejected)
            await self.connection.send_frame({"errors": rejected.errors})
            return
        if self.session is not None:
            simulator.sessions.detach(self.session, self.connection)
        session = simulator.sessions.attach(task.get("connectionSessionUUID"), self.connection)
        self.session = session
        self.key = key_label(key, simulator.settings.api_keys)
        reply = {"taskType": AUTH_TASK, "connectionSessionUUID": session.uuid}
        await self.connection.send_frame({"data": [reply]})
        await session.replay(self.connection)

    async def refuse_unauthenticated(self, tasks: list[dict[str, Any]]) -> None:
        errors = [
            task_error(
                "missingApiKey",
                "Authenticate first: send an authentication task with your apiKey.",
                task,
                parameter="apiKey",
            )
            for task in tasks
        ]
        self.simulator.stats.submits_rejected.update(error["code"] for error in errors)
        await self.connection.send_frame({"errors": errors})

    async def submit(self, session: Session, tasks: list[dict[str, Any]]) -> None:
        simulator = self.simulator
        try:
            answer = await simulator.submit(tasks, self.base_url, self.key)
        except RequestRejected as rejected:
            simulator.count_rejected(rejected)
            await session.send({"errors": rejected.errors})
            return
        # an empty `data` only where REST would answer {"data": []} (an empty acknowledgement)
        if answer.data or not (answer.errors or answer.waiting):
            await session.send({"data": answer.data})
        if answer.errors:
            await session.send({"errors": answer.errors})
        each = simulator.shapes.current.ws_sync_frames == "each"
        for task in answer.waiting:
            answering = self.stream if each else self.answer_sync
            simulator.registry.spawn(answering(session, task))

    async def answer_sync(self, session: Session, task: Task) -> None:
        """A sync task's results when it is done, as REST would answer them, or a timeout
        error if the wait runs out first (the task keeps running, as over REST)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task.done.wait(), self.simulator.settings.ws_sync_timeout_s)
        if task.remaining:
            await session.send({"errors": [timed_out(task)]})
            return
        items, failures = task.results(self.simulator.shapes.current)
        if items:
            await session.send({"data": items})
        if failures:
            await session.send({"errors": failures})

    async def stream(self, session: Session, task: Task) -> None:
        """Each image of a sync task as its own frame as it finishes, then a timeout error if
        the wait runs out first (the task keeps running, as over REST)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.simulator.settings.ws_sync_timeout_s
        waits = {asyncio.ensure_future(_finished(gen)) for gen in task.generations}
        try:
            while waits:
                done, waits = await asyncio.wait(
                    waits, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await session.send({"errors": [timed_out(task)]})
                    return
                shapes = self.simulator.shapes.current
                for finished in done:
                    await session.send(finished.result().frame(shapes))
        finally:
            for wait in waits:
                wait.cancel()
