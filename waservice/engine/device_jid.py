"""A device's JID as text, in whatsmeow's own format: the key of its row in `whatsmeow_device`.

whatsmeow's `JID.String()` writes "user@server", "user:device@server" or "user.agent:device@server";
its SQL store keys each account by that text, and `GetDevice` looks one up by it. The registry keeps
the same text, so a JID read back from it finds the same row. Pure: no neonize here (the worker builds
neonize's JID proto from these fields).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class DeviceJid:
    user: str
    agent: int = 0
    device: int = 0
    server: str = "s.whatsapp.net"

    def __str__(self) -> str:
        if self.agent > 0:
            return f"{self.user}.{self.agent}:{self.device}@{self.server}"
        if self.device > 0:
            return f"{self.user}:{self.device}@{self.server}"
        return f"{self.user}@{self.server}" if self.user else self.server


def parse_device_jid(text: str) -> DeviceJid:
    """The fields of "user[.agent][:device]@server"; ValueError on anything else."""
    address, at, server = text.partition("@")
    user_agent, colon, device = address.partition(":")
    user, dot, agent = user_agent.partition(".")
    if not at or not user or not server or (colon and not device.isdigit()) or (dot and not agent.isdigit()):
        raise ValueError(f"not a device JID: {text!r}")
    return DeviceJid(user, int(agent or 0), int(device or 0), server)
