"""An S3-protocol server for tests: moto's server mode, a real process on a free port.

moto keeps objects in memory. A real server keeps them on disk across a restart, so the
server here records every request it takes (moto's recorder) and replays them when it is
started again: a restart loses connections and requests under way, never stored objects.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from farmdomain.settings import Settings
from fluxfarm.processes import Child, Farm, free_port

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


@dataclass
class MotoS3:
    """moto's S3 server in `farm`, its request log in `directory`, with one bucket."""

    farm: Farm
    directory: Path
    bucket: str = "fluxfarm-results"
    port: int = field(default_factory=free_port)
    server: Child | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def results_url(self, prefix: str = "farm") -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&addressing=path"

    def settings(self, base: Settings, prefix: str = "farm") -> Settings:
        """`base` with its results kept on this server."""
        return Settings(
            **base.model_dump()
            | {
                "results_url": self.results_url(prefix),
                "results_access_key_id": ACCESS_KEY,
                "results_secret_access_key": SECRET_KEY,
            }
        )

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def start(self) -> None:
        recording = self.directory / "moto-requests.jsonl"
        replay = recording.exists()
        if replay:
            mend_recording(recording)
        environment = {"MOTO_RECORDER_FILEPATH": str(recording)}
        if not replay:
            environment["MOTO_ENABLE_RECORDING"] = "True"
        # else recording starts once the replay is done: requests that reach the server
        # before it (copies retrying) would append to the file the replay is about to read,
        # gluing their records together as two requests at once do
        self.server = self.farm.spawn(
            "moto-s3",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            environment,
        )
        self.server.supervised = False
        self._wait_until_up()
        api = f"{self.endpoint}/moto-api/recorder"
        if replay:
            httpx.post(f"{api}/replay-recording", timeout=60).raise_for_status()
        httpx.post(f"{api}/start-recording", timeout=10).raise_for_status()
        if not replay:
            self.client().create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        if self.server is not None:
            self.farm.kill(self.server)
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_until_up(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.server is not None
            if self.server.process.poll() is not None:
                raise RuntimeError(f"moto exited:\n{self.server.log()[-2000:]}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("moto did not start")


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One S3 server per test module; import the fixture where it is used."""
    directory: Path = tmp_path_factory.mktemp("moto")
    with Farm(Settings(data_dir=directory), log_dir=directory / "logs") as farm:
        server = MotoS3(farm, directory)
        server.start()
        yield server


def mend_recording(recording: Path) -> None:
    """Make the recording one whole request per line, as moto's replay reads it. moto
    writes a request's record, then its newline, in two writes and before it serves the
    request: two requests served at once can glue their records on one line, and a server
    killed between the writes or mid-record leaves a record the next one would glue its
    first to, or a request it never served (dropped)."""
    text = recording.read_text()
    decoder = json.JSONDecoder()
    records, at = [], 0
    while (at := _next_record(text, at)) < len(text):
        try:
            record, at = decoder.raw_decode(text, at)
        except ValueError:
            break  # the torn tail of a killed server
        records.append(json.dumps(record) + "\n")
    recording.write_text("".join(records))


def _next_record(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
