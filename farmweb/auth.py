"""Who is calling the job API: a bearer token bound to a tenant, or anyone on loopback.

Each calling service holds its own token (`fluxfarm token create TENANT`); its jobs are
recorded under the token's tenant and it sees and cancels only those. Another tenant's
job answers 404, exactly like a job that does not exist, so a token cannot even learn
which job ids are in use. The API runs open, without tokens, only on a loopback address.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.applications import Starlette

from farmdomain.errors import ConfigurationError, Forbidden, Unauthenticated
from farmdomain.settings import Settings
from jobstore.api_tokens import ApiToken, ApiTokenStore, digest
from producers.client import FluxfarmClient

OPEN_TENANT = "default"
AuthMode = Literal["required", "open"]
# tokens a web process keeps found at once: a service holds a few, so this bounds memory
# without ever evicting a token in use
TOKEN_CACHE_MAX = 1024

_bearer = HTTPBearer(auto_error=False, description="A token from `fluxfarm token create TENANT`.")


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_mode(settings: Settings) -> AuthMode:
    """The mode the settings ask for; open on a non-loopback address is refused."""
    loopback = is_loopback(settings.bind_host)
    if settings.api_auth == "auto":
        return "open" if loopback else "required"
    if settings.api_auth == "open" and not loopback:
        raise ConfigurationError(
            "FLUXFARM_API_AUTH",
            f"open needs a loopback FLUXFARM_BIND_HOST, not {settings.bind_host!r}: anyone "
            "who can reach it could submit paid jobs",
        )
    return settings.api_auth


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: whose jobs it sees, and whether it may create or cancel."""

    tenant: str
    can_write: bool
    token_id: str | None


class FoundTokens:
    """Tokens the store found, by digest, each trusted for `ttl_s` before it is asked again,
    so that a service's every request is not a lookup; a revocation takes effect within
    `ttl_s`. Only found tokens are kept: an unknown one is asked of the store each time,
    and garbage cannot push out the tokens in use."""

    def __init__(
        self,
        tokens: ApiTokenStore,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = TOKEN_CACHE_MAX,
    ) -> None:
        self._tokens = tokens
        self._ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._found: OrderedDict[str, tuple[float, ApiToken]] = OrderedDict()
        self._lock = threading.Lock()

    def find(self, presented: str) -> ApiToken | None:
        key = digest(presented)
        now = self._clock()
        with self._lock:
            kept = self._found.get(key)
            if kept is not None and now < kept[0]:
                return kept[1]
        found = self._tokens.find(presented)
        with self._lock:
            if found is None:
                self._found.pop(key, None)
            elif self._ttl_s > 0:
                self._found[key] = (now + self._ttl_s, found)
                self._found.move_to_end(key)
                while len(self._found) > self._max:
                    self._found.popitem(last=False)
        return found


class ApiAuth:
    """Turns an Authorization header (and, when open, the peer address) into a Caller."""

    def __init__(self, mode: AuthMode, tokens: FoundTokens) -> None:
        self.mode = mode
        self.tokens = tokens

    def identify(self, presented: str | None, peer: str | None) -> Caller:
        if presented is not None:
            # a token is honoured, or refused, even when open: never silently downgraded
            found = self.tokens.find(presented)
            if found is None:
                raise Unauthenticated("the bearer token is unknown or revoked")
            return Caller(found.tenant, found.can_write, found.id)
        if self.mode == "open":
            # open mode is for this machine only, even if a proxy or a wrong --host exposes it
            if not is_loopback(peer):
                raise Unauthenticated("this API answers loopback clients only without a token")
            return Caller(OPEN_TENANT, True, None)
        raise Unauthenticated("send Authorization: Bearer <token>")


class TenantClients:
    """One FluxfarmClient per tenant, sharing the web process's store."""

    def __init__(self, settings: Settings, shared: FluxfarmClient) -> None:
        self._settings = settings
        self._clients = {shared.tenant: shared}
        self._lock = threading.Lock()

    def for_tenant(self, tenant: str) -> FluxfarmClient:
        with self._lock:
            client = self._clients.get(tenant)
            if client is None:
                shared = next(iter(self._clients.values()))
                client = FluxfarmClient(self._settings, tenant=tenant, store=shared.store)
                self._clients[tenant] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()


def install_auth(app: Starlette, auth: ApiAuth, clients: TenantClients) -> None:
    """Put the authenticator and the tenants' clients where the routes look for them."""
    app.state.api_auth = auth
    app.state.tenant_clients = clients


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The route dependency: who is calling (401 if nobody acceptable)."""
    auth: ApiAuth = request.app.state.api_auth
    peer = request.client.host if request.client else None
    header = request.headers.get("authorization")
    if header is not None and credentials is None:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return auth.identify(None if credentials is None else credentials.credentials, peer)


def writer(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """A caller that may create and cancel jobs (403 for a read-only token)."""
    if not who.can_write:
        raise Forbidden(who.tenant, "create or cancel jobs (read-only token)")
    return who


def client_for(request: Request, who: Caller) -> FluxfarmClient:
    clients: TenantClients = request.app.state.tenant_clients
    return clients.for_tenant(who.tenant)
