"""The S3-protocol server the results-store tests write to, one per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from farmdomain.settings import Settings
from fluxfarm.processes import Farm
from tests.s3server import MotoS3


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    directory: Path = tmp_path_factory.mktemp("moto")
    with Farm(Settings(data_dir=directory), log_dir=directory / "logs") as farm:
        server = MotoS3(farm, directory)
        server.start()
        yield server
