"""Runware's error codes: the category runware-sdk 1.8.0 gives each one (its
`runware/errors.py`, `derive_code`), and the failure reason that category is to a job.

The category rules below are the SDK's, in its order (docs/runware-sdk.md cites the lines);
only codes the SDK leaves `unknown` are judged here, by the HTTP status they came with.
"""

from __future__ import annotations

from typing import Literal

from farmdomain.jobs import FailureReason

# Runware's `code` for a taskUUID it already has. The SDK calls it validation; to us it means
# the first try of a resubmitted task landed, so the client takes it as accepted before any
# category is asked for.
ALREADY_ACCEPTED = "conflictTaskUUID"

SdkCategory = Literal[
    "validation",
    "auth",
    "quota",
    "rateLimit",
    "safety",
    "provider",
    "timeout",
    "notFound",
    "serverError",
    "connection",
    "aborted",
    "unknown",
]

CONNECTION_CODES = frozenset(
    {
        "connectionFailed",
        "notConnected",
        "notOpen",
        "reconnectionFailed",
        "connectionLost",
        "disconnected",
    }
)
QUOTA_CODES = frozenset({"quotaExceeded", "paymentRequired", "environmentPaused"})
SAFETY_CODES = frozenset(
    {
        "contentPolicyViolation",
        "providerContentPolicyViolation",
        "sensitiveContentDetected",
        "unsafeContentDetected",
        "nsfwContentDetected",
        "promptBlocked",
        "imageBlocked",
        "moderationFailed",
        "invalidProviderContent",
    }
)
AUTH_CODES = frozenset(
    {
        "unauthorized",
        "forbidden",
        "permissionDenied",
        "insufficientPermissions",
        "authenticationFailed",
        "authFailed",
        "authTimeout",
        "invalidAuthentication",
        "invalidCredentials",
        "missingAuthentication",
        "tokenExpired",
        "tokenInvalid",
        "tokenMissing",
        "tokenRevoked",
        "accountSuspended",
        "accountDisabled",
        "organizationSuspended",
        "organizationDisabled",
        "workspaceSuspended",
        "workspaceDisabled",
    }
)
NOT_FOUND_CODES = frozenset({"taskCancelled", "taskFailedOrNotFound", "unknownModel"})
SERVER_ERROR_CODES = frozenset(
    {
        "internalServerError",
        "serviceUnavailable",
        "serverUnavailable",
        "standardError",
        "unknownError",
        "undefinedError",
        "defaultError",
        "unrecognizedResponse",
        "errorRetrievingAccountManagement",
    }
)
PROVIDER_CODES = frozenset(
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
        "mediaStorageFileCouldNotBeMoved",
    }
)
VALIDATION_PREFIXES = (
    "invalid",
    "missing",
    "conflict",
    "duplicate",
    "unsupported",
    "value",
    "array",
    "max",
)
VALIDATION_CODES = frozenset(
    {
        "unknownParameter",
        "incompatibleParameters",
        "mismatchProviderSettingsProvider",
        "unknownProviderSettingsProvider",
        "transparentModelMismatch",
        "modelOwnershipValidationError",
        "modelAlreadyExists",
        "validationFailed",
    }
)


def sdk_category(code: str) -> SdkCategory:
    """The category runware-sdk 1.8.0 derives from a raw code; its matching is case-sensitive,
    so `timeoutProvider` (no capital T) is `unknown` to it."""
    if code == "aborted":
        return "aborted"
    if code in CONNECTION_CODES:
        return "connection"
    if code in QUOTA_CODES or any(word in code for word in ("Credits", "Quota", "Balance")):
        return "quota"
    if "RateLimit" in code or code == "rateLimitExceeded":
        return "rateLimit"
    if code in SAFETY_CODES:
        return "safety"
    if code in AUTH_CODES or "ApiKey" in code:
        return "auth"
    if "Timeout" in code or code == "timeout":
        return "timeout"
    if code in NOT_FOUND_CODES or code.endswith(("NotFound", "Expired")):
        return "notFound"
    if code in SERVER_ERROR_CODES:
        return "serverError"
    if code in PROVIDER_CODES or code.startswith("provider"):
        return "provider"
    if code.startswith(VALIDATION_PREFIXES) or "Conflict" in code or code in VALIDATION_CODES:
        return "validation"
    return "unknown"


_REASONS: dict[SdkCategory, FailureReason] = {
    "validation": FailureReason.VALIDATION,
    "auth": FailureReason.AUTH,
    "quota": FailureReason.QUOTA,
    "rateLimit": FailureReason.RATE_LIMIT,
    "safety": FailureReason.SAFETY,
    "provider": FailureReason.PROVIDER,
    "timeout": FailureReason.TIMEOUT,
    "notFound": FailureReason.NOT_FOUND,
    "serverError": FailureReason.SERVER,
    "connection": FailureReason.SERVER,
}

# Runware's docs name this code the provider's timeout; the SDK's case-sensitive match misses it.
_DOCUMENTED_BEYOND_SDK = {"timeoutProvider": FailureReason.TIMEOUT}


def reason_for_code(code: str | None, http_status: int | None = None) -> FailureReason:
    """A Runware code as the failure reason alerts key on: the SDK's category when it has
    one, else what the HTTP status says."""
    if code:
        reason = _REASONS.get(sdk_category(code)) or _DOCUMENTED_BEYOND_SDK.get(code)
        if reason is not None:
            return reason
    return _reason_for_status(http_status)


def _reason_for_status(http_status: int | None) -> FailureReason:
    if http_status == 402:
        return FailureReason.QUOTA
    if http_status in (401, 403):
        return FailureReason.AUTH
    if http_status == 429:
        return FailureReason.RATE_LIMIT
    if http_status in (408, 504):
        return FailureReason.TIMEOUT
    if http_status is not None and http_status >= 500:
        return FailureReason.SERVER
    if http_status is not None and 400 <= http_status < 500:
        return FailureReason.VALIDATION
    # an item's own error in a 2xx answer, or no answer at all, with a code no one knows
    return FailureReason.PROVIDER
