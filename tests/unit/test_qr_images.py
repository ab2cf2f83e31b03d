"""QR images are drawn off the event loop, once per code, and stay cached while the code lives."""

from __future__ import annotations

import threading

import trio

from waservice.api import qr
from waservice.api.qr import QrImages


async def _qr_ready(client, session_id: str) -> None:
    assert (await client.post("/connect", json={"session_id": session_id})).status_code == 200
    with trio.fail_after(5):
        while (await (await client.get(f"/status?session_id={session_id}")).get_json())[
            "state"
        ] != "qr_ready":
            await trio.sleep(0.005)


async def test_drawing_is_off_the_loop_and_shared(client, monkeypatch):
    await _qr_ready(client, "q1")
    release = threading.Event()
    calls: list[str] = []
    real_render = qr.render_data_url

    def slow_render(code: str) -> str:
        calls.append(threading.current_thread().name)
        release.wait(10)  # a drawing that takes as long as the test needs
        return real_render(code)

    monkeypatch.setattr(qr, "render_data_url", slow_render)
    bodies: list[dict] = []

    async def fetch() -> None:
        response = await client.get("/qr?session_id=q1")
        bodies.append(await response.get_json())

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(fetch)
        with trio.fail_after(5):
            while not calls:
                await trio.sleep(0.005)
        # The loop still answers while the code is being drawn.
        with trio.fail_after(5):
            assert (await client.get("/health")).status_code == 200
        release.set()
    assert len(calls) == 1 and calls[0] != threading.main_thread().name
    assert len({b["qr"] for b in bodies}) == 1 and len(bodies) == 5
    assert bodies[0]["qr"].startswith("data:image/png;base64,")


async def test_a_code_is_drawn_once_and_replaced_when_it_rotates(client, engine, app):
    await _qr_ready(client, "q2")
    for _ in range(3):
        assert (await client.get("/qr?session_id=q2")).status_code == 200
    images: QrImages = app.extensions["waservice.qr_images"]
    assert images.drawn == 1
    engine.clients["q2"].rotate_qr()
    with trio.fail_after(5):
        while (body := await (await client.get("/qr?session_id=q2")).get_json())["code"].endswith(":1"):
            await trio.sleep(0.005)
    assert body["code"] == "fake-qr:q2:2" and images.drawn == 2


async def test_cache_holds_every_live_code_up_to_its_capacity():
    images = QrImages(capacity=3)
    for i in range(3):
        await images.data_url(f"s{i}", f"code-{i}")
    for i in range(3):  # all still cached
        await images.data_url(f"s{i}", f"code-{i}")
    assert images.drawn == 3
    await images.data_url("s3", "code-3")  # over capacity: the least recently used goes
    await images.data_url("s0", "code-0")
    assert images.drawn == 5


async def test_a_cancelled_drawing_does_not_strand_waiters():
    images = QrImages()
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def cancelled_requester() -> None:
            with first:
                await images.data_url("s", "code")

        nursery.start_soon(cancelled_requester)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()
        url = await images.data_url("s", "code")
    assert url.startswith("data:image/png;base64,")
