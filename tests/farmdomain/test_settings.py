"""Settings: one FLUXFARM_ prefix, an embedded default under data_dir, secrets kept secret."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from farmdomain.settings import RUNWARE_API_URL, Settings, get_settings


def test_settings_are_read_from_fluxfarm_prefixed_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLUXFARM_RUNWARE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLUXFARM_SUBMIT_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RUNWARE_API_KEY", "unprefixed-is-ignored")
    settings = Settings()
    assert settings.runware_url == "http://127.0.0.1:9/v1"
    assert settings.data_dir == tmp_path
    assert settings.submit_max_attempts == 3
    assert settings.runware_api_key is None


def test_defaults_point_at_runware_and_need_nothing_set(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.runware_url == RUNWARE_API_URL == "https://api.runware.ai/v1"
    assert settings.runware_api_key is None
    assert settings.webhook_secret is None


def test_embedded_broker_and_store_urls_live_under_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "farm")
    root = (tmp_path / "farm").resolve()
    assert settings.resolved_broker_url() == f"fluxfarm-sqlite+sqlite:///{root / 'broker.sqlite'}"
    assert settings.resolved_database_url() == f"sqlite:///{root / 'jobs.sqlite'}"


def test_explicit_broker_and_database_urls_win(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        broker_url="amqp://guest@localhost//",
        database_url="postgresql+psycopg://u@h/db",
    )
    assert settings.resolved_broker_url() == "amqp://guest@localhost//"
    assert settings.resolved_database_url() == "postgresql+psycopg://u@h/db"


def test_embedded_webhook_secret_is_created_once_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-yet"
    first = Settings(data_dir=data_dir).webhook_secrets()
    path = data_dir / "webhook.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 1
    assert len(first[0]) >= 32
    again = Settings(data_dir=data_dir).webhook_secrets()
    assert again == first
    assert sorted(os.listdir(data_dir)) == ["webhook.secret"]  # no temp files left behind


def test_racing_processes_all_read_one_embedded_secret(tmp_path: Path) -> None:
    found: list[list[bytes]] = []
    barrier = threading.Barrier(8)

    def read() -> None:
        barrier.wait()
        found.append(Settings(data_dir=tmp_path).webhook_secrets())

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8
    assert all(secrets == found[0] for secrets in found)
    assert sorted(os.listdir(tmp_path)) == ["webhook.secret"]


def test_configured_secret_signs_and_previous_secret_is_kept_for_rotation(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_secret="new", webhook_secret_previous="old")
    assert settings.webhook_secrets() == [b"new", b"old"]
    assert not (tmp_path / "webhook.secret").exists()


def test_previous_secret_is_kept_beside_the_embedded_one(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path).webhook_secrets()
    rotating = Settings(data_dir=tmp_path, webhook_secret_previous="old").webhook_secrets()
    assert rotating == [*embedded, b"old"]


def test_secrets_are_secret_str_and_never_shown(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        runware_api_key="rw-key-123",
        webhook_secret="hook-secret-456",
        webhook_secret_previous="hook-secret-789",
    )
    for value in (
        settings.runware_api_key,
        settings.webhook_secret,
        settings.webhook_secret_previous,
    ):
        assert isinstance(value, SecretStr)
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        for secret in ("rw-key-123", "hook-secret-456", "hook-secret-789"):
            assert secret not in text
    assert settings.runware_api_key is not None
    assert settings.runware_api_key.get_secret_value() == "rw-key-123"


def test_settings_are_frozen_and_validated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ValidationError):
        settings.submit_max_attempts = 9  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, connect_timeout_s=0)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, log_format="xml")  # type: ignore[arg-type]


def test_get_settings_reads_the_environment_once_until_cleared(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(tmp_path / "a"))
    get_settings.cache_clear()
    first = get_settings()
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(tmp_path / "b"))
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().data_dir == tmp_path / "b"
