"""A client cannot choose the address the rate limit and open mode see by sending
X-Forwarded-For: only the proxies on FLUXFARM_FORWARDED_ALLOW_IPS are believed."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.security.web_process import running_web

BURST = 5
# the bucket refills too slowly to matter while the test runs
LIMITS = {"FLUXFARM_API_RATE_PER_S": "0.001", "FLUXFARM_API_RATE_BURST": str(BURST)}


def _statuses(url: str, forwarded_for: list[str]) -> list[int]:
    with httpx.Client(base_url=url, timeout=10) as http:
        return [
            http.get(f"/v1/jobs/{uuid.uuid4()}", headers={"X-Forwarded-For": address}).status_code
            for address in forwarded_for
        ]


def test_a_rotating_x_forwarded_for_from_loopback_does_not_bypass_the_rate_limit(
    tmp_path: Path,
) -> None:
    addresses = [f"203.0.113.{n}" for n in range(1, 4 * BURST + 1)]
    with running_web(tmp_path, **LIMITS) as web:
        statuses = _statuses(web.url, addresses)
    # the address is the peer's: one bucket for every request, whatever they claim
    assert statuses[:BURST] == [404] * BURST
    assert set(statuses[BURST:]) == {429}


def test_a_configured_proxy_is_believed(tmp_path: Path) -> None:
    # the proxy names the client: each forwarded address has a bucket of its own
    addresses = [f"203.0.113.{n}" for n in range(1, 4 * BURST + 1)]
    with running_web(tmp_path, FLUXFARM_FORWARDED_ALLOW_IPS="127.0.0.1", **LIMITS) as web:
        statuses = _statuses(web.url, addresses)
    # a non-loopback client is refused by open mode, never throttled, each in its own bucket
    assert set(statuses) == {401}
