"""Session ids: validated before they are used as folder names or anything else."""

from __future__ import annotations

import re

from ..errors import InvalidSessionId

DEFAULT_SESSION = "default"
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_session_id(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidSessionId("session_id must be a string")
    if not SESSION_ID_PATTERN.fullmatch(value):
        raise InvalidSessionId("invalid session_id: use 1-64 characters from letters, digits, '_' and '-'")
    return value
