"""WhatsApp Web's binary XML ("binary node") format, dictionary version 3.

A node is a list ``[tag, key, value, ..., content?]``; strings are dictionary tokens, packed
nibble/hex strings, raw bytes or JIDs. The token tables live in ``wa-tokens.json`` (data from
whatsmeow, MPL-2.0, see the notice inside that file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

# Tag bytes (whatsmeow binary/token).
LIST_EMPTY = 0
DICTIONARY_0 = 236
INTEROP_JID = 245
FB_JID = 246
AD_JID = 247
LIST_8 = 248
LIST_16 = 249
JID_PAIR = 250
HEX_8 = 251
BINARY_8 = 252
BINARY_20 = 253
BINARY_32 = 254
NIBBLE_8 = 255

PACKED_MAX = 127

USER_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"
HOSTED_SERVER = "hosted"
HOSTED_LID_SERVER = "hosted.lid"
_AGENT_SERVERS = {0: USER_SERVER, 1: LID_SERVER, 128: HOSTED_SERVER, 129: HOSTED_LID_SERVER}
_SERVER_AGENTS = {server: agent for agent, server in _AGENT_SERVERS.items()}


class CodecError(ValueError):
    """Bytes that are not a valid binary node."""


@dataclass(frozen=True)
class JID:
    """A WhatsApp address: ``user[:device]@server``."""

    user: str
    server: str
    device: int = 0
    agent: int = 0
    integrator: int = 0

    @classmethod
    def parse(cls, text: str) -> JID:
        """Parse ``user[.agent][:device]@server`` (the textual form whatsmeow prints)."""
        if "@" not in text:
            return cls(user="", server=text)
        user, server = text.split("@", 1)
        device = 0
        agent = 0
        if ":" in user:
            user, dev = user.split(":", 1)
            device = int(dev)
        if "." in user:
            user, ag = user.split(".", 1)
            agent = int(ag)
        return cls(user=user, server=server, device=device, agent=agent)

    @property
    def bare(self) -> JID:
        """The same user without a device (``user@server``)."""
        return JID(self.user, self.server)

    def with_device(self, device: int) -> JID:
        return JID(self.user, self.server, device)

    def __str__(self) -> str:
        if not self.user:
            return self.server
        user = self.user if not self.agent else f"{self.user}.{self.agent}"
        if self.device:
            return f"{user}:{self.device}@{self.server}"
        return f"{user}@{self.server}"


SERVER_JID = JID("", USER_SERVER)

Content = None | str | bytes | JID | list["Node"]
AttrValue = str | JID | int


@dataclass
class Node:
    """One binary XML element."""

    tag: str
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    content: Content = None

    @property
    def children(self) -> list[Node]:
        return self.content if isinstance(self.content, list) else []

    def child(self, tag: str) -> Node | None:
        """The first child with this tag, if any."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def children_by_tag(self, tag: str) -> list[Node]:
        return [child for child in self.children if child.tag == tag]

    def attr(self, key: str, default: str = "") -> str:
        """An attribute as text (JIDs in their printed form)."""
        value = self.attrs.get(key)
        return default if value is None else str(value)

    def jid(self, key: str) -> JID | None:
        """An attribute that should be a JID, parsing it if the peer sent plain text."""
        value = self.attrs.get(key)
        if isinstance(value, JID):
            return value
        if isinstance(value, str) and "@" in value:
            return JID.parse(value)
        return None

    @property
    def data(self) -> bytes:
        """The content as bytes (text content encoded), empty if the node has children or nothing."""
        if isinstance(self.content, bytes):
            return self.content
        if isinstance(self.content, str):
            return self.content.encode()
        return b""

    def __str__(self) -> str:
        return render(self)


def render(node: Node, indent: str = "") -> str:
    """A readable XML-ish dump for logs and assertion messages."""
    attrs = "".join(f' {k}="{v}"' for k, v in node.attrs.items())
    if isinstance(node.content, list):
        inner = "\n".join(render(child, indent + "  ") for child in node.content)
        return f"{indent}<{node.tag}{attrs}>\n{inner}\n{indent}</{node.tag}>"
    if node.content is None:
        return f"{indent}<{node.tag}{attrs}/>"
    shown = f"<!-- {len(node.content)} bytes -->" if isinstance(node.content, bytes) else str(node.content)
    return f"{indent}<{node.tag}{attrs}>{shown}</{node.tag}>"


