"""Runware's official SDKs meeting every refusal and failure the simulator can give: a bad
key, each validation rule, a reused taskUUID, 429/503/402, moderation, timeoutProvider, the
accepted-then-failed and hang faults. Each case fails, as it would against Runware, with the
error each SDK makes of Runware's answer; the docstrings say which and why.

runware-sdk folds raw codes into a small category (`code`, errors.py `derive_code`); the
older runware keeps the raw code (`RunwareAPIError.code`, read from the top of the error)."""

from __future__ import annotations

from typing import Any

import pytest
from sdk_support import Driver, current, failure, legacy, legacy_params
from sim_support import DROP, image_task, wait_until
from validation_cases import INVALID

from simulator.testing import SimulatorHandle

TRANSPORTS = ("rest", "websocket")
# a REST refusal that runware-sdk retries is retried once, quickly
QUICK_RETRY = {"max_retries": 1, "retry_delay": 10}


def test_a_bad_key_is_refused_by_every_transport(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle
) -> None:
    """REST answers 401 invalidApiKey (runware-sdk: `auth`); the WebSocket refuses the
    authentication task (runware-sdk: `auth`, raised by connect; runware: ConnectionError
    with Runware's message, after its own reconnect attempts)."""
    task = image_task(deliveryMethod="sync")
    outcomes = current_sdk.run(
        *(current(sdk_sim, t, task, api_key="wrong", config=QUICK_RETRY) for t in TRANSPORTS)
    )
    [legacy_outcome] = legacy_sdk.run(legacy(sdk_sim, legacy_params(task), api_key="wrong"))
    rest, ws = (failure(outcome) for outcome in outcomes)
    assert (rest["code"], rest["status_code"], rest["parameter"]) == ("auth", 401, "apiKey")
    assert ws["code"] == "auth"
    assert "Invalid API key" in ws["message"]
    error = failure(legacy_outcome)
    assert error["class"] == "ConnectionError"
    assert "Invalid API key" in error["message"]


def _current_cases() -> list[tuple[str, dict[str, Any], str, str]]:
    # runware-sdk always sends a taskUUID of its own when none is given
    return [case for case in INVALID if case[0] != "taskUUID missing"]


def _legacy_cases() -> list[tuple[str, dict[str, Any], str, str]]:
    # runware's request dataclass always carries model and a taskUUID
    return [case for case in INVALID if case[0] not in ("taskUUID missing", "model missing")]


def _legacy_invalid(overrides: dict[str, Any]) -> dict[str, Any]:
    """The task as runware sends it: model and taskUUID typed, every other value through
    extraArgs so that the SDK's own dataclass does not reshape or drop it."""
    task = image_task(**overrides)
    typed = {key: task.pop(key) for key in ("model", "taskUUID") if key in task}
    task.pop("taskType")
    return {**typed, "extra": {key: v for key, v in task.items() if v is not DROP}}


def test_each_validation_rule_is_a_validation_error_naming_the_parameter(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle
) -> None:
    """Every parameter rule, broken once: 400 (REST) or an error frame (WebSocket) with the
    rule's code and parameter. runware-sdk raises `validation` with the parameter (REST:
    status 400, not retried); runware raises RunwareAPIError with the raw code."""
    cases = _current_cases()
    scenarios = [
        current(sdk_sim, transport, image_task(**{"deliveryMethod": "sync", **overrides}))
        for _, overrides, _, _ in cases
        for transport in TRANSPORTS
    ]
    outcomes = current_sdk.run(*scenarios)
    for index, (label, _, _, parameter) in enumerate(cases):
        for outcome in outcomes[2 * index : 2 * index + 2]:
            error = failure(outcome)
            assert (error["code"], error["parameter"]) == ("validation", parameter), label
    for outcome in outcomes[::2]:
        assert failure(outcome)["status_code"] == 400
    legacy_cases = _legacy_cases()
    legacy_outcomes = legacy_sdk.run(
        *(legacy(sdk_sim, _legacy_invalid(overrides)) for _, overrides, _, _ in legacy_cases)
    )
    for outcome, (label, _, code, parameter) in zip(legacy_outcomes, legacy_cases, strict=True):
        error = failure(outcome)
        assert (error["code"], error["error_data"]["parameter"]) == (code, parameter), label


def test_a_reused_taskuuid_is_refused_as_a_conflict(
    current_sdk: Driver, legacy_sdk: Driver, sdk_sim: SimulatorHandle
) -> None:
    """A taskUUID already used is conflictTaskUUID, on any transport and whichever
    transport used it first: runware-sdk raises `validation` (parameter taskUUID); runware
    raises it too on a first attempt (only on its own resend does it mean "accepted")."""
    tasks = [image_task(deliveryMethod=d) for d in ("sync", "async") for _ in TRANSPORTS]
    first = current_sdk.run(*(current(sdk_sim, TRANSPORTS[i % 2], t) for i, t in enumerate(tasks)))
    assert all(outcome["ok"] for outcome in first)
    again = current_sdk.run(
        *(current(sdk_sim, TRANSPORTS[(i + 1) % 2], t) for i, t in enumerate(tasks))
    )
    for outcome in again:
        error = failure(outcome)
        assert (error["code"], error["parameter"]) == ("validation", "taskUUID")
    [legacy_outcome] = legacy_sdk.run(legacy(sdk_sim, legacy_params(tasks[0])))
    assert failure(legacy_outcome)["code"] == "conflictTaskUUID"


