"""Just enough of the protobuf wire format for the handful of WhatsApp messages the simulator needs.

The test process must never import neonize (its package import loads the Go library), so instead of
borrowing neonize's generated ``_pb2`` classes we read and write the few messages by field number.
Field numbers come from the ``.proto`` descriptors (waWa6, waCert, waAdv, waE2E).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

# A field value is either an integer (varint / fixed) or bytes (length-delimited).
FieldValue = int | bytes
# What encode() accepts: floats are written as doubles (fixed64), str as UTF-8.
EncodeValue = int | bytes | str | float
Fields = dict[int, list[FieldValue]]

_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5


class ProtoError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int32/int64 are sign-extended to ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint too long")


def encode(fields: Iterable[tuple[int, EncodeValue | None]]) -> bytes:
    """Serialise ``(field_number, value)`` pairs; ints become varints, floats doubles, bytes and str
    length-delimited.

    ``None`` values are skipped so optional fields can be written inline.
    """
    out = bytearray()
    for number, value in fields:
        if value is None:
            continue
        if isinstance(value, bool | int):
            out += encode_varint(number << 3 | _VARINT) + encode_varint(int(value))
        elif isinstance(value, float):
            out += encode_varint(number << 3 | _FIXED64) + struct.pack("<d", value)
        elif isinstance(value, bytes | bytearray):
            out += encode_varint(number << 3 | _LEN) + encode_varint(len(value)) + bytes(value)
        elif isinstance(value, str):
            raw = value.encode()
            out += encode_varint(number << 3 | _LEN) + encode_varint(len(raw)) + raw
        else:
            raise TypeError(f"cannot encode field {number} of type {type(value).__name__}")
    return bytes(out)


def decode(data: bytes) -> Fields:
    """Parse a message into ``{field_number: [values...]}`` (repeated fields keep their order)."""
    fields: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: FieldValue
        if wire_type == _VARINT:
            value, pos = decode_varint(data, pos)
        elif wire_type == _LEN:
            length, pos = decode_varint(data, pos)
            if pos + length > len(data):
                raise ProtoError("truncated length-delimited field")
            value, pos = bytes(data[pos : pos + length]), pos + length
        elif wire_type == _FIXED32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        elif wire_type == _FIXED64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        else:
            raise ProtoError(f"unsupported wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def first_bytes(fields: Fields, number: int, default: bytes | None = None) -> bytes | None:
    """The first length-delimited value of a field, or ``default`` when it is absent."""
    for value in fields.get(number, []):
        if isinstance(value, bytes):
            return value
    return default


def first_int(fields: Fields, number: int, default: int | None = None) -> int | None:
    """The first integer value of a field, or ``default`` when it is absent."""
    for value in fields.get(number, []):
        if isinstance(value, int):
            return value
    return default
