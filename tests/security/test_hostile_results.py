"""Hostile result images through the real pipeline: the simulator (as Runware, or as
whoever answers in its name) delivers bytes that are not an image, of the wrong size,
over the download cap, or an imageURL on a host off the allow-list, by URL and inline.
Each is refused, counted by its reason in fluxfarm_image_copy_failures_total, its job
ends, and nothing is written to the results store; a good image beside them is kept."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from farmdomain.settings import Settings
from fluxfarm.processes import Farm, Pipeline, start_pipeline
from jobstore.copies import CopyState, ResultCopies
from producers.client import FluxfarmClient

pytestmark = pytest.mark.integration

CAP = 1_000_000
REQUEST = {"positivePrompt": "a salt marsh at dawn", "width": 256, "height": 256}

# (what the simulator serves, outputType, the reason the copy is refused for)
CASES = [
    ("not_image", "URL", "decode"),
    ("wrong_size", "URL", "size"),
    ("too_large", "URL", "too_large"),
    ("off_list", "URL", "host"),
    ("not_image", "base64Data", "decode"),
    ("wrong_size", "base64Data", "size"),
    ("too_large", "dataURI", "too_large"),
]


@dataclass
class HostileFarm:
    pipeline: Pipeline
    copies: ResultCopies

    def set_images(self, hostile: str) -> None:
        url = f"{self.pipeline.simulator_url}/_sim/faults"
        httpx.post(url, json={"hostile_images": hostile}, timeout=10).raise_for_status()

    def refused(self, reason: str) -> float:
        """fluxfarm_image_copy_failures_total{reason} as the worker exposes it."""
        url = self.pipeline.worker.metrics_url
        assert url is not None
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            for sample in family.samples:
                if (
                    sample.name == "fluxfarm_image_copy_failures_total"
                    and sample.labels.get("reason") == reason
                ):
                    return sample.value
        return 0.0

    def copy_done(self, job_id: str, timeout_s: float = 60) -> CopyState:
        """The job's one copy once it is kept or given up on (waited for, not timed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = list(self.copies.of_job(job_id).values())
            if states and (states[0].stored_at is not None or states[0].given_up):
                return states[0]
            time.sleep(0.1)
        raise AssertionError(f"the copy of job {job_id} never finished")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileFarm]:
    tmp_path: Path = tmp_path_factory.mktemp("hostile-results")
    with Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs") as farm:
        pipeline = start_pipeline(
            farm,
            api_key="hostile-key",
            # a refused webhook is not tried again: its result comes by the reaper's poll
            simulator_flags=(
                "--fast-images",
                "--webhook-max-attempts",
                "1",
                "--too-large-bytes",
                str(CAP + CAP // 2),
            ),
            broker_url=None,
            webhook_secret="hostile-secret",
            download_max_bytes=CAP,
            reaper_interval_s=1,
            submitted_poll_after_s=2,
        )
        engine = create_engine(pipeline.settings.resolved_database_url())
        try:
            yield HostileFarm(pipeline, ResultCopies(engine))
        finally:
            engine.dispose()


def _submit(farm: HostileFarm, output_type: str) -> str:
    request: dict[str, Any] = {**REQUEST, "outputType": output_type}
    with FluxfarmClient(farm.pipeline.settings) as client:
        job_id = client.submit(request)
        client.wait(job_id, timeout=60)
    return job_id


def _kept_files(farm: HostileFarm, job_id: str) -> list[Path]:
    return list((farm.pipeline.settings.data_dir / "results" / "images").glob(f"{job_id}/*"))


@pytest.mark.parametrize(
    ("spoiled", "output_type", "reason"), CASES, ids=[f"{s}-{o}" for s, o, _ in CASES]
)
def test_a_hostile_result_is_refused_counted_and_nothing_is_written(
    hostile: HostileFarm, spoiled: str, output_type: str, reason: str
) -> None:
    hostile.set_images(spoiled)
    before = hostile.refused(reason)

    job_id = _submit(hostile, output_type)
    copy = hostile.copy_done(job_id)

    assert (copy.given_up, copy.failure_reason, copy.key, copy.sha256) == (
        True,
        reason,
        None,
        None,
    )
    assert hostile.refused(reason) == before + 1
    assert _kept_files(hostile, job_id) == []


def test_a_good_result_beside_them_is_kept(hostile: HostileFarm) -> None:
    hostile.set_images("none")

    job_id = _submit(hostile, "URL")
    copy = hostile.copy_done(job_id)

    assert copy.stored_at is not None
    assert [path.name for path in _kept_files(hostile, job_id)] == [Path(copy.key or "").name]