@pytest.mark.parametrize(
    ("share", "code", "category", "status", "rest_attempts"),
    [
        ("submit_429_share", "rateLimitExceeded", "rateLimit", 429, 2),
        ("submit_503_share", "serviceUnavailable", "serverError", 503, 2),
        ("submit_402_share", "insufficientCredits", "quota", 402, 1),
    ],
)
def test_refused_submits_are_raised_after_the_retries_the_sdk_allows(
    current_sdk: Driver,
    legacy_sdk: Driver,
    faulty: SimulatorHandle,
    share: str,
    code: str,
    category: str,
    status: int,
    rest_attempts: int,
) -> None:
    """Every submit refused: runware-sdk over REST retries 429 and 5xx (here once) and
    not 402, then raises the category with the HTTP status; over the WebSocket it raises at
    once; runware raises the raw code. Nothing was accepted."""
    faulty.set_faults(**{share: 1.0})
    outcomes = current_sdk.run(
        *(current(faulty, t, image_task(), config=QUICK_RETRY) for t in TRANSPORTS)
    )
    [legacy_outcome] = legacy_sdk.run(legacy(faulty, legacy_params(image_task())))
    rest, ws = (failure(outcome) for outcome in outcomes)
    assert (rest["code"], rest["status_code"]) == (category, status)
    assert ws["code"] == category
    assert rest["retryable"] is ws["retryable"] is (category != "quota")
    assert failure(legacy_outcome)["code"] == code
    stats = faulty.stats()
    assert stats["submits_rejected"] == {code: rest_attempts + 2}
    assert stats["tasks_accepted"] == 0


