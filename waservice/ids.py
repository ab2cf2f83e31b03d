"""Session ids: validated before they are used as folder names or anything else."""

from __future__ import annotations

import re

from .errors import InvalidSessionId

__all__ = [
    "DEFAULT_SESSION",
    "MAX_SESSION_ID_LENGTH",
    "SESSION_ID_PATTERN",
    "case_key",
    "validate_session_id",
]

DEFAULT_SESSION = "default"
MAX_SESSION_ID_LENGTH = 64
SESSION_ID_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_SESSION_ID_LENGTH}}}")
# Device names Windows reserves in every folder: such a folder cannot be created or copied there.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)), *(f"lpt{n}" for n in range(1, 10))}
)


def validate_session_id(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidSessionId("session_id must be a string")
    if not SESSION_ID_PATTERN.fullmatch(value):
        raise InvalidSessionId("invalid session_id: use 1-64 characters from letters, digits, '_' and '-'")
    if value.lower() in _RESERVED:
        raise InvalidSessionId(f"invalid session_id: '{value}' is a reserved device name on Windows")
    return value


def case_key(session_id: str) -> str:
    """Ids equal under this key share a folder on a case-insensitive filesystem (macOS, Windows)."""
    return session_id.lower()
