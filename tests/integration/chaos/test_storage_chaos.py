"""The results store under faults: the S3 server (moto over HTTP, its objects kept across a
restart) down for 30 s and restarted mid-run, and the copying worker killed mid-copy.
After each run every job is terminal, every image is kept once (one object per
(job, imageUUID), written once) with the sha256 of the bytes the simulator served.

Faults are triggered on the store's results and copies, never after a sleep, and each
test fails unless its fault met copies (failed and retried, or killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from farmdomain.settings import Settings
from fluxfarm.processes import Farm
from tests.integration.chaos.crashing_worker import hits
from tests.integration.chaos.harness import ChaosFarm, ChaosResult, chaos_farm, run_scenario
from tests.s3server import ACCESS_KEY, SECRET_KEY, MotoS3
from tests.services import fresh_postgres_database

Reporter = Callable[[str], None]

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(240)]

JOBS = 12
OUTAGE_S = 30.0
# results recorded before the fault: copies have landed, and more are on their way
RESULTS_BEFORE_FAULT = 6
CRASHING_APP = "tests.integration.chaos.crashing_copier"
# compressed backoff, so that a copy retries within a second of the store's return
COPY_CLOCKS: dict[str, Any] = {
    "copy_retry_base_s": 0.2,
    "copy_retry_max_s": 1.0,
    "copy_redrive_after_s": 3.0,
}


@dataclass(frozen=True)
class Copies:
    """The store's results and their copies: kept, given up, attempts that kept nothing,
    and the images that had such an attempt."""

    results: int
    stored: int
    given_up: int
    failed_attempts: int
    failed_images: int


def copies(chaos: ChaosFarm) -> Copies:
    with chaos.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*), count(c.stored_at), count(c.given_up_at),"
                " coalesce(sum(c.attempts), 0), count(*) FILTER (WHERE c.attempts >"
                " CASE WHEN c.stored_at IS NULL THEN 0 ELSE 1 END)"
                " FROM results r LEFT JOIN result_copies c"
                " ON c.task_uuid = r.task_uuid AND c.image_uuid = r.image_uuid"
            )
        ).one()
    results, stored, given_up, attempts, failed_images = (int(value) for value in row)
    return Copies(results, stored, given_up, attempts - stored, failed_images)


@dataclass(frozen=True)
class Kept:
    """What the results store holds after a run, checked against the job store."""

    copies: Copies
    missing: int
    doubled: int
    wrong_digest: int
    # copies that found their object already written (by a copy that died after the write)
    found_written: int


def kept(chaos: ChaosFarm, s3: MotoS3) -> Kept:
    """Once every result's copy is done (kept or given up): each recorded key's object, its
    digest against the record and against the simulator's bytes, and the extra objects."""
    chaos.until("every copy done", lambda: _done(copies(chaos)), timeout=120)
    with chaos.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT r.image_url, c.storage_key, c.sha256 FROM results r"
                " JOIN result_copies c"
                " ON c.task_uuid = r.task_uuid AND c.image_uuid = r.image_uuid"
                " WHERE c.stored_at IS NOT NULL"
            )
        ).all()
    client = s3.client()
    prefix = "farm/"
    objects = [
        found["Key"].removeprefix(prefix)
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=s3.bucket, Prefix=prefix
        )
        for found in page.get("Contents", [])
    ]
    wrong = 0
    for image_url, key, sha256 in rows:
        body = client.get_object(Bucket=s3.bucket, Key=prefix + key)["Body"].read()
        served = httpx.get(image_url, timeout=10).content
        wrong += not (hashlib.sha256(body).hexdigest() == sha256 == _sha(served))
    writes = _stored_lines(chaos)
    recorded = {key for _, key, _ in rows}
    final = copies(chaos)
    return Kept(
        copies=final,
        missing=final.results - len(recorded & set(objects)),
        doubled=len(objects)
        - len(set(objects))
        + len(set(objects) - recorded)
        + sum(n - 1 for n in Counter(k for k, written in writes if written).values()),
        wrong_digest=wrong,
        found_written=sum(not written for _, written in writes),
    )