def test_partial_moderation_hands_on_the_successes_then_raises_safety(
    current_sdk: Driver, legacy_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """The first of three images is blocked. The failed image is an item inside `data`
    beside the two successes, so runware-sdk fires on_result for all three and raises
    `safety` (sync and async, both transports; README "Result and progress callbacks").
    runware raises RunwareAPIError whose code is None: it reads `code` at the top of the
    item, where this layout nests it under `error`."""
    faulty.set_faults(safety_block_first=1)
    outcomes = current_sdk.run(
        *(
            current(faulty, transport, image_task(numberResults=3, deliveryMethod=delivery))
            for transport in TRANSPORTS
            for delivery in ("sync", "async")
        )
    )
    for outcome in outcomes:
        assert failure(outcome)["code"] == "safety"
        seen = outcome["on_result"]
        failed = [item for item in seen if item.get("status") == "error"]
        assert [item["error"]["code"] for item in failed] == ["contentPolicyViolation"]
        assert sum("imageURL" in item for item in seen) == 2
    [legacy_outcome] = legacy_sdk.run(
        legacy(faulty, legacy_params(image_task(numberResults=3, deliveryMethod="sync")))
    )
    error = failure(legacy_outcome)
    assert (error["class"], error["code"]) == ("RunwareAPIError", None)
    assert error["error_data"]["error"]["code"] == "contentPolicyViolation"


def test_total_moderation_raises_safety(
    current_sdk: Driver, legacy_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """The only image is blocked: a sync answer is a 400 (REST) or an error frame with
    contentPolicyViolation, an async poll a failed item. runware-sdk raises `safety`, not
    retryable; runware raises the raw code. Nothing was billed."""
    faulty.set_faults(safety_block_first=1)
    outcomes = current_sdk.run(
        *(
            current(faulty, transport, image_task(deliveryMethod=delivery, includeCost=True))
            for transport in TRANSPORTS
            for delivery in ("sync", "async")
        )
    )
    for outcome in outcomes:
        error = failure(outcome)
        assert (error["code"], error["retryable"]) == ("safety", False)
    assert failure(outcomes[0])["status_code"] == 400
    [legacy_outcome] = legacy_sdk.run(
        legacy(faulty, legacy_params(image_task(deliveryMethod="sync")))
    )
    assert failure(legacy_outcome)["code"] == "contentPolicyViolation"
    assert faulty.stats()["charged_usd"] == 0


def test_timeout_provider_fails_every_sdk(
    current_sdk: Driver, legacy_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """Every image fails with timeoutProvider. Polled (async) or as an error frame, runware-
    sdk raises `unknown`, not retryable: its derive_code looks for "Timeout" with a capital
    T (errors.py), which "timeoutProvider" lacks. A REST sync answer is 504, which it retries
    as it retries any 5xx: the resubmitted taskUUID meets conflictTaskUUID, so it raises
    `validation` on taskUUID (Runware, keeping its taskUUIDs, would answer the same).
    runware raises the raw code."""
    faulty.set_faults(timeout_provider_share=1.0)
    rest_async, ws_async, rest_sync, ws_sync = current_sdk.run(
        current(faulty, "rest", image_task(deliveryMethod="async")),
        current(faulty, "websocket", image_task(deliveryMethod="async")),
        current(faulty, "rest", image_task(deliveryMethod="sync"), config=QUICK_RETRY),
        current(faulty, "websocket", image_task(deliveryMethod="sync")),
    )
    for outcome in (rest_async, ws_async, ws_sync):
        error = failure(outcome)
        assert (error["code"], error["retryable"]) == ("unknown", False)
        assert error["message"] == "The provider did not respond within the timeout window."
    error = failure(rest_sync)
    assert (error["code"], error["parameter"], error["status_code"]) == (
        "validation",
        "taskUUID",
        400,
    )
    [legacy_outcome] = legacy_sdk.run(
        legacy(faulty, legacy_params(image_task(deliveryMethod="sync")))
    )
    assert failure(legacy_outcome)["code"] == "timeoutProvider"


def test_accepted_then_answered_with_500_still_generates_and_bills(
    current_sdk: Driver, legacy_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """The task is accepted but answered 500 (an error frame on the WebSocket). runware-sdk
    over REST retries, meets conflictTaskUUID and raises `validation`: unlike its WebSocket
    transport it does not take that as "accepted". Over the WebSocket it raises
    `serverError`; runware raises internalServerError (only a ConnectionError makes it
    resend). Every task still runs and is billed, as on Runware."""
    faulty.set_faults(accepted_error_share=1.0)
    tasks = [image_task(deliveryMethod="async", includeCost=True) for _ in range(3)]
    rest, ws = current_sdk.run(
        current(faulty, "rest", tasks[0], config=QUICK_RETRY),
        current(faulty, "websocket", tasks[1]),
    )
    [legacy_outcome] = legacy_sdk.run(legacy(faulty, legacy_params(tasks[2])))
    assert (failure(rest)["code"], failure(rest)["parameter"]) == ("validation", "taskUUID")
    assert failure(ws)["code"] == "serverError"
    assert failure(legacy_outcome)["code"] == "internalServerError"
    wait_until(lambda: faulty.stats()["images_generated"] == 3)
    assert faulty.stats()["charged_usd_exact"] == "0.09"


def test_accepted_then_hanging_times_out_in_the_client_and_still_bills(
    current_sdk: Driver, legacy_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """The task is accepted but its answer hangs for 2 s. runware-sdk over REST (a 0.5 s
    timeout, no retry) raises `timeout`; over the WebSocket it waits and raises the
    `serverError` that follows the hang; runware likewise gets internalServerError. The
    tasks run and are billed all the same."""
    faulty.set_faults(accepted_error_share=1.0, accepted_error_mode="hang", hang_s=2.0)
    tasks = [image_task(deliveryMethod="async", includeCost=True) for _ in range(3)]
    rest, ws = current_sdk.run(
        current(faulty, "rest", tasks[0], config={"timeout": 500, "max_retries": 0}),
        current(faulty, "websocket", tasks[1]),
    )
    [legacy_outcome] = legacy_sdk.run(legacy(faulty, legacy_params(tasks[2])))
    assert failure(rest)["code"] == "timeout"
    assert failure(ws)["code"] == "serverError"
    assert failure(legacy_outcome)["code"] == "internalServerError"
    wait_until(lambda: faulty.stats()["images_generated"] == 3)
    assert faulty.stats()["charged_usd_exact"] == "0.09"


def test_a_hanging_submit_is_a_timeout_and_accepts_nothing(
    current_sdk: Driver, legacy_sdk: Driver, faulty: SimulatorHandle
) -> None:
    """The submit hangs for 2 s and is not accepted. runware-sdk over REST gives up at its
    0.5 s timeout, retries once, and raises `timeout`; over the WebSocket the hang ends in a
    requestTimeout frame (`timeout`); runware raises requestTimeout. No task exists."""
    faulty.set_faults(submit_hang_share=1.0, hang_s=2.0)
    rest, ws = current_sdk.run(
        current(faulty, "rest", image_task(), config={**QUICK_RETRY, "timeout": 500}),
        current(faulty, "websocket", image_task()),
    )
    [legacy_outcome] = legacy_sdk.run(legacy(faulty, legacy_params(image_task())))
    assert failure(rest)["code"] == failure(ws)["code"] == "timeout"
    assert failure(legacy_outcome)["code"] == "requestTimeout"
    assert faulty.stats()["tasks_accepted"] == 0
