"""The simulator's own pieces, exercised in-process with the Python wire client (no neonize, fast)."""

from __future__ import annotations

import hmac
import json
from hashlib import sha256

import pytest
import trio

from tests.wasim import Simulator, SimulatorError, codec, open_simulator, proto
from tests.wasim.client import DeviceKeys, WireClient, login_payload, qr_string, registration_payload, verify
from tests.wasim.codec import JID, SERVER_JID, Node
from tests.wasim.control import serve_control
from tests.wasim.keys import KeyPair
from tests.wasim.patch import PatchError, patch_library, simulator_url
from tests.wasim.signal_rx import SignalDevice, unpad

pytestmark = [pytest.mark.simulator]

PHONE = "15550001111"


# ------------------------------------------------------------------ codec / proto / keys


@pytest.mark.parametrize(
    "value",
    ["253.199-7", "1234567", "12345678", "ABCDEF1", "ABCDEF12", "s.whatsapp.net", "hello world", "x" * 300],
)
def test_codec_round_trips_strings(value: str) -> None:
    node = Node("iq", {"id": value}, value)
    decoded = codec.decode(codec.encode(node))
    assert decoded.attrs["id"] == value
    # Content keeps whatsmeow's typing: tokens and packed strings decode as text, raw strings as bytes.
    assert decoded.data == value.encode()


def test_codec_round_trips_jids_bytes_and_children() -> None:
    node = Node(
        "message",
        {
            "to": JID("123456789012345", "lid", 7),
            "from": SERVER_JID,
            "pn": JID("15550001111", "s.whatsapp.net"),
        },
        [Node("enc", {"v": "2", "type": "pkmsg"}, b"\x00\x01" * 200), Node("bot", {"biz_bot": "1"})],
    )
    decoded = codec.decode(codec.encode(node))
    assert decoded.attrs == node.attrs
    assert decoded.content == node.content


def test_codec_rejects_leftover_bytes() -> None:
    with pytest.raises(codec.CodecError):
        codec.decode(codec.encode(Node("a")) + b"\x00")


def test_proto_round_trip() -> None:
    data = proto.encode([(1, 150), (2, b"abc"), (2, b"de"), (3, "text"), (4, None)])
    fields = proto.decode(data)
    assert fields == {1: [150], 2: [b"abc", b"de"], 3: [b"text"]}


def test_xeddsa_signatures_verify_like_libsignal() -> None:
    for _ in range(20):  # unforced keys failed about half the time; forced ones must always pass
        key = KeyPair.generate()
        assert verify(key.pub, b"message", key.sign(b"message"))


def test_whatsmeow_padding_is_removed() -> None:
    assert unpad(b"hello" + b"\x03\x03\x03") == b"hello"


def test_signal_device_keeps_prekeys_for_decryption() -> None:
    device = SignalDevice(identity=KeyPair.generate())
    key_id, key = device.new_one_time_prekey()
    assert device.one_time_prekeys[key_id] == key
    assert device.signed_prekey is not None
    assert verify(device.identity.pub, device.signed_prekey.keys.signal_pub, device.signed_prekey.signature)


# ------------------------------------------------------------------ patch harness


def test_patch_replaces_each_needle_once() -> None:
    from tests.wasim.noise import WHATSAPP_ROOT_PUB
    from tests.wasim.patch import WHATSAPP_URL

    library = b"head" + WHATSAPP_URL + b"middle" + WHATSAPP_ROOT_PUB + b"tail"
    patched = patch_library(library, 45678, b"\x01" * 32)
    assert simulator_url(45678) == b"ws://127.0.0.1:45678/ws/chat//"
    assert patched == b"head" + simulator_url(45678) + b"middle" + b"\x01" * 32 + b"tail"
    with pytest.raises(PatchError, match="occurs 2 times"):
        patch_library(library + WHATSAPP_URL, 45678)
    with pytest.raises(PatchError, match="occurs 0 times"):
        patch_library(b"nothing", 45678)
    with pytest.raises(PatchError):
        simulator_url(70000)


def test_patched_copy_is_cached_and_leaves_the_installed_package_alone(patched_dir, sim_port) -> None:
    import sys

    from tests.wasim.patch import installed_neonize_dir, patched_neonize

    installed = (installed_neonize_dir() / "neonize-linux-amd64.so").read_bytes()
    assert installed.count(b"wss://web.whatsapp.com/ws/chat") == 1
    copy = (patched_dir / "neonize" / "neonize-linux-amd64.so").read_bytes()
    assert copy.count(simulator_url(sim_port)) == 1
    assert patched_neonize(patched_dir.parent, sim_port) == patched_dir
    assert "neonize" not in sys.modules  # this process must never load the Go library


