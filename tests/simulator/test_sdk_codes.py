"""The worker's reading of Runware's error codes against runware-sdk's own: every code our
table names, and one code per matching rule, get the category the installed SDK derives."""

from __future__ import annotations

import json
import subprocess

from sdk_support import CURRENT_SDK, sdk_venv_python

from runware_edge import codes

BY_RULE = (
    "insufficientCredits",
    "dailyQuotaReached",
    "lowBalance",
    "tenantRateLimitHit",
    "invalidApiKey",
    "requestTimeout",
    "queueTimeout",
    "taskNotFound",
    "uploadExpired",
    "providerAuthFailed",
    "invalidWidth",
    "seedConflict",
    "maxTasksPerRequestExceeded",
    "conflictTaskUUID",
    "timeoutProvider",
    "payloadTooLarge",
    "somethingNew",
    "aborted",
)
ASK_SDK = """
import json, sys
from runware.errors import derive_code
print(json.dumps({code: derive_code(code) for code in json.load(sys.stdin)}))
"""


def test_every_code_gets_the_category_runware_sdk_derives() -> None:
    named = (
        codes.CONNECTION_CODES
        | codes.QUOTA_CODES
        | codes.SAFETY_CODES
        | codes.AUTH_CODES
        | codes.NOT_FOUND_CODES
        | codes.SERVER_ERROR_CODES
        | codes.PROVIDER_CODES
        | codes.VALIDATION_CODES
    )
    asked = sorted(named | set(BY_RULE))
    answer = subprocess.run(
        [str(sdk_venv_python(CURRENT_SDK)), "-c", ASK_SDK],
        input=json.dumps(asked),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    sdk = json.loads(answer.stdout)
    ours = {code: codes.sdk_category(code) for code in asked}
    assert ours == sdk
