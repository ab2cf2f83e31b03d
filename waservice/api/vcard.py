"""The vCard of a shared contact, built here (neonize's hard-codes a label in Indonesian).

vCard 3.0 (RFC 2426), as WhatsApp's own apps write it: the `waid` parameter on TEL is what makes
the recipient's app offer "Message" and "Add contact" for the number.
"""

from __future__ import annotations

_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", ";": "\\;", "\n": "\\n"})


def escape_text(value: str) -> str:
    """A TEXT value (RFC 2426 5.8.4): backslash, comma, semicolon and newline escaped, so a name
    can never end its line or add a property."""
    return value.replace("\r\n", "\n").replace("\r", "\n").translate(_ESCAPES)


def contact_vcard(name: str, phone_digits: str) -> str:
    """`phone_digits`: the checked number, digits with country code."""
    text = escape_text(name)
    return "\r\n".join(
        (
            "BEGIN:VCARD",
            "VERSION:3.0",
            f"N:;{text};;;",
            f"FN:{text}",
            f"TEL;type=CELL;type=VOICE;waid={phone_digits}:+{phone_digits}",
            "END:VCARD",
        )
    )
