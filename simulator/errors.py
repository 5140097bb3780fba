"""Runware-shaped error objects and the exception that carries a whole failed request."""

from __future__ import annotations

from typing import Any

ErrorDict = dict[str, Any]


def api_error(
    code: str,
    message: str,
    *,
    parameter: str | None = None,
    task_type: str | None = None,
    task_uuid: Any = None,
) -> ErrorDict:
    """One entry of an `errors` array; absent fields are left out, as Runware does."""
    error: ErrorDict = {"code": code, "message": message}
    if parameter is not None:
        error["parameter"] = parameter
    if task_type is not None:
        error["taskType"] = task_type
    if isinstance(task_uuid, str):
        error["taskUUID"] = task_uuid
    return error


class RequestRejected(Exception):
    """The request as a whole fails with `status` and these errors; nothing was accepted."""

    def __init__(self, status: int, errors: list[ErrorDict]) -> None:
        super().__init__(f"{status}: {errors[0]['code'] if errors else 'error'}")
        self.status = status
        self.errors = errors

    @classmethod
    def single(cls, status: int, code: str, message: str, **fields: Any) -> RequestRejected:
        return cls(status, [api_error(code, message, **fields)])
