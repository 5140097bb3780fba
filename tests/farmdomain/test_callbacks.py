"""Which callback URLs a tenant may name, the event's id and body, the retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from farmdomain.callbacks import body, event_id, retry_delay_s, url_issues
from farmdomain.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        callback_allowed_hosts="hooks.example.com, 127.0.0.1:9000",
        callback_tenant_hosts={"acme": ["10.0.3.7"]},
    )


@pytest.mark.parametrize(
    ("url", "tenant", "rule"),
    [
        ("https://hooks.example.com/fluxfarm", "globex", None),
        ("http://hooks.example.com:8080/x", "globex", None),
        ("http://127.0.0.1:9000/hook", "globex", None),
        ("http://127.0.0.1:9001/hook", "globex", "allowed_host"),
        ("http://10.0.3.7/hook", "acme", None),
        ("http://10.0.3.7/hook", "globex", "allowed_host"),
        ("http://evil.example.com/", "acme", "allowed_host"),
        ("ftp://hooks.example.com/", "acme", "url"),
        ("/relative", "acme", "url"),
        ("http://user:pw@hooks.example.com/", "acme", "url"),
        ("https://hooks.example.com/" + "a" * 2048, "acme", "max_length"),
        ("https://hooks.example.com/\x1b[2J", "acme", "characters"),
    ],
)
def test_a_callback_url_must_be_http_and_on_an_allowed_host(
    settings: Settings, url: str, tenant: str, rule: str | None
) -> None:
    issues = url_issues(url, tenant, settings)
    assert [i.rule for i in issues] == ([] if rule is None else [rule])
    assert all(i.field == "callbackUrl" for i in issues)


def test_nothing_is_allowed_until_the_operator_lists_it(tmp_path: Path) -> None:
    [issue] = url_issues("https://hooks.example.com/", "acme", Settings(data_dir=tmp_path))
    assert "FLUXFARM_CALLBACK_ALLOWED_HOSTS" in issue.message


def test_one_event_id_per_job_and_the_body_as_the_spec_shapes_it() -> None:
    job_id = "0b8c3d2e-1f4a-4b5c-9d6e-7f8a9b0c1d2e"
    assert event_id(job_id) == "msg_0b8c3d2e1f4a4b5c9d6e7f8a9b0c1d2e" == event_id(job_id)
    at = datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert orjson.loads(body("job.failed", at, {"id": job_id})) == {
        "type": "job.failed",
        "timestamp": "2030-01-01T12:00:00+00:00",
        "data": {"id": job_id},
    }


def test_the_schedule_is_jittered_and_ends() -> None:
    schedule = [0.0, 5.0, 300.0]
    assert retry_delay_s(schedule, 1, rand=lambda: 0.0) == pytest.approx(4.5)
    assert retry_delay_s(schedule, 1, rand=lambda: 1.0) == pytest.approx(5.5)
    assert retry_delay_s(schedule, 2, rand=lambda: 0.5) == pytest.approx(300.0)
    assert retry_delay_s(schedule, 3) is None
    assert Settings().callback_retry_schedule_s == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