@dataclass(frozen=True)
class Tokens:
    single: list[str]
    double: list[list[str]]
    single_index: dict[str, int]
    double_index: dict[str, tuple[int, int]]


@cache
def tokens() -> Tokens:
    """Load the dictionaries once per process."""
    raw = json.loads((Path(__file__).parent / "wa-tokens.json").read_text())
    single: list[str] = raw["single_byte"]
    double: list[list[str]] = raw["double_byte"]
    single_index = {tok: i for i, tok in enumerate(single) if tok}
    double_index: dict[str, tuple[int, int]] = {}
    for d, dictionary in enumerate(double):
        for i, tok in enumerate(dictionary):
            double_index.setdefault(tok, (d, i))
    return Tokens(single, double, single_index, double_index)


# ---------------------------------------------------------------- encoding


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.tok = tokens()

    def list_start(self, size: int) -> None:
        if size == 0:
            self.out.append(LIST_EMPTY)
        elif size < 256:
            self.out += bytes([LIST_8, size])
        else:
            self.out.append(LIST_16)
            self.out += size.to_bytes(2, "big")

    def byte_length(self, length: int) -> None:
        if length < 256:
            self.out += bytes([BINARY_8, length])
        elif length < 1 << 20:
            self.out.append(BINARY_20)
            self.out += length.to_bytes(3, "big")
        else:
            self.out.append(BINARY_32)
            self.out += length.to_bytes(4, "big")

    def raw(self, data: bytes) -> None:
        self.byte_length(len(data))
        self.out += data

    def string(self, text: str) -> None:
        if text in self.tok.single_index:
            self.out.append(self.tok.single_index[text])
        elif text in self.tok.double_index:
            d, i = self.tok.double_index[text]
            self.out += bytes([DICTIONARY_0 + d, i])
        elif not self._packed(text):
            self.raw(text.encode())

    def _packed(self, text: str) -> bool:
        if not text or len(text) > PACKED_MAX:
            return False
        if all(c.isdigit() or c in "-." for c in text) and text.isascii():
            kind, nibble = NIBBLE_8, _nibble_value
        elif all(c in "0123456789ABCDEF" for c in text):
            kind, nibble = HEX_8, _hex_value
        else:
            return False
        self.out.append(kind)
        head = (len(text) + 1) // 2
        if len(text) % 2:
            head |= 0x80
        self.out.append(head)
        # An odd-length string is padded with nibble 15; the reader drops the last character.
        padded = text + "\0" if len(text) % 2 else text
        for i in range(0, len(padded), 2):
            self.out.append(nibble(padded[i]) << 4 | nibble(padded[i + 1]))
        return True

    def jid(self, jid: JID) -> None:
        lid_or_user = jid.server in (USER_SERVER, LID_SERVER)
        if (lid_or_user and jid.device > 0) or jid.server in (HOSTED_SERVER, HOSTED_LID_SERVER):
            self.out += bytes([AD_JID, _SERVER_AGENTS.get(jid.server, jid.agent), jid.device])
            self.string(jid.user)
        else:
            self.out.append(JID_PAIR)
            if jid.user:
                self.string(jid.user)
            else:
                self.out.append(LIST_EMPTY)
            self.string(jid.server)

    def value(self, value: AttrValue) -> None:
        if isinstance(value, JID):
            self.jid(value)
        else:
            self.string(str(value))

    def node(self, node: Node) -> None:
        attrs = [(k, v) for k, v in node.attrs.items() if v is not None]
        has_content = node.content is not None
        self.list_start(1 + 2 * len(attrs) + (1 if has_content else 0))
        self.string(node.tag)
        for key, value in attrs:
            self.string(key)
            self.value(value)
        if not has_content:
            return
        content = node.content
        if isinstance(content, list):
            self.list_start(len(content))
            for child in content:
                self.node(child)
        elif isinstance(content, bytes | bytearray):
            self.raw(bytes(content))
        elif isinstance(content, JID):
            self.jid(content)
        else:
            self.string(str(content))


def _nibble_value(c: str) -> int:
    if c == "-":
        return 10
    if c == ".":
        return 11
    if c == "\0":
        return 15
    return ord(c) - ord("0")


def _hex_value(c: str) -> int:
    if c == "\0":
        return 15
    return int(c, 16)


def encode(node: Node) -> bytes:
    """Serialise a node (without the leading flags byte)."""
    writer = _Writer()
    writer.node(node)
    return bytes(writer.out)


