"""Turning request bodies and query strings into checked values, with errors a client can act on."""

from __future__ import annotations

import json
import re
from typing import TypeVar

import msgspec
import phonenumbers
from quart import request

from ..errors import InvalidRequest
from ..ids import DEFAULT_SESSION, validate_session_id

T = TypeVar("T")

MAX_MESSAGE_LENGTH = 65_536
_NUMBER_FORMATTING = re.compile(r"[\s().-]")
_PHONE_NUMBER = re.compile(r"[1-9][0-9]{6,14}")  # E.164 without '+': at most 15 digits


async def read_body(model: type[T]) -> T:
    """Parse the JSON body into `model`; an empty body means all defaults."""
    raw = await request.get_data(as_text=False)
    if raw.strip():
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("request body is not valid JSON") from None
    else:
        data = {}
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if data.get("session_id") is None:
        data.pop("session_id", None)  # null means the default session, like an absent field
    try:
        return msgspec.convert(data, model)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {_describe(exc)}") from None


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `str`, got `int` - at `$.number`"; say it in the API's words.
    return str(exc).replace("`$.", "`").replace(" - at ", " for ")


def query_session_id() -> str:
    value = request.args.get("session_id")  # absent means the default session; empty is invalid
    return validate_session_id(DEFAULT_SESSION if value is None else value)


def phone_number(value: str) -> str:
    """Digits with country code; tolerates '+', spaces, dashes and brackets people paste."""
    digits = _NUMBER_FORMATTING.sub("", value.strip()).removeprefix("+")
    if not _PHONE_NUMBER.fullmatch(digits) or not _possible(digits):
        raise InvalidRequest(
            "number must be a phone number with country code, digits only (7-15 digits), e.g. 573001234567"
        )
    return digits


def _possible(digits: str) -> bool:
    """A known country code and a length that country uses (libphonenumber's metadata)."""
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse("+" + digits))
    except phonenumbers.NumberParseException:
        return False


def message_text(value: str) -> str:
    if not value.strip():
        raise InvalidRequest("message must not be empty")
    if len(value) > MAX_MESSAGE_LENGTH:
        raise InvalidRequest(f"message is too long (at most {MAX_MESSAGE_LENGTH} characters)")
    return value
