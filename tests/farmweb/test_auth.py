"""Web's found tokens: a token found once is trusted for the cache's lifetime, then asked
of the store again, so a revocation lands within that bound; unknown tokens are never kept."""

from __future__ import annotations

from pathlib import Path

from farmweb.auth import FoundTokens
from jobstore.api_tokens import ApiToken, ApiTokenStore
from jobstore.engine import make_engine
from jobstore.migrations import upgrade


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingTokens(ApiTokenStore):
    """The real store, counting the lookups that reach it."""

    lookups = 0

    def find(self, presented: str) -> ApiToken | None:
        self.lookups += 1
        return super().find(presented)


def _tokens(tmp_path: Path) -> CountingTokens:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    return CountingTokens(make_engine(url))


def test_a_found_token_is_trusted_until_its_entry_expires_then_a_revocation_lands(
    tmp_path: Path,
) -> None:
    tokens, ticks = _tokens(tmp_path), Ticks()
    found = FoundTokens(tokens, ttl_s=5.0, clock=ticks)
    record, token = tokens.create("acme", "svc")
    assert [found.find(token) for _ in range(3)] == [record] * 3
    assert tokens.lookups == 1
    assert tokens.revoke(record.id)
    ticks.now += 4.9
    assert found.find(token) == record
    ticks.now += 0.2
    assert found.find(token) is None
    assert tokens.lookups == 2
    tokens.engine.dispose()


def test_unknown_tokens_are_asked_every_time_and_the_cache_stays_bounded(
    tmp_path: Path,
) -> None:
    tokens, ticks = _tokens(tmp_path), Ticks()
    found = FoundTokens(tokens, ttl_s=5.0, clock=ticks, max_entries=2)
    made = [tokens.create("acme", f"svc-{n}") for n in range(3)]
    assert found.find("ffk_not-a-token") is None
    assert found.find("ffk_not-a-token") is None
    for record, token in made:
        assert found.find(token) == record
    assert tokens.lookups == 5
    # the oldest entry went to keep two: its token is asked again, the newest is not
    assert found.find(made[2][1]) == made[2][0]
    assert found.find(made[0][1]) == made[0][0]
    assert tokens.lookups == 6
    tokens.engine.dispose()
