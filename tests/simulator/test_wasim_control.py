"""The simulator's HTTP control API for contacts and load, driving a real neonize device."""

from __future__ import annotations

import json

import pytest
import trio

from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import PHONE, pair
from tests.wasim import Simulator
from tests.wasim.control import serve_control

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "15557770000"


async def control_call(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    raw = b"" if body is None else json.dumps(body).encode()
    await stream.send_all(f"{method} {path} HTTP/1.1\r\nContent-Length: {len(raw)}\r\n\r\n".encode() + raw)
    response = b""
    while chunk := await stream.receive_some(65536):
        response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def test_contact_traffic_and_burst_over_http(
    sim: Simulator, start_client: StartClient, nursery: trio.Nursery
) -> None:
    port = await nursery.start(serve_control, sim, 0)
    client = await start_client("a")
    await pair(sim, client)

    status, sent = await control_call(
        port, "POST", "/contact-message", {"to": PHONE, "from": CONTACT, "text": "hi"}
    )
    assert status == 200, sent
    got = await client.wait("message", where=lambda e: e["data"]["Info"]["ID"] == sent["id"])
    assert got["data"]["Message"]["conversation"] == "hi"

    body = {"to": PHONE, "from": CONTACT, "kind": "location", "latitude": 1.5, "longitude": 2.5}
    status, located = await control_call(port, "POST", "/contact-message", body)
    assert status == 200, located
    place = await client.wait("message", where=lambda e: e["data"]["Info"]["ID"] == located["id"])
    assert place["data"]["Message"]["locationMessage"]["degreesLatitude"] == 1.5
    assert (await control_call(port, "POST", "/contact-message", {**body, "kind": "nope"}))[0] == 400

    assert (await control_call(port, "POST", "/chatstate", {"to": PHONE, "from": CONTACT}))[1] == {"hit": 1}
    await client.wait("chat_presence")

    status, burst = await control_call(port, "POST", "/burst", {"to": [PHONE], "per_phone": 40, "rate": 400})
    assert status == 200 and burst["total"] == 40, burst

    async def summary() -> dict:
        return (await control_call(port, "GET", f"/delivered?phone={PHONE}&summary=1"))[1]

    with trio.fail_after(30):
        while True:
            seen = len(sim.history)  # before asking: a receipt during the request still wakes us
            if (await summary())["acked"] >= 42:
                break
            await sim.wait_event("device_receipt", after=seen)
    assert await summary() == {"count": 42, "sent": 42, "acked": 42}
    bursts = (await control_call(port, "GET", "/bursts"))[1]
    assert bursts[0]["done"] and bursts[0]["sent"] == 40 and not bursts[0]["errors"]
    items = (await control_call(port, "GET", f"/delivered?phone={PHONE}"))[1]["items"]
    assert all(item["acked_at"] >= item["sent_at"] for item in items)
    texts = {e["data"]["Message"].get("conversation") for e in client.named("message")}
    assert {f"burst 1 {n}" for n in range(40)} <= texts
