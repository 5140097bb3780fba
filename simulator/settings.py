"""Startup settings of the simulator and its fault-injection knobs, with documented defaults.

Where Runware's documentation is silent (marked UNDOCUMENTED in runware-api.md) the
behaviour is a setting whose default is the choice hardest on a client; the field's help
text says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

LATENCY_DISTRIBUTIONS = ("fixed", "uniform", "lognormal")
ACCEPTED_ERROR_MODES = ("error", "hang")
ACK_BODIES = ("echo", "empty")
WEBHOOK_BODIES = ("flat", "wrapped")
FAILED_ITEMS = ("data", "errors")
SYNC_WEBHOOKS = ("hold", "ack")
COST_REPORTING = ("requested", "always")
WS_SYNC_FRAMES = ("task", "each")
SEVERAL_UPLOADS = ("each", "first")
HOSTILE_IMAGES = ("none", "not_image", "wrong_size", "too_large", "off_list")


def _setting(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class _Tunable:
    """Settings that may change while the simulator runs, through a /_sim route."""

    def updated(self, changes: dict[str, Any]) -> Self:
        """Return a copy with `changes` applied; raise ValueError on unknown keys or types."""
        known = {spec.name for spec in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            expected = type(getattr(self, name))
            if expected is float and type(value) is int:
                continue
            if type(value) is not expected:
                raise ValueError(f"{name} must be a {expected.__name__}")
        coerced: dict[str, Any] = {
            name: float(value) if isinstance(getattr(self, name), float) else value
            for name, value in changes.items()
        }
        return dataclasses.replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TunableT = TypeVar("TunableT", bound=_Tunable)


class Adjustable(Generic[TunableT]):
    """The settings in force: the startup values until changed at runtime, then reset."""

    def __init__(self, startup: TunableT) -> None:
        self.startup = startup
        self.current = startup

    def update(self, changes: dict[str, Any]) -> TunableT:
        self.current = self.current.updated(changes)
        return self.current

    def reset(self) -> TunableT:
        self.current = self.startup
        return self.current


@dataclass(frozen=True)
class FaultSettings(_Tunable):
    """Fault injection; every share is a probability in 0..1 drawn per submit, image or webhook."""

    latency_dist: str = _setting(
        "fixed", "generation latency per image: fixed | uniform | lognormal"
    )
    latency_s: float = _setting(0.0, "fixed latency in seconds")
    latency_min_s: float = _setting(0.0, "uniform latency lower bound in seconds")
    latency_max_s: float = _setting(0.0, "uniform latency upper bound in seconds")
    latency_mu: float = _setting(0.0, "lognormal latency: mean of ln(seconds)")
    latency_sigma: float = _setting(0.5, "lognormal latency: std deviation of ln(seconds)")
    submit_429_share: float = _setting(0.0, "share of submits refused with 429 queue full")
    submit_503_share: float = _setting(0.0, "share of submits refused with 503 unavailable")
    submit_504_share: float = _setting(0.0, "share of submits refused with 504 queue timeout")
    submit_500_share: float = _setting(0.0, "share of submits refused with 500 server error")
    submit_402_share: float = _setting(0.0, "share of submits refused with 402 no credits")
    submit_hang_share: float = _setting(
        0.0, "share of submits that hang for hang_s and are NOT accepted"
    )
    hang_s: float = _setting(30.0, "how long a hanging submit holds the connection")
    answer_delay_s: float = _setting(
        0.0, "how long an accepted submit's answer waits before it is sent (a slow path)"
    )
    accepted_error_share: float = _setting(
        0.0, "share of submits that ARE accepted (generated, billed) but answered badly"
    )
    accepted_error_mode: str = _setting(
        "error", "how an accepted submit is answered badly: error (500) | hang (hang_s)"
    )
    timeout_provider_share: float = _setting(0.0, "share of images failing with timeoutProvider")
    safety_block_share: float = _setting(0.0, "share of images blocked by moderation")
    safety_block_code: str = _setting("contentPolicyViolation", "error code of a moderation block")
    safety_block_first: int = _setting(
        0, "the first N images of every task are blocked by moderation (deterministic)"
    )
    nsfw_flag_share: float = _setting(0.0, "share of images delivered with NSFWContent true")
    webhook_drop_share: float = _setting(
        0.0, "share of webhooks never delivered, as if every retry failed"
    )
    webhook_duplicate_share: float = _setting(0.0, "share of webhooks delivered twice")
    webhook_reorder_max_s: float = _setting(
        0.0, "random extra delay 0..N s before each webhook, so they arrive out of order"
    )
    max_in_flight_per_key: int = _setting(
        0, "tasks one API key may have accepted and unfinished; above it 429 (0: no limit)"
    )
    hostile_images: str = _setting(
        "none",
        "what every image delivered carries instead of itself (URL or inline): none |"
        " not_image (its format's first bytes, then zeros) | wrong_size (16 px wider) |"
        " too_large (padded to too_large_bytes) | off_list (its imageURL on localhost, a"
        " host a client allows only by name)",
    )
    too_large_bytes: int = _setting(
        33 * 1024 * 1024, "size of a too_large image: above fluxfarm's 32 MiB download cap"
    )

    def __post_init__(self) -> None:
        _check_choice("latency_dist", self.latency_dist, LATENCY_DISTRIBUTIONS)
        _check_choice("hostile_images", self.hostile_images, HOSTILE_IMAGES)
        _check_choice("accepted_error_mode", self.accepted_error_mode, ACCEPTED_ERROR_MODES)
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name.endswith("_share"):
                _check_share(spec.name, value)
            elif spec.name.endswith("_s") and value < 0:
                raise ValueError(f"{spec.name} must not be negative, got {value}")
        if self.latency_min_s > self.latency_max_s and self.latency_dist == "uniform":
            raise ValueError("latency_min_s must not exceed latency_max_s")
        if self.safety_block_first < 0:
            raise ValueError("safety_block_first must not be negative")
        if self.max_in_flight_per_key < 0:
            raise ValueError("max_in_flight_per_key must not be negative")
        if self.too_large_bytes < 0:
            raise ValueError("too_large_bytes must not be negative")


@dataclass(frozen=True)
class ShapeSettings(_Tunable):
    """How answers are laid out where Runware's sources disagree; the defaults are what
    Runware's current SDK (runware-sdk 1.8.0) reads, the other values the older readings."""

    failed_items: str = _setting(
        "data",
        "a failed image: data = an item {status: error, error: {...}} inside data, beside the"
        " successes | errors = an entry of a top-level errors array (older docs)",
    )
    ack_body: str = _setting(
        "echo",
        "async acknowledgement: echo = {data: [{taskType, taskUUID}]} | empty = {data: []}",
    )
    progress: bool = _setting(True, "images still processing carry progress (0-100)")
    sync_webhook: str = _setting(
        "hold",
        "a sync task with a webhookURL: hold = answered with its results like any sync task,"
        " and POSTed | ack = acknowledged at once like an async one",
    )
    cost: str = _setting(
        "requested",
        "cost on result items: requested = only with includeCost (the field's docs) | always"
        " (as the model page's examples show)",
    )
    partial_failure_status: int = _setting(
        200, "HTTP status when some tasks of a request fail and others succeed (UNDOCUMENTED)"
    )
    webhook_body: str = _setting(
        "flat", "webhook body: flat item object | wrapped = {data: [item]} (sources conflict)"
    )
    webhook_errors: bool = _setting(
        False,
        "POST per-image errors to the webhook (UNDOCUMENTED; off: the client must poll)",
    )
    several_uploads: str = _setting(
        "each",
        "a task of several images with an uploadEndpoint (UNDOCUMENTED): each = every image"
        " PUT to it, each overwriting the last | first = only the first image",
    )
    ws_sync_frames: str = _setting(
        "task",
        "a sync task on a WebSocket: task = one answer when it is done, like REST's, so a"
        " partial failure still shows its successes | each = a frame per image as it finishes",
    )

    def __post_init__(self) -> None:
        _check_choice("ws_sync_frames", self.ws_sync_frames, WS_SYNC_FRAMES)
        _check_choice("several_uploads", self.several_uploads, SEVERAL_UPLOADS)
        _check_choice("failed_items", self.failed_items, FAILED_ITEMS)
        _check_choice("ack_body", self.ack_body, ACK_BODIES)
        _check_choice("sync_webhook", self.sync_webhook, SYNC_WEBHOOKS)
        _check_choice("cost", self.cost, COST_REPORTING)
        _check_choice("webhook_body", self.webhook_body, WEBHOOK_BODIES)
        if not 200 <= self.partial_failure_status <= 599:
            raise ValueError("partial_failure_status must be an HTTP status")


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything the simulator is started with; the CLI flags are generated from these fields."""

    api_keys: tuple[str, ...] = _setting(("sim-key",), "comma-separated valid API keys")
    public_base_url: str | None = _setting(
        None, "base URL put in imageURL (default: the listening address)"
    )
    max_body_bytes: int = _setting(8 * 1024 * 1024, "largest accepted request body (413 above)")
    max_tasks_per_request: int = _setting(
        10, "most tasks in one request, auth task excluded (UNDOCUMENTED; kept small)"
    )
    webhook_timeout_s: float = _setting(5.0, "timeout of one webhook or upload attempt")
    webhook_backoff_s: float = _setting(0.25, "first wait between attempts, doubled each time")
    webhook_backoff_max_s: float = _setting(8.0, "cap on one wait between attempts")
    webhook_jitter: float = _setting(
        0.5, "each wait is scaled by a random factor in [1 - jitter, 1]"
    )
    webhook_max_attempts: int = _setting(
        5, "attempts per webhook or upload before giving up (UNDOCUMENTED)"
    )
    http_pool_size: int = _setting(200, "connections in the webhook/upload client pool")
    default_ttl_s: int = _setting(
        60, "lifetime of an imageURL when ttl is omitted (UNDOCUMENTED; the minimum ttl)"
    )
    ttl_scale: float = _setting(1.0, "multiplies every ttl; tests shrink it")
    task_retention_s: float = _setting(
        600.0, "how long a finished task stays visible to getResponse (UNDOCUMENTED)"
    )
    sync_timeout_s: float = _setting(
        60.0,
        "longest a sync request is held; then 504 while the task keeps running (UNDOCUMENTED)",
    )
    require_dimensions: bool = _setting(
        True, "width and height are mandatory (UNDOCUMENTED for FLUX.2 [pro])"
    )
    fast_images: bool = _setting(
        False, "serve one pre-encoded image per (width, height, format, quality)"
    )
    image_cache_size: int = _setting(64, "encoded images kept in the LRU cache")
    random_seed: int | None = _setting(None, "seed of the random source for reproducible runs")
    ws_session_retention_s: float = _setting(
        120.0, "how long a dropped WebSocket session keeps its undelivered results"
    )
    ws_idle_timeout_s: float = _setting(
        120.0, "a WebSocket with no inbound message for this long is closed"
    )
    ws_sync_timeout_s: float = _setting(
        120.0, "longest a sync task on a WebSocket is waited for before a timeout error"
    )
    faults: FaultSettings = field(default_factory=FaultSettings)
    shapes: ShapeSettings = field(default_factory=ShapeSettings)

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ValueError("api_keys must name at least one key")
        if self.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be at least 1")
        if self.default_ttl_s < 60:
            raise ValueError("default_ttl_s must be at least 60, like the ttl parameter")
