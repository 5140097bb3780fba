"""fluxfarm-client: submit and follow fluxfarm jobs over HTTP, and verify its callbacks.

from fluxfarm_client import Client

with Client("https://farm.example", token="...") as farm:
    job = farm.submit({"positivePrompt": "a lighthouse", "width": 1024, "height": 768})
    done = farm.wait(job.id, timeout=600)
"""

from fluxfarm_client._async import AsyncClient
from fluxfarm_client._errors import (
    ApiError,
    BudgetExceeded,
    CallbackVerificationError,
    ChecksumMismatch,
    Conflict,
    DownloadError,
    ErrorItem,
    FluxfarmClientError,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
    WaitTimedOut,
)
from fluxfarm_client._http import DEFAULT_TIMEOUT
from fluxfarm_client._models import (
    Callback,
    CallbackAttempt,
    CallbackEvent,
    Event,
    Failure,
    Image,
    Job,
    JobPage,
    JobState,
)
from fluxfarm_client._retry import Retries
from fluxfarm_client._sync import Client
from fluxfarm_client.callbacks import verify_callback

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApiError",
    "AsyncClient",
    "BudgetExceeded",
    "Callback",
    "CallbackAttempt",
    "CallbackEvent",
    "CallbackVerificationError",
    "ChecksumMismatch",
    "Client",
    "Conflict",
    "DownloadError",
    "ErrorItem",
    "Event",
    "Failure",
    "FluxfarmClientError",
    "Forbidden",
    "Image",
    "InvalidRequest",
    "Job",
    "JobPage",
    "JobState",
    "NotFound",
    "RateLimited",
    "Retries",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "WaitTimedOut",
    "verify_callback",
]
