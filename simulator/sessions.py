"""WebSocket sessions: the connectionSessionUUID a client resumes with after a drop, and the
frames it missed meanwhile, replayed once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from simulator.stats import Stats

SERVICE_RESTART = 1012


class Connection:
    """One accepted socket; sends are serialised and never raise once the client is gone."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.open = True
        self._lock = asyncio.Lock()

    async def send(self, payload: bytes) -> bool:
        """Send one text frame; False if the socket is gone (the frame did not leave)."""
        async with self._lock:
            if not self.open:
                return False
            try:
                await self.websocket.send_text(payload.decode())
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.open = False
                return False
            return True

    async def send_frame(self, frame: Any) -> bool:
        return await self.send(orjson.dumps(frame))

    async def drop(self) -> None:
        """Close the socket as a server restart would (1012); the client may resume."""
        async with self._lock:
            if self.open:
                self.open = False
                with contextlib.suppress(RuntimeError, OSError):
                    await self.websocket.close(SERVICE_RESTART, "dropped by /_sim/disconnect")


class Session:
    """What outlives a socket: answers for the tasks sent on it, kept while it is away."""

    def __init__(self, session_uuid: str, stats: Stats) -> None:
        self.uuid = session_uuid
        self.connection: Connection | None = None
        self.detached_at: float | None = None
        self._backlog: deque[bytes] = deque()
        self._stats = stats

    async def send(self, frame: Any) -> None:
        """Deliver to the attached socket, or keep the frame for the client's resume."""
        payload = orjson.dumps(frame)
        connection = self.connection
        if connection is not None and not self._backlog and await connection.send(payload):
            return
        self._backlog.append(payload)
        self._stats.ws_frames_buffered += 1

    async def replay(self, connection: Connection) -> None:
        """Send what was missed, in order; what cannot be sent stays for the next resume."""
        while self._backlog and self.connection is connection:
            if not await connection.send(self._backlog[0]):
                return
            self._backlog.popleft()
            self._stats.ws_frames_replayed += 1


class SessionStore:
    """Sessions by connectionSessionUUID; a detached one is forgotten after the retention."""

    def __init__(self, retention_s: float, stats: Stats) -> None:
        self._retention_s = retention_s
        self._stats = stats
        self._sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def attach(self, requested: Any, connection: Connection) -> Session:
        """The session named by `requested` if still kept, else a new one, now on `connection`."""
        session = self._sessions.get(requested) if isinstance(requested, str) else None
        if session is None:
            session = Session(str(uuid.uuid4()), self._stats)
            self._sessions[session.uuid] = session
        else:
            self._stats.ws_sessions_resumed += 1
        session.connection = connection
        session.detached_at = None
        return session

    def detach(self, session: Session, connection: Connection) -> None:
        """The socket is gone; a newer one may already carry the session."""
        if session.connection is connection:
            session.connection = None
            session.detached_at = time.monotonic()

    async def drop_connections(self) -> int:
        """Close every open socket, keeping their sessions; returns how many there were."""
        dropped = list(self.connections)
        for connection in dropped:
            await connection.drop()
        return len(dropped)

    def sweep(self) -> None:
        horizon = time.monotonic() - self._retention_s
        expired = [
            key
            for key, session in self._sessions.items()
            if session.detached_at is not None and session.detached_at <= horizon
        ]
        for key in expired:
            del self._sessions[key]