# ------------------------------------------------------------------ protocol, end to end in-process


async def pair_wire_client(sim: Simulator, nursery: trio.Nursery, keys: DeviceKeys, phone: str) -> None:
    """Register, check the pairing proofs, confirm, and expect the 515 restart."""
    url = f"ws://127.0.0.1:{sim.port}/ws/chat"
    client = await WireClient.connect(nursery, url, keys, registration_payload(keys))
    pair_device = await client.receive()
    refs = [ref.data.decode() for ref in pair_device.children[0].children]
    assert pair_device.attr("xmlns") == "md" and len(refs) == 6
    await client.send(Node("iq", {"to": SERVER_JID, "type": "result", "id": pair_device.attr("id")}))

    sim.scan_qr(qr_string(refs[0], keys), phone)
    pair_success = await client.receive()
    success = pair_success.children[0]
    assert success.tag == "pair-success" and len(pair_success.children) == 1
    container = proto.decode(success.child("device-identity").data)
    signed = proto.first_bytes(container, 1)
    assert proto.first_bytes(container, 2) == hmac.new(keys.adv_secret, signed, sha256).digest()
    identity = proto.decode(signed)
    details, account_key = proto.first_bytes(identity, 1), proto.first_bytes(identity, 2)
    assert verify(account_key, b"\x06\x00" + details + keys.identity.pub, proto.first_bytes(identity, 3))
    device_jid = success.child("device").jid("jid")
    keys.phone, keys.device_id = device_jid.user, device_jid.device
    assert success.child("device").jid("lid").device == device_jid.device

    await client.send(
        Node(
            "iq",
            {"to": SERVER_JID, "type": "result", "id": pair_success.attr("id")},
            [Node("pair-device-sign", {}, [Node("device-identity", {"key-index": "1"}, b"signed")])],
        )
    )
    restart = await client.receive()
    assert restart.tag == "stream:error" and restart.attr("code") == "515"
    await client.aclose()


async def login_wire_client(sim: Simulator, nursery: trio.Nursery, keys: DeviceKeys) -> WireClient:
    client = await WireClient.connect(
        nursery, f"ws://127.0.0.1:{sim.port}/ws/chat", keys, login_payload(keys)
    )
    success = await client.receive()
    assert success.tag == "success", success
    assert success.jid("lid").device == keys.device_id
    count = await client.iq("encrypt", "get", [Node("count")])
    assert count.children[0].attr("value") == "0"
    await client.iq("passive", "set", [Node("active")])
    return client


@pytest.mark.trio
async def test_wire_client_pairs_logs_in_and_queries(nursery: trio.Nursery) -> None:
    async with open_simulator(0) as sim:
        keys = DeviceKeys()
        await pair_wire_client(sim, nursery, keys, PHONE)
        client = await login_wire_client(sim, nursery, keys)
        await sim.wait_connected(PHONE, timeout=5)

        usync = Node(
            "usync",
            {"mode": "full", "context": "background"},
            [
                Node("query", {}, [Node("devices", {"version": "2"}), Node("lid")]),
                Node("list", {}, [Node("user", {"jid": JID("15559998888", "s.whatsapp.net")})]),
            ],
        )
        reply = await client.iq("usync", "get", [usync])
        user = reply.children[0].child("list").children[0]
        lid = user.child("lid").jid("val")
        assert lid is not None and lid.server == "lid"
        devices = user.child("devices").child("device-list").children
        assert [d.attr("id") for d in devices] == ["0"]

        bundle_query = Node("key", {}, [Node("user", {"jid": lid, "reason": "identity"})])
        bundles = await client.iq("encrypt", "get", [bundle_query])
        bundle = bundles.children[0].children[0]
        assert bundle.jid("jid") == lid
        assert {c.tag for c in bundle.children} == {"registration", "type", "identity", "skey", "key"}
        skey = bundle.child("skey")
        assert verify(
            bundle.child("identity").data, b"\x05" + skey.child("value").data, skey.child("signature").data
        )

        # Unknown IQs get an empty result instead of silence; stalled namespaces get nothing.
        assert (await client.iq("w:p", "get", [Node("ping")])).attr("type") == "result"
        assert (await client.iq("whatever", "set", [Node("thing")])).attr("type") == "result"
        sim.stall({"w:p"})
        with trio.move_on_after(0.5) as scope:
            await client.iq("w:p", "get", [Node("ping")])
        assert scope.cancelled_caught
        await client.aclose()


