"""Turning request bodies and query strings into checked values, with errors a client can act on.

A body is read only as JSON, straight into its model: unknown fields, wrong types and broken
constraints are a 400 naming the field, and no nesting deeper than the model's own gets parsed.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import phonenumbers
from quart import request

from ..errors import InvalidRequest, UnsupportedMediaType
from ..ids import DEFAULT_SESSION, validate_session_id
from ..messaging import Recipient
from .models import JID_PATTERN, MAX_MESSAGE_UTF16_UNITS

T = TypeVar("T", bound=msgspec.Struct)

_NUMBER_FORMATTING = re.compile(r"[\s().-]")
_PHONE_NUMBER = re.compile(r"[1-9][0-9]{6,14}")  # E.164 without '+': at most 15 digits
_JID = re.compile(JID_PATTERN)
# A \uD800-\uDFFF escape not paired high+low (an odd run of backslashes makes it an escape).
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u(?:d[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|d[c-f][0-9a-f]{2})", re.IGNORECASE
)


async def read_body(model: type[T]) -> T:
    """Parse the JSON body into `model`; an empty body means all defaults."""
    if request.args:
        name = next(iter(request.args))
        raise InvalidRequest(f"unexpected query parameter '{name}': send {name} in the JSON body")
    raw = await request.get_data(as_text=False)
    # Browsers post forms and text/plain across sites without asking first; JSON they cannot.
    if request.mimetype != "application/json" and (request.content_type or raw.strip()):
        raise UnsupportedMediaType(
            "request body must be JSON sent with 'Content-Type: application/json', not "
            f"'{request.content_type or 'no content type'}'"
        )
    if not raw.strip():
        raw = b"{}"  # no body: every field takes its default
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(_describe(exc, raw, model)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(_malformed(exc, raw)) from None
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    except RecursionError:  # only reachable through values the model skips
        raise InvalidRequest("request body is nested too deeply") from None


def convert_fields(fields: dict[str, str], model: type[T]) -> T:
    """Form fields (multipart parts, all strings) into `model`, with read_body's error messages."""
    try:
        return msgspec.convert(fields, model, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(_describe(exc, msgspec.json.encode(fields), model)) from None


def _malformed(exc: msgspec.DecodeError, raw: bytes) -> str:
    if match := _LONE_SURROGATE.search(raw):
        escape = match.group().lstrip(b"\\").decode()
        return f"request body has a lone surrogate (\\{escape}): text must be valid Unicode"
    return f"request body is not valid JSON: {str(exc).removeprefix('JSON is malformed: ')}"


def _describe(exc: msgspec.ValidationError, raw: bytes, model: type[msgspec.Struct]) -> str:
    message = str(exc)
    fields = model.__struct_fields__
    if unknown := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        name = unknown.group(1)
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown field '{name}' in request body (accepted: {', '.join(fields)}){hint}"
    if top := re.fullmatch(r"Expected `object`, got `(\w+)`", message):
        return f"request body must be a JSON object, not {top.group(1)}"
    at = re.search(r" - at `\$\.(\w+)`$", message)
    if at and at.group(1) in FIELD_CHECKS and re.search(r" matching regex | of length ", message):
        # A broken constraint: let the field's own check say what is wrong, in its words.
        FIELD_CHECKS[at.group(1)](_raw_field(raw, at.group(1)))
    # msgspec says "Expected `str`, got `int` - at `$.number`"; say it in the API's words.
    return "invalid request body: " + message.replace("`$.", "`").replace(" - at ", " for ")


def _raw_field(raw: bytes, name: str) -> str:
    try:
        value = msgspec.json.decode(raw).get(name)
    except (msgspec.DecodeError, RecursionError):
        return ""
    return value if isinstance(value, str) else ""


def query_session_id() -> str:
    value = request.args.get("session_id")  # absent means the default session; empty is invalid
    return validate_session_id(DEFAULT_SESSION if value is None else value)


def phone_number(value: str) -> str:
    """Digits with country code; tolerates '+', spaces, dashes and brackets people paste."""
    digits = _NUMBER_FORMATTING.sub("", value.strip()).removeprefix("+")
    if not _PHONE_NUMBER.fullmatch(digits):
        raise InvalidRequest(
            "number must be a phone number with country code, digits only (7-15 digits), e.g. 573001234567"
        )
    if problem := _number_problem(digits):
        raise InvalidRequest(f"invalid number: {problem}")
    return digits


def recipient(number: str | None, chat: str | None) -> Recipient:
    """A chat as requests name it: `number` (the seed's field), or `chat`, a phone number or a JID."""
    if number is not None:
        digits = phone_number(number)
        return Recipient(jid=f"{digits}@s.whatsapp.net", to=digits)
    if chat is None:
        raise InvalidRequest("give exactly one of `chat` and `number`")
    if "@" in chat:
        if not _JID.fullmatch(chat):
            raise InvalidRequest(
                "chat must be a phone number with country code or a JID: <digits>@s.whatsapp.net, "
                "<digits>@lid or a group's <id>@g.us"
            )
        return Recipient(jid=chat, to=chat)
    digits = _checked("chat", chat)
    return Recipient(jid=f"{digits}@s.whatsapp.net", to=digits)


def _checked(field: str, value: str) -> str:
    try:
        return phone_number(value)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message.replace("number must be", f"{field} must be a JID or", 1)) from None


def _number_problem(digits: str) -> str | None:
    """Why libphonenumber's metadata says these digits are no phone number, or None if they are."""
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return f"{digits} does not start with a known country code"
    if phonenumbers.is_valid_number(number):
        return None
    code = number.country_code
    region = phonenumbers.region_code_for_country_code(code)
    # The ISO region code, not a country name: phonenumbers' geocoder would cost ~100 MB of RSS.
    country = region if region != phonenumbers.UNKNOWN_REGION else "no country"
    reason = _POSSIBLE_REASONS.get(
        phonenumbers.is_possible_number_with_reason(number), "no such number range"
    )
    return f"{digits} is not a valid number for country code {code} ({country}): {reason}{_hint(digits)}"


def _hint(digits: str) -> str:
    """National numbers are usually at most 10 digits; US numbers typed without their 1 are common."""
    if len(digits) == 10 and phonenumbers.is_valid_number(phonenumbers.parse("+1" + digits)):
        return f"; missing country code? As a US/Canada number it is 1{digits}"
    return "; missing country code?" if len(digits) <= 10 else ""


_POSSIBLE_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
    phonenumbers.ValidationResult.IS_POSSIBLE: "no such number range",
}


def message_text(value: str) -> str:
    if not value or not any(map(_visible, value)):
        raise InvalidRequest("message must not be empty: it has no visible character")
    units = len(value.encode("utf-16-le")) // 2
    if units > MAX_MESSAGE_UTF16_UNITS:
        raise InvalidRequest(
            f"message is too long: {units} UTF-16 code units; WhatsApp allows {MAX_MESSAGE_UTF16_UNITS}"
        )
    return value


# Characters that draw nothing although Unicode does not file them as space or control: the
# Default_Ignorable_Code_Point set (DerivedCoreProperties.txt) plus the blank Braille pattern.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp"}


def _visible(char: str) -> bool:
    code = ord(char)
    if any(low <= code <= high for low, high in _INVISIBLE_RANGES):
        return False
    return unicodedata.category(char) not in _INVISIBLE_CATEGORIES


FIELD_CHECKS: dict[str, Callable[[str], Any]] = {
    "session_id": validate_session_id,
    "number": phone_number,
    "message": message_text,
    "chat": lambda value: recipient(None, value),
    "phone": phone_number,
}
