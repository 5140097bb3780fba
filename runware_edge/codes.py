"""Runware's error codes: which ones mean what to a job, as Runware's own SDK reads them."""

from __future__ import annotations

from farmdomain.jobs import FailureReason

# Runware's `code` for a taskUUID it already has: on a resubmission, our first try landed.
ALREADY_ACCEPTED = "conflictTaskUUID"

_SAFETY_CODES = frozenset(
    {
        "contentPolicyViolation",
        "providerContentPolicyViolation",
        "sensitiveContentDetected",
        "unsafeContentDetected",
        "nsfwContentDetected",
        "promptBlocked",
        "imageBlocked",
        "moderationFailed",
    }
)
_PROVIDER_CODES = frozenset(
    {
        "inferenceError",
        "processingFailed",
        "taskFailed",
        "downloadFailed",
        "uploadFailed",
        "noAvailableServer",
        "modelUnavailable",
        "modelDisabled",
        "modelNotReady",
    }
)

_VALIDATION_PREFIXES = (
    "invalid",
    "missing",
    "conflict",
    "duplicate",
    "unsupported",
    "value",
    "array",
    "max",
)
_VALIDATION_CODES = frozenset({"unknownParameter", "incompatibleParameters", "validationFailed"})


def reason_for_code(code: str | None, http_status: int | None = None) -> FailureReason:
    """Runware's unstable error codes folded into the few reasons alerts key on."""
    text = code or ""
    lowered = text.lower()
    if http_status == 402 or any(w in lowered for w in ("credit", "quota", "balance", "payment")):
        return FailureReason.QUOTA
    if (
        http_status in (401, 403)
        or "apikey" in lowered
        or lowered
        in (
            "unauthorized",
            "forbidden",
            "authenticationfailed",
            "tokenexpired",
            "accountsuspended",
        )
    ):
        return FailureReason.AUTH
    if http_status == 429 or "ratelimit" in lowered:
        return FailureReason.RATE_LIMIT
    if text in _SAFETY_CODES:
        return FailureReason.SAFETY
    if "timeout" in lowered or http_status in (408, 504):
        return FailureReason.TIMEOUT
    if text in _PROVIDER_CODES or text.startswith("provider"):
        return FailureReason.PROVIDER
    # a task's own error in a partly failed request may come with status 200: its code says
    if text.startswith(_VALIDATION_PREFIXES) or text in _VALIDATION_CODES:
        return FailureReason.VALIDATION
    if (http_status is not None and http_status >= 500) or lowered in (
        "internalservererror",
        "serviceunavailable",
        "serverunavailable",
        "unknownerror",
        "standarderror",
    ):
        return FailureReason.SERVER
    if http_status is not None and 400 <= http_status < 500:
        return FailureReason.VALIDATION
    return FailureReason.PROVIDER
