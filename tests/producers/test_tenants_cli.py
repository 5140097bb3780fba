"""`fluxfarm tenants`: weights set and listed with what each tenant has waiting and in
flight; a weight that cannot be is one line naming the field and the rule, exit 2."""

from __future__ import annotations

import json

import pytest

from farmdomain.settings import Settings
from jobstore.store import JobStore
from jobstore.tenant_shares import TenantShares
from tests.producers.conftest import Run
from tests.worker.conftest import PARAMS


def test_weights_are_set_and_listed_with_waiting_and_in_flight(
    run: Run, settings: Settings
) -> None:
    store = JobStore.from_settings(settings)
    for _ in range(3):
        store.create_job(PARAMS, tenant="bravo", deadline_s=600)
    claimed = store.create_job(PARAMS, tenant="bravo", deadline_s=600)[0]
    assert store.claim(claimed.id, 0) is not None

    assert run("tenants", "weight", "acme", "2.5") == (0, "tenant acme: weight 2.5\n", "")
    code, out, _err = run("tenants", "list", "--json")

    assert code == 0
    assert json.loads(out) == [
        {"tenant": "acme", "weight": 2.5, "weightSet": True, "waiting": 0, "inFlight": 0},
        {"tenant": "bravo", "weight": 1.0, "weightSet": False, "waiting": 3, "inFlight": 1},
    ]
    code, out, _err = run("tenants", "list")
    assert out.splitlines()[1].split() == ["acme", "2.5", "0", "0"]
    assert out.splitlines()[2].split() == ["bravo", "1*", "3", "1"]
    assert TenantShares(store.engine).weights() == {"acme": 2.5}
    store.engine.dispose()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (("acme", "0"), "error: weight: range: must be a number over 0 and at most 1000"),
        (("acme", "-1"), "error: weight: range: must be a number over 0 and at most 1000"),
        (("acme", "nan"), "error: weight: range: must be a number over 0 and at most 1000"),
        (("acme", "lots"), "error: weight: number: must be a number, got 'lots'"),
        (
            ("Acme Corp", "2"),
            "error: tenant: pattern: 1-64 of a-z, 0-9, '.', '_', '-', starting alnum",
        ),
    ],
)
def test_a_weight_or_tenant_that_cannot_be_is_refused_naming_its_field(
    run: Run, settings: Settings, argv: tuple[str, str], line: str
) -> None:
    assert run("tenants", "weight", *argv) == (2, "", line + "\n")
    store = JobStore.from_settings(settings)
    assert TenantShares(store.engine).weights() == {}
    store.engine.dispose()
