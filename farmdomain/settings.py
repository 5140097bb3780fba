"""Every setting of fluxfarm, read once from FLUXFARM_* environment variables."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from farmdomain.errors import ConfigurationError

RUNWARE_API_URL = "https://api.runware.ai/v1"


Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) `url`, the port made explicit; None otherwise."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


class Settings(BaseSettings):
    """Configuration for every process; the embedded default needs none of it set."""

    model_config = SettingsConfigDict(env_prefix="FLUXFARM_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        Path(".fluxfarm"), description="Where the embedded broker, store and secret live."
    )
    broker_url: str | None = Field(
        None,
        description="amqp://, redis:// or sqla+sqlite://; default: a SQLite file in data_dir."
        " A RabbitMQ cluster's nodes: their amqp:// URLs separated by `;`, tried in turn.",
    )
    broker_queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="Type of every queue the farm declares on RabbitMQ: quorum (replicated"
        " across a cluster's nodes, the production setup) or classic.",
    )
    database_url: str | None = Field(
        None, description="postgresql+psycopg:// or sqlite://; default: SQLite in data_dir."
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        le=100,
        description="PostgreSQL connections each process keeps open; the web process runs at"
        " most this many store calls at once, so it never opens connections beyond them.",
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
        120.0,
        gt=0,
        description="Reaper republishes a queued job this old; under a cap, only as many as"
        " there are free units (the dispatcher admits the others).",
    )
    runware_max_in_flight: int = Field(
        0,
        ge=0,
        description="Tasks the whole fleet may have claimed and not yet terminal per Runware key,"
        " counted in the store; 0: uncapped (still counted). Set it to the account's limit.",
    )
    admission_dispatch_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often beat starts the dispatcher, which admits jobs waiting for the"
        " cap; each run keeps admitting them as units free for this long.",
    )
    admission_priority_aging_s: float = Field(
        60.0,
        gt=0,
        description="Waiting this long is worth one step of a job's priority: a job goes"
        " before one of a lower priority created up to that many steps earlier, never later.",
    )
    admission_tenants_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long a dispatcher keeps the tenants' weights it read before reading"
        " them again: a `fluxfarm tenants weight` takes effect within this long.",
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
    webhook_max_items: int = Field(
        50,
        ge=1,
        description="Most result and error items one webhook body may carry (numberResults"
        " is at most 20); counted before the body is parsed.",
    )
    webhook_cost_factor: float = Field(
        3.0,
        ge=1,
        description="A webhook's cost above this many times the job's per-image estimate is"
        " kept as unconfirmed and counted in no spend figure.",
    )
    webhook_token_ttl_s: float = Field(
        3600.0,
        gt=0,
        description="How long after its job is terminal a task's webhook token is still"
        " accepted (for Runware's retries of a delivery).",
    )
    webhook_body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time a webhook's sender has to send its whole body; then 408 and closed.",
    )
    bind_host: str = Field(
        "127.0.0.1", description="Address web listens on; `fluxfarm web --host` sets it."
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Comma-separated proxy addresses (or CIDRs) whose X-Forwarded-For and"
        " -Proto web believes; empty: none, the client is the connection's peer.",
    )
    ops_token: SecretStr | None = Field(
        None,
        description="Bearer token /metrics, /docs, /redoc and /openapi.json need when web is"
        " bound to a non-loopback address; unset: there they answer nobody.",
    )
    api_auth: Literal["auto", "required", "open"] = Field(
        "auto",
        description="Job API bearer tokens: auto is open on a loopback bind_host, else required.",
    )
    api_token_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long a web process trusts a job API token it found before asking the"
        " store again: a revocation takes effect within this; 0: every request asks.",
    )
    api_max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest job API body (reference images may be inline)."
    )
    api_max_json_depth: int = Field(32, ge=2, description="Deepest JSON nesting the job API takes.")
    api_body_timeout_s: float = Field(
        30.0, gt=0, description="Time a client has to send a whole job API body."
    )
    api_rate_per_s: float = Field(
        1000.0,
        gt=0,
        description="Sustained job API requests per second per bearer token (per client address"
        " without one), across every web process: one service may submit at the farm's full rate.",
    )
    api_rate_burst: int = Field(
        2000, ge=1, description="Job API requests a token (or address) may make at once."
    )
    rate_limit_url: str | None = Field(
        None,
        description="redis:// holding the job API's rate limits, shared by every web process;"
        " default: the broker's when it is Redis, else each web process keeps its own.",
    )
    callback_allowed_hosts: str = Field(
        "",
        description="Comma-separated hosts (host or host:port) every tenant's callbackUrl may"
        " name; a private or loopback address only as that literal address.",
    )
    callback_tenant_hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Hosts each tenant\'s callbacks may also go to, as JSON: {"acme":'
        ' ["10.0.3.7:8443"]} (internal services: list their addresses).',
    )
    callback_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        description="Delay before each delivery attempt of a callback, the first from the"
        " transition (Standard Webhooks' schedule; jittered by 10 %); dead after the last.",
    )
    callback_timeout_s: float = Field(
        10.0, gt=0, description="Whole time one callback attempt may take, answer included."
    )
    callback_max_answer_bytes: int = Field(
        4096, ge=0, description="Most of a callback's answer read; the rest is not waited for."
    )
    callback_secret_overlap_s: float = Field(
        86400.0,
        ge=0,
        description="After `fluxfarm callbacks rotate`, how long the previous secret also signs.",
    )
    callback_drive_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often beat sends every callback that is due (first attempt, retry,"
        " or one whose sender died) to a worker.",
    )
    submit_many_max: int = Field(
        100,
        ge=1,
        le=1000,
        description="Most requests one submit_many call (or POST /v1/jobs/batch) takes.",
    )
    download_hosts: str = Field(
        "im.runware.ai",
        description="Comma-separated origins result images may come from, besides"
        " runware_url's: `host` (https on 443) or `scheme://host:port`.",
    )
    download_max_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="Largest result image fetched."
    )
    results_url: str | None = Field(
        None,
        description="Where verified result images are kept: file:///DIR, or"
        " s3://BUCKET/PREFIX?endpoint=URL&region=NAME; default: data_dir/results.",
    )
    results_access_key_id: SecretStr | None = Field(
        None, description="S3 access key of results_url; unset: the SDK's own credential chain."
    )
    results_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret key of results_url."
    )
    results_url_ttl_s: int = Field(
        3600, ge=60, le=7 * 24 * 3600, description="Lifetime of a durable image URL handed out."
    )
    runware_ttl_s: int = Field(
        3600,
        ge=60,
        description="ttl sent with every request: how long Runware keeps an imageURL; the"
        " copy is attempted long before, and an alert fires at half of it with no copy.",
    )
    results_upload: Literal["never", "url", "all"] = Field(
        "never",
        description="When Runware PUTs an image straight into an S3 results store"
        " (uploadEndpoint, a presigned URL per job) and the worker only checks it, instead"
        " of copying: url = jobs with outputType URL, all = every output type, never. Only"
        " jobs of one image: several images to one endpoint is undocumented, and those keep"
        " the copy.",
    )
    copy_retry_base_s: float = Field(
        1.0, gt=0, description="First backoff of a result image's copy (full jitter)."
    )
    copy_retry_max_s: float = Field(
        30.0,
        gt=0,
        description="Largest single backoff of a copy; storage down longer is waited out.",
    )
    results_retention_days: int = Field(
        0,
        ge=0,
        description="Days a result image is kept in the results store, from its copy; 0:"
        " for ever. A tenant's own (fluxfarm results retention) overrides it; the reaper"
        " deletes what is past it.",
    )
    copy_redrive_after_s: float = Field(
        60.0,
        gt=0,
        description="Reaper sends a result not yet kept to be copied again after this long.",
    )
    worker_pool: Literal["threads", "prefork", "solo"] = Field(
        "threads",
        description="Celery pool of the workers the launcher starts: the submit task waits on"
        " I/O, and threads let one process batch what they hold.",
    )
    worker_concurrency: int = Field(
        16, ge=1, description="Tasks each worker runs at once (threads or pool processes)."
    )
    submit_batch_max: int = Field(
        10,
        ge=1,
        le=100,
        description="Most jobs one POST to Runware carries: jobs a worker's threads hold at once"
        " go together.",
    )
    submit_parallel_posts: int = Field(
        4,
        ge=1,
        le=64,
        description="POSTs to Runware each worker process has in flight at once; each carries"
        " up to submit_batch_max jobs.",
    )
    worker_prefetch: int = Field(
        4, ge=1, description="Messages a worker process reserves ahead (I/O-bound task)."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a TTY, JSON otherwise."
    )
    log_level: str = Field("INFO", description="Root log level.")
    metrics_dir: Path | None = Field(
        None,
        description="Prometheus multiprocess directory of one process group; wiped at start.",
    )
    worker_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port a worker serves /metrics on; unset: none."
    )
    spend_alert_usd_per_hour: float = Field(
        50.0, ge=0, description="Hourly spend above which the spend alert fires."
    )
    enforce_daily_budget: bool = Field(
        False,
        description="Fail jobs (reason quota) instead of submitting them once today's "
        "committed spend plus their estimate would pass spend_daily_budget_usd.",
    )
    spend_daily_budget_usd: float = Field(
        1000.0, ge=0, description="Daily budget the budget alert warns about nearing."
    )

    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"fluxfarm-sqlite+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    def resolved_rate_limit_url(self) -> str | None:
        """The Redis of the shared rate limits, if the farm has one."""
        if self.rate_limit_url:
            return self.rate_limit_url
        broker = self.resolved_broker_url()
        return broker if broker.startswith(("redis:", "rediss:")) else None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobs.sqlite').resolve()}"

    def resolved_results_url(self) -> str:
        if self.results_url:
            return self.results_url
        return f"file://{(self.data_dir / 'results').resolve()}"

    def download_allow_list(self) -> frozenset[Origin]:
        """Origins result images may be fetched from: the configured ones (a bare host
        means https on 443) and runware_url's own."""
        entries = [h.strip().lower() for h in self.download_hosts.split(",") if h.strip()]
        urls = [e if "://" in e else f"https://{e}" for e in entries] + [self.runware_url]
        return frozenset(origin for origin in map(origin_of, urls) if origin is not None)

    def webhook_secrets(self) -> list[bytes]:
        """Secrets that verify a token, the signing one first."""
        current = self.webhook_secret or _embedded_webhook_secret(self.data_dir)
        found = [current, self.webhook_secret_previous]
        return [s.get_secret_value().encode() for s in found if s is not None]

    def check_webhook_secret(self) -> None:
        """Raise ConfigurationError unless the signing secret can be read."""
        try:
            self.webhook_secrets()
        except OSError as exc:
            where = "FLUXFARM_WEBHOOK_SECRET" if self.webhook_secret else "FLUXFARM_DATA_DIR"
            raise ConfigurationError(where, f"the webhook secret cannot be read: {exc}") from exc


def _embedded_webhook_secret(data_dir: Path) -> SecretStr:
    """A per-installation secret so the embedded default signs tokens with no setup."""
    path = data_dir / "webhook.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        candidate = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        # created owner-only: the secret is never readable by others, even for a moment
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as secret_file:
            secret_file.write(secrets.token_urlsafe(32))
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
