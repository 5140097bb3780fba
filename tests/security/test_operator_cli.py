"""The operator's command line, run as the real `fluxfarm` process: it reaches any
tenant's job and says whose it is, and a store it cannot reach is one line, never a
traceback naming the store's host and port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from farmdomain.jobs import JobState
from farmdomain.settings import Settings
from jobstore.migrations import upgrade
from jobstore.store import JobStore

PARAMS = {"positivePrompt": "a lighthouse", "width": 256, "height": 256}


def _fluxfarm(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fluxfarm.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


@pytest.fixture
def farm(tmp_path: Path) -> tuple[JobStore, dict[str, str]]:
    settings = Settings(data_dir=tmp_path)
    upgrade(settings.resolved_database_url())
    return JobStore.from_settings(settings), {"FLUXFARM_DATA_DIR": str(tmp_path)}


def test_status_and_cancel_find_another_tenants_job_and_name_its_tenant(
    farm: tuple[JobStore, dict[str, str]],
) -> None:
    store, env = farm
    job, _ = store.create_job(PARAMS, tenant="team-a", deadline_s=60)

    status = _fluxfarm(env, "status", job.id)
    cancel = _fluxfarm(env, "cancel", job.id)

    assert status.returncode == 0, status.stderr
    assert "tenant    team-a" in status.stdout
    assert cancel.returncode == 0, cancel.stderr
    assert store.get(job.id, tenant="team-a").state is JobState.CANCELED


def test_tenant_flag_scopes_the_lookup_and_submit_records_under_it(
    farm: tuple[JobStore, dict[str, str]],
) -> None:
    store, env = farm
    job, _ = store.create_job(PARAMS, tenant="team-a", deadline_s=60)

    elsewhere = _fluxfarm(env, "status", job.id, "--tenant", "team-b")
    submitted = _fluxfarm(env, "submit", "--prompt", "a cat", "--tenant", "team-a")

    assert elsewhere.returncode == 2
    assert f"job {job.id} not found" in elsewhere.stderr
    assert submitted.returncode == 0, submitted.stderr
    assert store.get(submitted.stdout.strip()).tenant == "team-a"


@pytest.mark.parametrize(
    "argv", [("status", "some-job"), ("cancel", "some-job"), ("spend",), ("token", "list")]
)
def test_a_store_that_cannot_be_reached_is_one_line_without_a_traceback(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    # nothing listens on that port: the driver's own error would name host and port
    env = {
        "FLUXFARM_DATA_DIR": str(tmp_path),
        "FLUXFARM_DATABASE_URL": "postgresql+psycopg://farm@127.0.0.1:9/farm",
    }

    done = _fluxfarm(env, *argv)

    assert done.returncode == 4
    assert done.stdout == ""
    assert (
        done.stderr.splitlines()[-1] == "error: the job store cannot be reached (OperationalError)"
    )
    assert "Traceback" not in done.stderr
    assert "127.0.0.1" not in done.stderr
