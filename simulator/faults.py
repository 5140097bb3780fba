"""Fault decisions drawn from one seedable random source, under a config updatable at runtime."""

from __future__ import annotations

import random
from dataclasses import dataclass

from simulator.settings import Adjustable, FaultSettings


@dataclass(frozen=True)
class SubmitFault:
    """A submit refused before acceptance: HTTP status, error code, message."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class ImageFault:
    """A generated image that fails instead of succeeding."""

    code: str
    message: str
    nsfw: bool


@dataclass(frozen=True)
class WebhookPlan:
    drop: bool
    duplicate: bool
    delay_s: float


_SUBMIT_FAULTS = (
    ("submit_429_share", SubmitFault(429, "rateLimitExceeded", "Queue capacity exceeded.")),
    ("submit_503_share", SubmitFault(503, "serviceUnavailable", "Temporarily at capacity.")),
    ("submit_504_share", SubmitFault(504, "queueTimeout", "Maximum queue wait exceeded.")),
    ("submit_500_share", SubmitFault(500, "internalServerError", "Internal server error.")),
    ("submit_402_share", SubmitFault(402, "insufficientCredits", "Insufficient credits.")),
)
HANG = SubmitFault(504, "requestTimeout", "The request was not processed in time.")


class FaultController(Adjustable[FaultSettings]):
    """Holds the current fault config (startup values until changed) and draws decisions."""

    def __init__(self, startup: FaultSettings, rng: random.Random) -> None:
        super().__init__(startup)
        self.rng = rng

    def submit_fault(self) -> SubmitFault | None:
        """One draw decides the submit's fate, so shares add up rather than compound."""
        faults = self.current
        draw = self.rng.random()
        for name, fault in _SUBMIT_FAULTS:
            share = float(getattr(faults, name))
            if draw < share:
                return fault
            draw -= share
        if draw < faults.submit_hang_share:
            return HANG
        return None

    def accepted_error_mode(self) -> str | None:
        """For an accepted submit: None to answer normally, else 'error' or 'hang'."""
        if self.rng.random() < self.current.accepted_error_share:
            return self.current.accepted_error_mode
        return None

    def latency_s(self) -> float:
        faults = self.current
        if faults.latency_dist == "uniform":
            return self.rng.uniform(faults.latency_min_s, faults.latency_max_s)
        if faults.latency_dist == "lognormal":
            return self.rng.lognormvariate(faults.latency_mu, faults.latency_sigma)
        return faults.latency_s

    def image_fault(self, index: int) -> ImageFault | None:
        """The fault of the task's image number `index` (0-based), if it fails."""
        faults = self.current
        if index < faults.safety_block_first:
            return self._moderation(faults)
        draw = self.rng.random()
        if draw < faults.timeout_provider_share:
            return ImageFault(
                "timeoutProvider",
                "The provider did not respond within the timeout window.",
                nsfw=False,
            )
        draw -= faults.timeout_provider_share
        if draw < faults.safety_block_share:
            return self._moderation(faults)
        return None

    @staticmethod
    def _moderation(faults: FaultSettings) -> ImageFault:
        return ImageFault(
            faults.safety_block_code,
            "The generated image was blocked by content moderation.",
            nsfw=True,
        )

    def nsfw_flag(self) -> bool:
        return self.rng.random() < self.current.nsfw_flag_share

    def webhook_plan(self) -> WebhookPlan:
        faults = self.current
        drop = self.rng.random() < faults.webhook_drop_share
        duplicate = self.rng.random() < faults.webhook_duplicate_share
        delay = self.rng.uniform(0.0, faults.webhook_reorder_max_s)
        return WebhookPlan(drop=drop, duplicate=duplicate, delay_s=delay)
