"""A device JID, text -> neonize's JID proto (what Neonize() takes to open an account) -> text
(what the worker reports on pairing), as whatsmeow's store keys the device.

Run by test_neonize_cases.py in a process of its own (importing neonize loads the Go library).
"""

from __future__ import annotations

import pytest
from neonize.proto.Neonize_pb2 import JID

from waservice.engine.worker.device import device_jid_text
from waservice.engine.worker.go import account_jid

JIDS = [
    "15550001111:7@s.whatsapp.net",  # a companion device: what pairing gives
    "15550001111.1:7@s.whatsapp.net",  # with an agent
    "15550001111@s.whatsapp.net",  # device 0 (the phone itself)
    "123456789012345:3@lid",
]


@pytest.mark.parametrize("text", JIDS)
def test_round_trip_through_the_proto_go_reads(text: str) -> None:
    proto = JID.FromString(account_jid(text))
    assert device_jid_text(proto) == text
    assert proto.Integrator == 0 and proto.IsInitialized()  # proto2: Go rejects missing required fields


def test_the_fields_go_builds_its_jid_from() -> None:
    proto = JID.FromString(account_jid("15550001111.2:9@s.whatsapp.net"))
    assert (proto.User, proto.RawAgent, proto.Device, proto.Server) == ("15550001111", 2, 9, "s.whatsapp.net")


def test_a_pairing_event_jid_as_whatsmeow_stores_it() -> None:
    paired = JID(User="15550001111", RawAgent=0, Device=12, Integrator=0, Server="s.whatsapp.net")
    assert device_jid_text(paired) == "15550001111:12@s.whatsapp.net"


@pytest.mark.parametrize("text", ["", "15550001111", "@s.whatsapp.net", "1555:x@s.whatsapp.net", "1555.a@s"])
def test_not_a_device_jid(text: str) -> None:
    with pytest.raises(ValueError):
        account_jid(text)