def _done(state: Copies) -> bool:
    return state.results > 0 and state.stored + state.given_up == state.results


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_lines(chaos: ChaosFarm) -> list[tuple[str, bool]]:
    """(key, written) of every `image.stored` line the workers logged, restarts included."""
    found = []
    for log in sorted(chaos.farm.log_dir.glob("worker-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "image.stored":
                found.append((str(event["key"]), bool(event["written"])))
    return found


def _assert_kept(result: ChaosResult, kept: Kept, report: Reporter, hit: int, what: str) -> None:
    lost = result.lost + kept.missing
    report(
        f"| {result.scenario} | {result.jobs} | {hit} {what} | {lost} | {result.paid_twice} |"
        f" {result.duplicate_results + kept.doubled} | {result.p99_to_terminal_s:.1f} s |"
        f" {result.alerts_cell} |"
    )
    assert hit > 0, f"the fault met no copy ({what})"
    assert result.lost == 0, result.states
    assert kept.copies.given_up == 0, kept.copies
    assert kept.missing == 0, kept
    assert kept.doubled == 0, kept
    assert kept.wrong_digest == 0, kept
    assert result.paid_twice == 0
    assert result.duplicate_results == 0
    assert result.charged_usd == result.recorded_usd


@contextlib.contextmanager
def s3_farm(
    tmp_path: Path, redis_url: str, worker_app: str = "worker.app"
) -> Iterator[tuple[ChaosFarm, MotoS3]]:
    """A chaos farm keeping its images on a moto S3 server of its own (its own process
    group, so that the farm's supervisor never restarts it behind the test's back)."""
    directory = tmp_path / "s3"
    with (
        fresh_postgres_database() as database_url,
        Farm(Settings(data_dir=directory), log_dir=directory / "logs") as servers,
    ):
        s3 = MotoS3(servers, directory)
        s3.start()
        storage = {
            # the copy path: Runware's own uploads (tests/integration/test_uploads.py) write
            # nothing of ours to fail or kill
            "results_upload": "never",
            "results_url": s3.results_url(),
            "results_access_key_id": ACCESS_KEY,
            "results_secret_access_key": SECRET_KEY,
        }
        with chaos_farm(
            tmp_path,
            broker_url=redis_url,
            database_url=database_url,
            worker_app=worker_app,
            **storage,
            **COPY_CLOCKS,
        ) as chaos:
            yield chaos, s3


def _stop_until_a_copy_fails(chaos: ChaosFarm, s3: MotoS3) -> float:
    """Stop the S3 server once results are flowing, and return when a copy has failed
    against it; the monotonic time of the stop."""
    chaos.until(
        f"{RESULTS_BEFORE_FAULT} results recorded",
        lambda: copies(chaos).results >= RESULTS_BEFORE_FAULT,
    )
    stopped = time.monotonic()
    chaos.land("S3 server stopped", s3.stop)
    chaos.until("a copy failed on the stopped server", lambda: copies(chaos).failed_attempts > 0)
    return stopped


def test_s3_down_for_30_s_mid_run(tmp_path: Path, redis_url: str, report: Reporter) -> None:
    with s3_farm(tmp_path, redis_url) as (chaos, s3):

        def disrupt(chaos: ChaosFarm) -> None:
            stopped = _stop_until_a_copy_fails(chaos, s3)
            # the outage's length is the scenario: copies keep failing meanwhile
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
            s3.start()

        result = run_scenario(
            "S3 results store down for 30 s mid-run", chaos, disrupt, jobs=JOBS, submit_per_s=2
        )
        found = kept(chaos, s3)
    _assert_kept(
        result, found, report, found.copies.failed_images, "images' copies failed, retried"
    )


def test_s3_server_restarted_mid_run(tmp_path: Path, redis_url: str, report: Reporter) -> None:
    with s3_farm(tmp_path, redis_url) as (chaos, s3):

        def disrupt(chaos: ChaosFarm) -> None:
            _stop_until_a_copy_fails(chaos, s3)
            # the same port, the objects kept before the stop
            s3.start()

        result = run_scenario(
            "S3 server restarted mid-run", chaos, disrupt, jobs=JOBS, submit_per_s=4
        )
        found = kept(chaos, s3)
    _assert_kept(
        result, found, report, found.copies.failed_images, "images' copies failed, retried"
    )


def test_copying_worker_killed_before_and_after_its_write(
    tmp_path: Path, redis_url: str, report: Reporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "copy-crash-ledger"
    # fetched and checked but not written, then written but not recorded: each at the
    # fourth copy a worker process makes
    windows = ["before_put", "after_put"]
    plan = {"windows": windows, "on_job": 4, "ledger": str(ledger)}
    monkeypatch.setenv("FLUXFARM_TEST_COPY_CRASH_PLAN", json.dumps(plan))

    def disrupt(chaos: ChaosFarm) -> None:
        chaos.until("every planned crash", lambda: len(hits(ledger)) == len(windows))

    with s3_farm(tmp_path, redis_url, CRASHING_APP) as (chaos, s3):
        result = run_scenario(
            "kill -9 of the copying worker (before and after its write)",
            chaos,
            disrupt,
            jobs=JOBS,
            submit_per_s=4,
        )
        found = kept(chaos, s3)
    assert hits(ledger) == windows
    # the image written by the copy that died after its write: kept, and not written again
    assert found.found_written >= 1, found
    _assert_kept(result, found, report, len(hits(ledger)), "copies killed mid-copy")
