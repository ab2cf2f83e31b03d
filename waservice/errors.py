"""Errors a client of the API can cause or see. Each maps to one HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an error reported to the API client as `{"success": false, "error": message}`."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServiceError):
    """Malformed JSON, a missing or mistyped field, an implausible phone number."""

    status_code = 400


class InvalidSessionId(InvalidRequest):
    """A session id that breaks the naming rule; never reaches the filesystem."""


class UnknownSession(InvalidRequest):
    """No session by that id (the seed reports this as 400, "invalid session")."""


class SessionNotConnected(InvalidRequest):
    """Sending needs a connected session."""


class ProtectedSession(InvalidRequest):
    """`default` cannot be deleted."""


class NoQrCode(ServiceError):
    status_code = 404


class Unauthorized(ServiceError):
    status_code = 401


class SendFailed(ServiceError):
    """WhatsApp did not accept the message; the client may retry."""

    status_code = 502


class SessionIdCollision(InvalidSessionId):
    """A new id that differs from an existing one only by case: both would share one folder on a
    case-insensitive filesystem."""


class SendOutcomeUnknown(SendFailed):
    """No acknowledgement before the deadline: the message may or may not have been delivered."""


class TooManySessions(ServiceError):
    """`sessions.max` sessions exist already; a new one needs a delete first."""

    status_code = 429


class StorageFailed(ServiceError):
    """The data directory refused a write (disk full, read-only): nothing was half-done."""

    status_code = 503
