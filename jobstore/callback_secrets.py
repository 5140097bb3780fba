"""Each tenant's callback signing secrets: one current, made once on first use, and after
a rotation the previous one too until its overlap ends (Standard Webhooks lets a
signature header carry one signature per secret)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from farmdomain.callbacks import new_secret
from farmdomain.values import utcnow
from jobstore.schema import callback_secrets
from jobstore.statements import translated_errors


class CallbackSecrets:
    """The callback_secrets table."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._clock = clock

    def current(self, tenant: str) -> str:
        """The tenant's current `whsec_` secret, made now if it has none yet."""
        return self.signing(tenant)[0]

    def signing(self, tenant: str) -> list[str]:
        """Every secret that signs the tenant's callbacks now, the current one first."""
        now = self._clock()
        query = (
            select(callback_secrets.c.secret, callback_secrets.c.retires_at)
            .where(
                callback_secrets.c.tenant == tenant,
                callback_secrets.c.retires_at.is_(None) | (callback_secrets.c.retires_at > now),
            )
            .order_by(callback_secrets.c.created_at.desc())
        )
        with translated_errors(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not any(row.retires_at is None for row in rows):
            return [self._create(tenant), *(row.secret for row in rows)]
        return [row.secret for row in sorted(rows, key=lambda row: row.retires_at is not None)]

    def rotate(self, tenant: str, overlap_s: float) -> str:
        """A new current secret; the previous one keeps signing for `overlap_s`."""
        now = self._clock()
        secret = new_secret()
        with translated_errors(), self.engine.begin() as conn:
            conn.execute(
                update(callback_secrets)
                .where(callback_secrets.c.tenant == tenant, callback_secrets.c.retires_at.is_(None))
                .values(retires_at=now + timedelta(seconds=overlap_s))
            )
            self._insert(conn, tenant, secret, now)
        return secret

    def _create(self, tenant: str) -> str:
        secret = new_secret()
        try:
            with translated_errors(), self.engine.begin() as conn:
                self._insert(conn, tenant, secret, self._clock())
        except IntegrityError:
            # another process made the tenant's first secret meanwhile: that one it is
            return self.current(tenant)
        return secret

    @staticmethod
    def _insert(conn: Connection, tenant: str, secret: str, now: datetime) -> None:
        conn.execute(
            insert(callback_secrets).values(
                id=str(uuid.uuid4()), tenant=tenant, secret=secret, created_at=now
            )
        )
