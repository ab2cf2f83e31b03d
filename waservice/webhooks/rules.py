"""What a webhook may be: its URL, its event types, its session filter. Pure; used by the API and the
config file alike, so both refuse the same things in the same words."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from ..events.model import TYPES

ALL = "*"
MAX_URL_LENGTH = 2048
MAX_WEBHOOKS = 100  # per service; each one is a lane per session and a row per event
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")  # a DNS label, after IDNA encoding


class InvalidWebhook(ValueError):
    """The message says what to change."""


def check_url(url: str) -> str:
    """http(s) with a host; localhost is fine (a receiver on the same box is the usual case)."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a port that is no number or out of range
    except ValueError as exc:
        raise InvalidWebhook(f"url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhook("url must start with http:// or https://")
    if not parts.hostname or not _valid_host(parts.hostname):
        raise InvalidWebhook("url must name a host: a DNS name or an IP address")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("url must not carry credentials (they would be stored and listed)")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidWebhook("url must not contain spaces or control characters")
    return url


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode()
    except UnicodeError:
        return False
    return all(_LABEL.fullmatch(label) for label in ascii_host.rstrip(".").split("."))


def check_events(events: Sequence[str]) -> tuple[str, ...]:
    """Event types, or ["*"] for all of them."""
    if not events:
        raise InvalidWebhook(f"events must list at least one type, or '{ALL}' for all")
    unknown = [e for e in events if e != ALL and e not in TYPES]
    if unknown:
        raise InvalidWebhook(f"unknown event type '{unknown[0]}' (known: {', '.join(TYPES)}, or '{ALL}')")
    if ALL in events:
        return (ALL,)
    return tuple(dict.fromkeys(events))  # duplicates once, order kept
