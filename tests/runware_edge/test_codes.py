"""Every Runware error code the SDK names, and the failure reason it is to a job."""

from __future__ import annotations

import pytest

from farmdomain.jobs import FailureReason
from runware_edge import codes
from runware_edge.codes import reason_for_code, sdk_category

NAMED = [
    *[(code, FailureReason.SERVER) for code in sorted(codes.CONNECTION_CODES)],
    *[(code, FailureReason.QUOTA) for code in sorted(codes.QUOTA_CODES)],
    *[(code, FailureReason.SAFETY) for code in sorted(codes.SAFETY_CODES)],
    *[(code, FailureReason.AUTH) for code in sorted(codes.AUTH_CODES)],
    *[(code, FailureReason.NOT_FOUND) for code in sorted(codes.NOT_FOUND_CODES)],
    *[(code, FailureReason.SERVER) for code in sorted(codes.SERVER_ERROR_CODES)],
    *[(code, FailureReason.PROVIDER) for code in sorted(codes.PROVIDER_CODES)],
    *[(code, FailureReason.VALIDATION) for code in sorted(codes.VALIDATION_CODES)],
]

# codes matched by a rule rather than by name, one per rule, and the ones where an earlier
# rule wins over a later one that also matches
BY_RULE = [
    ("insufficientCredits", FailureReason.QUOTA),
    ("dailyQuotaReached", FailureReason.QUOTA),
    ("lowBalance", FailureReason.QUOTA),
    ("rateLimitExceeded", FailureReason.RATE_LIMIT),
    ("tenantRateLimitHit", FailureReason.RATE_LIMIT),
    ("invalidApiKey", FailureReason.AUTH),
    ("expiredApiKey", FailureReason.AUTH),
    ("requestTimeout", FailureReason.TIMEOUT),
    ("queueTimeout", FailureReason.TIMEOUT),
    ("timeout", FailureReason.TIMEOUT),
    ("taskNotFound", FailureReason.NOT_FOUND),
    ("imageNotFound", FailureReason.NOT_FOUND),
    ("uploadExpired", FailureReason.NOT_FOUND),
    ("providerError", FailureReason.PROVIDER),
    ("providerAuthFailed", FailureReason.PROVIDER),
    ("invalidWidth", FailureReason.VALIDATION),
    ("missingPositivePrompt", FailureReason.VALIDATION),
    ("conflictingParameters", FailureReason.VALIDATION),
    ("seedConflict", FailureReason.VALIDATION),
    ("duplicateLora", FailureReason.VALIDATION),
    ("unsupportedOutputFormat", FailureReason.VALIDATION),
    ("valueOutOfRange", FailureReason.VALIDATION),
    ("arrayTooLong", FailureReason.VALIDATION),
    ("maxTasksPerRequestExceeded", FailureReason.VALIDATION),
    # named in the SDK's safety and auth sets ahead of its validation prefixes
    ("invalidProviderContent", FailureReason.SAFETY),
    ("invalidCredentials", FailureReason.AUTH),
    # Runware's documented provider timeout, which the SDK's case-sensitive rule misses
    ("timeoutProvider", FailureReason.TIMEOUT),
]


@pytest.mark.parametrize(("code", "reason"), NAMED + BY_RULE)
def test_each_code_is_the_reason_the_sdk_category_says(code: str, reason: FailureReason) -> None:
    assert reason_for_code(code) == reason
    # the code decides whatever status it came with
    assert reason_for_code(code, 400) == reason
    assert reason_for_code(code, 200) == reason


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("conflictTaskUUID", "validation"),
        ("timeoutProvider", "unknown"),
        ("aborted", "aborted"),
        ("disconnected", "connection"),
        ("environmentPaused", "quota"),
        ("permissionDenied", "auth"),
        ("authTimeout", "auth"),
        ("taskFailedOrNotFound", "notFound"),
        ("taskCancelled", "notFound"),
        ("unknownModel", "notFound"),
        ("somethingNew", "unknown"),
    ],
)
def test_sdk_category_follows_the_sdk_order(code: str, category: str) -> None:
    assert sdk_category(code) == category


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (402, FailureReason.QUOTA),
        (401, FailureReason.AUTH),
        (403, FailureReason.AUTH),
        (429, FailureReason.RATE_LIMIT),
        (408, FailureReason.TIMEOUT),
        (504, FailureReason.TIMEOUT),
        (500, FailureReason.SERVER),
        (503, FailureReason.SERVER),
        (400, FailureReason.VALIDATION),
        (404, FailureReason.VALIDATION),
        (413, FailureReason.VALIDATION),
        (200, FailureReason.PROVIDER),
        (None, FailureReason.PROVIDER),
    ],
)
@pytest.mark.parametrize("code", [None, "", "somethingNew", "aborted", "payloadTooLarge"])
def test_a_code_the_sdk_leaves_unknown_is_judged_by_its_status(
    code: str | None, status: int | None, reason: FailureReason
) -> None:
    assert reason_for_code(code, status) == reason