@pytest.mark.trio
async def test_wire_client_login_refused_for_unknown_or_removed_device(nursery: trio.Nursery) -> None:
    async with open_simulator(0) as sim:
        keys = DeviceKeys()
        await pair_wire_client(sim, nursery, keys, PHONE)
        url = f"ws://127.0.0.1:{sim.port}/ws/chat"

        sim.fail_next_login(PHONE, "403")
        client = await WireClient.connect(nursery, url, keys, login_payload(keys))
        failure = await client.receive()
        assert failure.tag == "failure" and failure.attr("reason") == "403"

        stranger = DeviceKeys(phone=PHONE, device_id=keys.device_id)  # right ids, wrong noise key
        client = await WireClient.connect(nursery, url, stranger, login_payload(stranger))
        assert (await client.receive()).attr("reason") == "401"
        assert sim.phone_state(PHONE)["failed_logins"] == 2


@pytest.mark.trio
async def test_scan_qr_rejects_unknown_codes(nursery: trio.Nursery) -> None:
    async with open_simulator(0) as sim:
        keys = DeviceKeys()
        client = await WireClient.connect(
            nursery, f"ws://127.0.0.1:{sim.port}/ws/chat", keys, registration_payload(keys)
        )
        await client.receive()
        with pytest.raises(SimulatorError, match="not issued"):
            sim.scan_qr(qr_string("2@made-up", keys), PHONE)
        with pytest.raises(SimulatorError, match="no client"):
            sim.scan_qr(qr_string("2@x", DeviceKeys()), PHONE)
        with pytest.raises(SimulatorError, match="not a WhatsApp"):
            sim.scan_qr("garbage", PHONE)


@pytest.mark.trio
async def test_many_concurrent_connections(nursery: trio.Nursery) -> None:
    """Two hundred devices pair and log in at once (the benchmark target is ~1000)."""
    async with open_simulator(0) as sim:
        devices = [DeviceKeys() for _ in range(200)]

        async def one(index: int, keys: DeviceKeys) -> None:
            await pair_wire_client(sim, nursery, keys, f"1555{index:07d}")
            await login_wire_client(sim, nursery, keys)

        with trio.fail_after(60):
            async with trio.open_nursery() as batch:
                for index, keys in enumerate(devices):
                    batch.start_soon(one, index, keys)
            await sim.wait_for(lambda: len(sim.connected_phones()) == 200, timeout=10)
        assert sim.accepted_connections == 400


@pytest.mark.trio
async def test_control_api(nursery: trio.Nursery) -> None:
    async with open_simulator(0) as sim:
        port = await nursery.start(serve_control, sim, 0)

        async def call(method: str, path: str, body: object = None) -> tuple[int, object]:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            raw = b"" if body is None else json.dumps(body).encode()
            await stream.send_all(
                f"{method} {path} HTTP/1.1\r\nContent-Length: {len(raw)}\r\n\r\n".encode() + raw
            )
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
            head, _, payload = response.partition(b"\r\n\r\n")
            return int(head.split()[1]), json.loads(payload)

        keys = DeviceKeys()
        client = await WireClient.connect(
            nursery, f"ws://127.0.0.1:{sim.port}/ws/chat", keys, registration_payload(keys)
        )
        await client.receive()
        status, pairings = await call("GET", "/pairings")
        assert status == 200 and len(pairings) == 1
        status, _ = await call(
            "POST", "/scan", {"qr": qr_string(pairings[0]["refs"][0], keys), "phone": PHONE}
        )
        assert status == 200
        assert (await call("POST", "/refuse", {"on": True}))[1] == {"ok": True}
        assert sim._refusing
        assert (await call("POST", "/scan", {"qr": "nope", "phone": PHONE}))[0] == 400
        assert (await call("GET", "/nowhere"))[0] == 404
        assert (await call("GET", f"/phones/{PHONE}"))[1]["devices"] == [7]
        assert (await call("GET", "/stats"))[1]["accepted_connections"] == 1
