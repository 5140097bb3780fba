"""The reaper's message goes to a queue of its own and expires within one interval."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from farmdomain.broker import REAP_QUEUE, REAP_TASK, SUBMIT_QUEUE, SUBMIT_TASK
from farmdomain.settings import Settings
from worker.app import create_app


def test_beat_sends_the_reaper_past_the_submit_backlog(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, reaper_interval_s=7.0)
    app = create_app(settings)
    backlog = 20
    for n in range(backlog):
        app.send_task(SUBMIT_TASK, args=(f"job-{n}", 0))
    entry = app.conf.beat_schedule["reap"]
    app.send_task(entry["task"], **entry.get("options", {}))

    with app.connection_for_read() as conn:
        channel = conn.default_channel
        reap = channel.basic_get(REAP_QUEUE, no_ack=True)
        assert reap is not None
        assert reap.headers["task"] == REAP_TASK
        assert channel.basic_get(REAP_QUEUE, no_ack=True) is None
        submits = 0
        while (message := channel.basic_get(SUBMIT_QUEUE, no_ack=True)) is not None:
            assert message.headers["task"] == SUBMIT_TASK
            submits += 1
    assert submits == backlog
    sent = datetime.fromisoformat(reap.headers["expires"])
    assert 0 < (sent.timestamp() - datetime.now(sent.tzinfo).timestamp()) <= 7.0
