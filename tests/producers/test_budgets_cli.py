"""`fluxfarm tenants budget|budgets`: budgets set and listed as they stand, on a real store;
a job the budget cannot cover refused by `fluxfarm submit`."""

from __future__ import annotations

import json

import pytest

from farmdomain.settings import Settings
from jobstore.store import JobStore
from producers import cli
from tests.producers.conftest import Run


def test_a_budget_set_is_listed_with_what_is_used_reserved_and_left(
    run: Run, settings: Settings
) -> None:
    assert run("tenants", "budget", "acme", "--daily", "0.05", "--monthly", "2") == (
        0,
        "tenant acme: daily $0.05, monthly $2\n",
        "",
    )
    code, out, _err = run("submit", "--prompt", "a fox", "--tenant", "acme")
    store = JobStore.from_settings(settings)
    assert store.claim(out.strip(), 0) is not None
    store.engine.dispose()

    code, out, _err = run("tenants", "budgets", "--json")

    assert code == 0
    figures = [
        (b["tenant"], b["period"], b["limitUsd"], b["reservedUsd"], b["remainingUsd"])
        for b in json.loads(out)
    ]
    assert figures == [
        ("acme", "daily", "0.05", "0.03", "0.02"),
        ("acme", "monthly", "2", "0.03", "1.97"),
    ]
    code, table, _err = run("tenants", "budgets", "--tenant", "acme")
    assert table.splitlines()[1].split() == ["acme", "daily", "0.05", "0", "0.03", "0.02", "0.8"]


def test_submit_past_the_budget_is_refused_naming_it(run: Run) -> None:
    run("tenants", "budget", "acme", "--daily", "0.01")

    code, out, err = run("submit", "--prompt", "a fox", "--tenant", "acme")

    assert (code, out) == (cli.EXIT_REJECTED, "")
    assert err.startswith("error: tenant acme's daily budget of $0.01 would be passed")


@pytest.mark.parametrize(
    "argv",
    [
        ("acme", "--daily", "-1"),
        ("acme", "--monthly", "lots"),
        ("acme", "--soft", "1.5"),
        ("Not A Tenant", "--daily", "1"),
    ],
)
def test_a_bad_argument_is_refused_by_name(run: Run, argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as refused:
        run("tenants", "budget", *argv)

    assert refused.value.code == 2
