"""A job store outage, answered alike by every route of `web`: 503 with Retry-After.

The store's own calls raise StoreUnavailable; a few readers (the token lookup, spend,
the scrape-time gauges) run their queries on the engine directly and meet the driver's
errors instead. Both are turned into the one answer here, and nowhere else, so no route
can answer an outage with a 500 or without Retry-After. Nothing was changed by a request
that met an outage: the caller retries it, with the same idempotency key when submitting.
"""

from __future__ import annotations

from fastapi import FastAPI, status
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.requests import Request
from starlette.responses import JSONResponse

from farmdomain.errors import FieldIssue, StoreUnavailable
from farmdomain.views import ErrorBody
from jobstore.statements import store_unavailable

RETRY_AFTER_S = 5
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_S)}
# what losing the database raises, from the store or from the engine itself
STORE_DOWN: tuple[type[Exception], ...] = (StoreUnavailable, OperationalError, InterfaceError)


def unavailable(exc: Exception) -> StoreUnavailable:
    """`exc`, one of STORE_DOWN, as the store's own error."""
    return exc if isinstance(exc, StoreUnavailable) else store_unavailable(exc)


def answer(exc: Exception) -> JSONResponse:
    """The job API's answer to an outage: the error body naming the store, Retry-After."""
    issue = FieldIssue("store", "up", str(unavailable(exc)))
    return JSONResponse(
        ErrorBody.of([issue]).model_dump(mode="json"),
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers=RETRY_AFTER,
    )


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    return answer(exc)


def install(app: FastAPI) -> None:
    """Answer an outage met anywhere in `app`'s routes or their dependencies."""
    for error in STORE_DOWN:
        app.add_exception_handler(error, _handle)
