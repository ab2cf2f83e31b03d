"""Outgoing content (engine/content.py) as the WhatsApp protobuf whatsmeow sends."""

from __future__ import annotations

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

from ..content import Content, Text


def build(content: Content) -> Message:
    match content:
        case Text(text=text):
            return Message(conversation=text)
    raise ValueError(f"cannot send {type(content).__name__} yet")
