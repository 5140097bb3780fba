"""The older readings of Runware's answers (a simulator started with --failed-items errors,
--ack-body empty, --sync-webhook ack, --no-progress, --ws-sync-frames each), and what
Runware's SDKs make of them: each case shows why the defaults are what runware-sdk 1.8.0
reads. Where an SDK fails here, it fails as it would against a Runware answering so."""

from __future__ import annotations

from sdk_support import Driver, current, failure, legacy, legacy_params, results
from sim_support import Receiver, image_task

from simulator.testing import SimulatorHandle


def test_a_failed_image_in_a_top_level_errors_array_hides_the_successes_over_rest(
    current_sdk: Driver, old_shapes_sim: SimulatorHandle
) -> None:
    """With the failure in `errors`, runware-sdk's REST path raises on the envelope as a
    whole (client.py `_extract_items`) before any item reaches on_result: the two images
    that did succeed are never handed over."""
    sim = old_shapes_sim
    sim.set_faults(safety_block_first=1)
    try:
        outcomes = current_sdk.run(
            *(
                current(sim, "rest", image_task(numberResults=3, deliveryMethod=delivery))
                for delivery in ("sync", "async")
            )
        )
    finally:
        sim.reset_faults()
    for outcome in outcomes:
        assert failure(outcome)["code"] == "safety"
        assert outcome["on_result"] == []


def test_an_empty_acknowledgement_makes_the_older_sdk_wait_then_resend(
    legacy_sdk: Driver, old_shapes_sim: SimulatorHandle
) -> None:
    """runware waits for an acknowledgement naming the task; `{"data": []}` names none, so
    it waits out its initial-response timeout (60 s by default, 3 s in these tests), resends,
    meets conflictTaskUUID and only then returns the acknowledgement. (runware-sdk over the
    WebSocket likewise waits out its 30 s acknowledgement window, client.py
    `_ACK_TIMEOUT_SECONDS`, and raises `timeout`; too long to run here.)"""
    task = image_task(deliveryMethod="async")
    [outcome] = legacy_sdk.run(legacy(old_shapes_sim, legacy_params(task)))
    assert outcome["kind"] == "IAsyncTaskResponse"
    assert outcome["elapsed_s"] >= 3.0
    assert old_shapes_sim.stats()["submits_rejected"].get("conflictTaskUUID", 0) >= 1


def test_a_sync_task_with_a_webhook_acknowledged_at_once_gives_runware_sdk_nothing(
    current_sdk: Driver, old_shapes_sim: SimulatorHandle, receiver: Receiver
) -> None:
    """Acknowledged at once, a sync task with a webhookURL returns runware-sdk an empty list
    over REST (it returns the items of the sync answer as they are); the image still goes to
    the webhook."""
    task = image_task(deliveryMethod="sync", webhookURL=f"{receiver.url}/hook")
    [outcome] = current_sdk.run(current(old_shapes_sim, "rest", task))
    assert results(outcome) == []
    assert len(receiver.wait_for(1)) == 1


def test_without_progress_the_progress_callback_stays_silent(
    current_sdk: Driver, old_shapes_sim: SimulatorHandle
) -> None:
    """Processing items without `progress` give on_progress nothing; the images come."""
    sim = old_shapes_sim
    sim.set_faults(latency_s=1.5)
    try:
        [outcome] = current_sdk.run(current(sim, "rest", image_task(deliveryMethod="async")))
    finally:
        sim.reset_faults()
    assert len(results(outcome)) == 1
    assert outcome["on_progress"] == []


def test_the_older_layout_still_serves_both_sdks_when_nothing_fails(
    current_sdk: Driver, legacy_sdk: Driver, old_shapes_sim: SimulatorHandle
) -> None:
    """Without failures the older readings change nothing for either SDK on REST, nor for
    runware's sync WebSocket path (images one frame each)."""
    outcomes = current_sdk.run(
        current(old_shapes_sim, "rest", image_task(numberResults=2)),
        current(old_shapes_sim, "rest", image_task(numberResults=2, deliveryMethod="sync")),
        current(old_shapes_sim, "websocket", image_task(numberResults=2, deliveryMethod="sync")),
    )
    task = image_task(numberResults=2, deliveryMethod="sync")
    [legacy_outcome] = legacy_sdk.run(legacy(old_shapes_sim, legacy_params(task)))
    for outcome in [*outcomes, legacy_outcome]:
        assert len(results(outcome)) == 2
