"""The one place that turns an error type into an HTTP status."""

from __future__ import annotations

from ..errors import (
    ClusterUnavailable,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
    MediaTooLarge,
    NoQrCode,
    OwnerFailed,
    OwnerTimedOut,
    RequestFailed,
    SendFailed,
    SendQueueFull,
    ServiceError,
    SessionMoving,
    StorageFailed,
    TooManySessions,
    TooManyStreams,
    Unauthorized,
    UnknownChat,
    UnknownMessage,
    UnknownNode,
    UnknownWebhook,
    UnsupportedMediaType,
)

# The most specific class in an error's MRO wins, so a subclass can refine its parent's status.
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    ServiceError: 500,
    InvalidRequest: 400,  # the seed: missing parameters, invalid session
    UnsupportedMediaType: 415,
    Unauthorized: 401,
    Forbidden: 403,
    NoQrCode: 404,  # the seed: no QR code available
    SendFailed: 502,
    RequestFailed: 502,
    TooManySessions: 429,
    SendQueueFull: 429,
    IdempotencyKeyInUse: 409,
    IdempotencyKeyReused: 422,  # with Retry-After (api/app.py)
    StorageFailed: 503,
    UnknownWebhook: 404,
    UnknownMessage: 404,
    UnknownChat: 404,
    MediaTooLarge: 413,
    TooManyStreams: 503,
    SessionMoving: 503,  # with Retry-After (api/app.py); an owner that cannot be reached too
    ClusterUnavailable: 503,
    UnknownNode: 404,
    OwnerFailed: 502,  # a request forwarded to the session's owner: the exchange broke
    OwnerTimedOut: 504,  # ... the owner did not answer in time
}


def status_for(error: ServiceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500
