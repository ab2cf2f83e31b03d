"""Errors a client of the API can cause or see, as a hierarchy to catch at the level one cares about.

They carry a message for the client and no HTTP status: `api/status.py` maps each type to one.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an error reported to the API client as `{"success": false, "error": message}`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServiceError):
    """Malformed JSON, an unknown, missing or mistyped field, an invalid phone number or message."""


class InvalidSessionId(InvalidRequest):
    """A session id that breaks the naming rule; never reaches the filesystem."""


class UnknownSession(InvalidRequest):
    """No session by that id (the seed reports this as 400, "invalid session")."""


class SessionNotConnected(InvalidRequest):
    """Sending needs a connected session."""


class ProtectedSession(InvalidRequest):
    """`default` cannot be deleted."""


class UnsupportedMediaType(InvalidRequest):
    """A request body that is not JSON (a browser's form or text/plain post, for one)."""


class MediaTooLarge(InvalidRequest):
    """Media past `media.max_bytes`, found while it streamed in (the rest is not read)."""


class UnknownChat(ServiceError):
    """WhatsApp knows no such person or group, or this account is not in the group: nothing was sent."""


class UnknownMessage(ServiceError):
    """No message by that id in the session's message index (never seen, or pruned)."""


class NoQrCode(ServiceError):
    """The session shows no QR code right now."""


class Unauthorized(ServiceError):
    """A missing or wrong API key."""


class Forbidden(ServiceError):
    """A request the service refuses whoever sends it: a foreign Origin or Host (browser-borne attacks)."""


class SendFailed(ServiceError):
    """WhatsApp did not accept the message; the client may retry."""


class SessionIdCollision(InvalidSessionId):
    """A new id that differs from an existing one only by case: both would share one folder on a
    case-insensitive filesystem."""


class RequestFailed(ServiceError):
    """WhatsApp did not answer a request other than a send (a number check, a download...)."""


class SendOutcomeUnknown(SendFailed):
    """No acknowledgement before the deadline: the message may or may not have been delivered."""


class SendQueueFull(ServiceError):
    """The session's send queue holds `sending.queue_size` messages: retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManySessions(ServiceError):
    """`sessions.max` sessions exist already; a new one needs a delete first."""


class TooManyStreams(ServiceError):
    """`stream.max_subscribers` event streams are open already."""


class StorageFailed(ServiceError):
    """The data directory refused a write (disk full, read-only): nothing was half-done."""


class UnknownWebhook(ServiceError):
    """No webhook by that id."""


class IdempotencyKeyInUse(ServiceError):
    """The Idempotency-Key's first request is still running (409)."""


class IdempotencyKeyReused(ServiceError):
    """The Idempotency-Key was used for a different request (422)."""


class SessionMoving(ServiceError):
    """Several nodes: the session is changing owner (a failover, a drain) or its owner cannot be
    reached; the same request succeeds once it has settled (503 with Retry-After)."""


class ClusterUnavailable(ServiceError):
    """Several nodes: the database that says who owns what cannot be reached (503)."""


class UnknownNode(ServiceError):
    """No node by that id in the cluster (404)."""


class OwnerUnreachable(SessionMoving):
    """Another node owns the session and could not be reached: nothing was sent to it."""


class OwnerFailed(ServiceError):
    """The owner took the request and the exchange broke before its answer: the outcome is unknown."""


class OwnerTimedOut(ServiceError):
    """The owner took the request and did not answer within cluster.forward_timeout."""
