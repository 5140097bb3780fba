"""/metrics and the API documents on a public bind answer only with the ops token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.security.web_process import running_web

OPS_TOKEN = "ops-token-for-the-scraper"
# a public bind, reached by the test on loopback
PUBLIC = "0.0.0.0"
OPS = ["/metrics", "/docs", "/redoc", "/openapi.json"]


def test_without_an_ops_token_a_public_bind_serves_them_to_nobody(tmp_path: Path) -> None:
    with running_web(tmp_path, host=PUBLIC) as web, httpx.Client(base_url=web.url) as http:
        for path in OPS:
            response = http.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            [error] = response.json()["errors"]
            assert (error["field"], error["rule"]) == ("authorization", "ops_token")
            assert "FLUXFARM_OPS_TOKEN" in error["message"]
        assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {OPS_TOKEN}", OPS_TOKEN])
def test_a_public_bind_refuses_them_without_the_right_bearer(
    tmp_path: Path, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    with (
        running_web(tmp_path, host=PUBLIC, FLUXFARM_OPS_TOKEN=OPS_TOKEN) as web,
        httpx.Client(base_url=web.url, headers=headers) as http,
    ):
        assert {http.get(path).status_code for path in OPS} == {401}


def test_the_ops_token_opens_them_on_a_public_bind(tmp_path: Path) -> None:
    bearer = {"Authorization": f"Bearer {OPS_TOKEN}"}
    with (
        running_web(tmp_path, host=PUBLIC, FLUXFARM_OPS_TOKEN=OPS_TOKEN) as web,
        httpx.Client(base_url=web.url, headers=bearer) as http,
    ):
        for path in OPS:
            assert http.get(path).status_code == 200, path
        assert "fluxfarm_farm_state_stale" in http.get("/metrics").text
        assert "/v1/jobs" in http.get("/openapi.json").json()["paths"]
        # the ops token is no job API token
        assert http.get("/v1/spend").status_code == 401


def test_a_loopback_bind_serves_them_to_its_own_machine(tmp_path: Path) -> None:
    with running_web(tmp_path) as web, httpx.Client(base_url=web.url) as http:
        assert {http.get(path).status_code for path in OPS} == {200}
