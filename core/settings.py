"""Every setting of fluxfarm, read once from FLUXFARM_* environment variables."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

RUNWARE_API_URL = "https://api.runware.ai/v1"


class Settings(BaseSettings):
    """Configuration for every process; the embedded default needs none of it set."""

    model_config = SettingsConfigDict(env_prefix="FLUXFARM_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        Path(".fluxfarm"), description="Where the embedded broker, store and secret live."
    )
    broker_url: str | None = Field(
        None, description="amqp://, redis:// or sqla+sqlite://; default: a SQLite file in data_dir."
    )
    database_url: str | None = Field(
        None, description="postgresql+psycopg:// or sqlite://; default: SQLite in data_dir."
    )
    runware_url: str = Field(RUNWARE_API_URL, description="Runware REST endpoint.")
    runware_api_key: SecretStr | None = Field(None, description="Runware API key.")
    public_base_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL at which Runware reaches the web process."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Signs webhook tokens; default: a random secret kept in data_dir."
    )
    webhook_secret_previous: SecretStr | None = Field(
        None, description="Still accepted while a rotation is under way."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP/TLS connect timeout to Runware.")
    submit_timeout_s: float = Field(
        30.0, gt=0, description="Read timeout of one submit POST to Runware."
    )
    submit_max_attempts: int = Field(
        6, ge=1, description="Submit attempts per job before it fails as transient."
    )
    retry_base_delay_s: float = Field(1.0, gt=0, description="First retry backoff (full jitter).")
    retry_max_delay_s: float = Field(30.0, gt=0, description="Largest single retry backoff.")
    job_deadline_s: float = Field(
        900.0, gt=0, description="Default time from creation to a terminal state."
    )
    queued_republish_after_s: float = Field(
        120.0, gt=0, description="Reaper republishes a queued job this old."
    )
    submitting_stale_after_s: float = Field(
        90.0, gt=0, description="Reaper resubmits a job stuck in submitting this long."
    )
    submitted_poll_after_s: float = Field(
        60.0, gt=0, description="Reaper polls getResponse for a submitted job this old."
    )
    reaper_interval_s: float = Field(15.0, gt=0, description="How often beat runs the reaper.")
    webhook_max_body_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest webhook body (base64 images are big)."
    )
    worker_prefetch: int = Field(
        4, ge=1, description="Messages a worker process reserves ahead (I/O-bound task)."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a TTY, JSON otherwise."
    )
    log_level: str = Field("INFO", description="Root log level.")

    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"fluxfarm-sqlite+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobs.sqlite').resolve()}"

    def webhook_secrets(self) -> list[bytes]:
        """Secrets that verify a token, the signing one first."""
        current = self.webhook_secret or _embedded_webhook_secret(self.data_dir)
        found = [current, self.webhook_secret_previous]
        return [s.get_secret_value().encode() for s in found if s is not None]


def _embedded_webhook_secret(data_dir: Path) -> SecretStr:
    """A per-installation secret so the embedded default signs tokens with no setup."""
    path = data_dir / "webhook.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        candidate = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        candidate.write_text(secrets.token_urlsafe(32))
        candidate.chmod(0o600)
        # link() fails if another process won the race, so every process reads one secret
        try:
            path.hardlink_to(candidate)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return SecretStr(path.read_text().strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
