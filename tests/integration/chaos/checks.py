"""What every chaos scenario checks and the conditions its faults wait on."""

from __future__ import annotations

from collections.abc import Callable

from fluxfarm.processes import Child
from tests.integration.chaos.harness import ChaosFarm, ChaosResult

Reporter = Callable[[str], None]


def assert_held(result: ChaosResult, report: Reporter, hit: int, what: str) -> None:
    """The row reported, the fault shown to have met work in flight, and nothing lost."""
    report(result.row(f"{hit} {what}"))
    assert hit > 0, f"the fault met no work in flight ({what})"
    assert all(landing.in_flight > 0 for landing in result.landings), result.landings
    assert_none_lost(result)


def assert_none_lost(result: ChaosResult) -> None:
    assert result.lost == 0, result.states
    assert result.paid_twice == 0
    assert result.duplicate_results == 0
    assert result.charged_usd == result.recorded_usd


def live(chaos: ChaosFarm, name: str) -> Child | None:
    return next(
        (c for c in chaos.farm.children if c.name == name and c.process.poll() is None), None
    )


def ready(chaos: ChaosFarm, name: str) -> Child | None:
    """The live process called `name`, once it has said it is ready."""
    found = live(chaos, name)
    return found if found is not None and " ready." in found.log() else None


def running_child(chaos: ChaosFarm, name: str) -> Child:
    found = live(chaos, name)
    assert found is not None, f"no {name} is running"
    return found


def at_least(**floors: int) -> Callable[[dict[str, int]], bool]:
    """A condition on the jobs by state: at least so many in each named state."""
    return lambda states: all(states.get(state, 0) >= n for state, n in floors.items())


def created(states: dict[str, int]) -> int:
    return sum(states.values())
