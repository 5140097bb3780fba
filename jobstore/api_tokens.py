"""Job API bearer tokens: made once, shown once, kept only as SHA-256 digests.

A token is 32 random bytes, so its digest needs no salt or slow hash: nothing about it
can be guessed, and a stolen table of digests authenticates nobody. A lookup is an
index probe on the digest, whose timing says nothing usable about the token itself.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, insert, select, update

from farmdomain.errors import FieldIssue, RequestInvalid
from farmdomain.values import utcnow
from jobstore.schema import api_tokens

# a recognizable prefix lets secret scanners and log redaction spot a leaked token
TOKEN_PREFIX = "ffk_"  # noqa: S105 - a marker, not a credential
_TENANT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LABEL_MAX = 128


def digest(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    """A token's record; the token itself is not part of it."""

    id: str
    tenant: str
    label: str
    can_write: bool
    created_at: datetime
    revoked_at: datetime | None


def tenant_issues(tenant: str) -> list[FieldIssue]:
    """Why `tenant` cannot name a tenant, if it cannot; [] if it may."""
    if _TENANT.fullmatch(tenant):
        return []
    return [FieldIssue("tenant", "pattern", "1-64 of a-z, 0-9, '.', '_', '-', starting alnum")]


def _check(tenant: str, label: str) -> None:
    issues = tenant_issues(tenant)
    if not 1 <= len(label) <= _LABEL_MAX:
        issues.append(FieldIssue("label", "length", f"must be 1 to {_LABEL_MAX} characters"))
    if issues:
        raise RequestInvalid(issues)


class ApiTokenStore:
    """The api_tokens table: create, list, revoke, and find a presented token."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._clock = clock

    def create(self, tenant: str, label: str, *, can_write: bool = True) -> tuple[ApiToken, str]:
        """A new token for `tenant`: its record, and the token, which is never shown again."""
        _check(tenant, label)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = ApiToken(str(uuid.uuid4()), tenant, label, can_write, self._clock(), None)
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_tokens).values(
                    id=record.id,
                    tenant=tenant,
                    label=label,
                    token_digest=digest(token),
                    can_write=can_write,
                    created_at=record.created_at,
                )
            )
        return record, token

    def tokens(self, tenant: str | None = None) -> list[ApiToken]:
        query = select(api_tokens).order_by(api_tokens.c.created_at)
        if tenant is not None:
            query = query.where(api_tokens.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_token_from(row) for row in conn.execute(query)]

    def revoke(self, token_id: str) -> bool:
        """Revoke a token at once; False if no active token has that id."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            ).rowcount
        return bool(changed)

    def find(self, presented: str) -> ApiToken | None:
        """The active token whose digest matches `presented`, if any."""
        if not presented.startswith(TOKEN_PREFIX):
            return None
        query = select(api_tokens).where(
            api_tokens.c.token_digest == digest(presented), api_tokens.c.revoked_at.is_(None)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _token_from(row)


def _token_from(row: Row[Any]) -> ApiToken:
    mapping = row._mapping
    return ApiToken(
        id=mapping["id"],
        tenant=mapping["tenant"],
        label=mapping["label"],
        can_write=mapping["can_write"],
        created_at=mapping["created_at"],
        revoked_at=mapping["revoked_at"],
    )
