"""Each process refuses to start on settings it cannot run with, in one line naming the
setting, instead of starting and failing every job later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command

from jobstore.migrations import alembic_config, upgrade

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def run(argv: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The process with only the settings given; it must exit by itself within the timeout."""
    return subprocess.run(
        argv,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "FLUXFARM_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def worker(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo"]
    return run(argv, data_dir, **env)


def web(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "fluxfarm"), "web", "--port", "0"], data_dir)


def migrated(tmp_path: Path, revision: str = "head") -> Path:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    if revision == "head":
        upgrade(url)
    else:
        command.upgrade(alembic_config(url), revision)
    return tmp_path


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_a_worker_without_a_runware_key_exits_naming_the_setting(tmp_path: Path) -> None:
    result = worker(migrated(tmp_path))

    assert result.returncode != 0
    assert last_line(result) == (
        "fluxfarm worker: FLUXFARM_RUNWARE_API_KEY: is not set: a worker cannot submit to Runware"
    )
    assert "Traceback" not in result.stderr


def test_a_worker_on_a_store_behind_its_migrations_exits_naming_the_setting(
    tmp_path: Path,
) -> None:
    result = worker(migrated(tmp_path, "0002"), FLUXFARM_RUNWARE_API_KEY="key")

    assert result.returncode != 0
    assert last_line(result).startswith("fluxfarm worker: FLUXFARM_DATABASE_URL: the store's")
    assert "run `fluxfarm migrate`" in last_line(result)


def test_web_with_an_unreadable_webhook_secret_exits_naming_the_setting(tmp_path: Path) -> None:
    (migrated(tmp_path) / "webhook.secret").mkdir()  # a directory cannot be read as a secret

    result = web(tmp_path)

    assert result.returncode != 0
    assert last_line(result).startswith(
        "fluxfarm web: FLUXFARM_DATA_DIR: the webhook secret cannot be read"
    )


def test_web_on_a_store_behind_its_migrations_exits_naming_the_setting(tmp_path: Path) -> None:
    result = web(migrated(tmp_path, "0002"))

    assert result.returncode != 0
    assert last_line(result).startswith("fluxfarm web: FLUXFARM_DATABASE_URL: the store's")


def test_web_on_an_unreachable_store_exits_naming_the_setting(tmp_path: Path) -> None:
    result = run(
        [str(BIN / "fluxfarm"), "web", "--port", "0"],
        tmp_path,
        FLUXFARM_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none",
    )

    assert result.returncode != 0
    assert last_line(result).startswith(
        "fluxfarm web: FLUXFARM_DATABASE_URL: the store cannot be reached"
    )