# ---------------------------------------------------------------- decoding


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.tok = tokens()

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise CodecError("unexpected end of node data")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int_n(self, n: int) -> int:
        if self.pos + n > len(self.data):
            raise CodecError("unexpected end of node data")
        value = int.from_bytes(self.data[self.pos : self.pos + n], "big")
        self.pos += n
        return value

    def raw(self, length: int) -> bytes:
        if self.pos + length > len(self.data):
            raise CodecError("unexpected end of node data")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return bytes(value)

    def list_size(self, tag: int) -> int:
        if tag == LIST_EMPTY:
            return 0
        if tag == LIST_8:
            return self.byte()
        if tag == LIST_16:
            return self.int_n(2)
        raise CodecError(f"expected a list tag, got {tag}")

    def packed(self, tag: int) -> str:
        head = self.byte()
        chars: list[str] = []
        for _ in range(head & 0x7F):
            b = self.byte()
            chars.append(_unpack(tag, b >> 4))
            chars.append(_unpack(tag, b & 0x0F))
        if head & 0x80:
            chars.pop()
        return "".join(chars)

    def string_value(self) -> str:
        value = self.value(as_string=True)
        if isinstance(value, JID):
            return str(value)
        if value is None:
            return ""
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        if isinstance(value, list):
            raise CodecError("expected a string, got a list")
        return value

    def value(self, as_string: bool) -> Content:
        tag = self.byte()
        if tag == LIST_EMPTY:
            return None
        if tag in (LIST_8, LIST_16):
            return [self.node() for _ in range(self.list_size(tag))]
        if 1 <= tag < len(self.tok.single):
            return self.tok.single[tag]
        if DICTIONARY_0 <= tag < DICTIONARY_0 + 4:
            return self.tok.double[tag - DICTIONARY_0][self.byte()]
        if tag == BINARY_8:
            data = self.raw(self.byte())
        elif tag == BINARY_20:
            data = self.raw(self.int_n(3) & 0x0FFFFF)
        elif tag == BINARY_32:
            data = self.raw(self.int_n(4))
        elif tag in (NIBBLE_8, HEX_8):
            return self.packed(tag)
        elif tag == JID_PAIR:
            user = self.value(as_string=True)
            server = self.string_value()
            return JID(user=str(user) if user else "", server=server)
        elif tag == AD_JID:
            agent = self.byte()
            device = self.byte()
            user = self.string_value()
            # Known agents only select the server (whatsmeow keeps RawAgent 0 for them).
            server = _AGENT_SERVERS.get(agent, USER_SERVER)
            return JID(user, server, device, 0 if agent in _AGENT_SERVERS else agent)
        elif tag == FB_JID:
            user = self.string_value()
            device = self.int_n(2)
            return JID(user, self.string_value(), device)
        elif tag == INTEROP_JID:
            user = self.string_value()
            device = self.int_n(2)
            integrator = self.int_n(2)
            return JID(user, self.string_value(), device, integrator=integrator)
        else:
            raise CodecError(f"invalid tag byte {tag}")
        return data.decode(errors="replace") if as_string else data

    def node(self) -> Node:
        size = self.list_size(self.byte())
        if size == 0:
            raise CodecError("node with an empty list")
        tag = self.string_value()
        attrs: dict[str, AttrValue] = {}
        for _ in range((size - 1) >> 1):
            key = self.string_value()
            value = self.value(as_string=True)
            if isinstance(value, list):
                raise CodecError("attribute value is a list")
            attrs[key] = "" if value is None else value  # type: ignore[assignment]
        content: Content = None
        if size % 2 == 0:
            content = self.content()
        return Node(tag, attrs, content)

    def content(self) -> Content:
        return self.value(as_string=False)


def _unpack(tag: int, value: int) -> str:
    if tag == HEX_8:
        return "0123456789ABCDEF"[value]
    if value == 15:
        return "\0"
    if value < 10:
        return chr(ord("0") + value)
    if value == 10:
        return "-"
    if value == 11:
        return "."
    raise CodecError(f"invalid nibble {value}")


def decode(data: bytes) -> Node:
    """Parse one node; leftover bytes are an error, as in whatsmeow."""
    reader = _Reader(data)
    node = reader.node()
    if reader.pos != len(data):
        raise CodecError(f"{len(data) - reader.pos} leftover bytes after node")
    return node
