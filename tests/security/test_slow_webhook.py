"""Finding 6: a webhook body trickled in over a real socket is cut off after
FLUXFARM_WEBHOOK_BODY_TIMEOUT_S with 408, the connection closed and nothing recorded."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from farmdomain.jobs import JobState
from jobstore.schema import results
from jobstore.store import JobStore
from runware_edge.tokens import sign
from tests.security.conftest import PARAMS, SECRET
from tests.security.web_process import running_web

pytestmark = pytest.mark.timeout(120)

BODY_TIMEOUT_S = 3
TRICKLED_BYTES = 4
TRICKLE_GAP_S = 0.5
# far longer than the timeout: without one the server waits for the rest all this time
ANSWER_WAIT_S = 30


def _answer_of(sock: socket.socket) -> bytes:
    """What the server sent before it closed the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_trickled_webhook_body_is_cut_off_with_408_and_records_nothing(tmp_path: Path) -> None:
    env = {"FLUXFARM_WEBHOOK_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with running_web(tmp_path, **env) as web:
        store = JobStore.from_url(f"sqlite:///{tmp_path / 'store.sqlite3'}")
        job, _ = store.create_job(PARAMS, tenant="acme", deadline_s=600)
        assert store.claim(job.id, 0) is not None
        assert store.mark_submitted(job.id, {})
        body = orjson.dumps(
            {
                "taskUUID": job.task_uuid,
                "imageUUID": str(uuid.uuid4()),
                "imageURL": "https://im.runware.ai/image/ws/2/ii/a.jpg",
            }
        )
        token = sign(job.task_uuid, SECRET.encode())
        head = (
            f"POST /webhooks/runware/{job.task_uuid}?token={token} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{web.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", web.port), timeout=ANSWER_WAIT_S) as sock:
            sock.sendall(head)
            # a byte at a time, then nothing: the body is never whole; the bytes stop
            # before the timeout, so no byte meets a closed connection
            for byte in body[:TRICKLED_BYTES]:
                sock.sendall(bytes([byte]))
                time.sleep(TRICKLE_GAP_S)
            answer = _answer_of(sock)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout", answer
        assert b"connection: close" in rest.lower()
        assert b'"slow_body"' in rest
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(results)).scalar_one() == 0
        assert store.get(job.id).state is JobState.SUBMITTED
        store.engine.dispose()
