"""GET /v1/spend: the calling tenant's spend per day and model, and its budgets: used,
reserved and remaining in the current day and month."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from farmweb.auth import Caller, caller
from farmweb.responses import GUARDED_RESPONSES, refusal
from jobstore.protocol import Store
from jobstore.spend import DEFAULT_DAYS, MAX_DAYS, SpendReport, spend_report


def build_router() -> APIRouter:
    """GET /v1/spend: the calling tenant's spend; the app provides `app.state.client`."""
    router = APIRouter(prefix="/v1/spend", tags=["spend"])

    responses = {422: refusal("`days` is out of range."), **GUARDED_RESPONSES}

    @router.get(
        "",
        operation_id="getSpend",
        response_model=SpendReport,
        response_model_by_alias=True,
        responses=responses,
    )
    def get_spend(
        request: Request,
        who: Annotated[Caller, Depends(caller)],
        days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS,
    ) -> SpendReport:
        store: Store = request.app.state.client.store
        return spend_report(store.engine, days, tenant=who.tenant)

    return router
