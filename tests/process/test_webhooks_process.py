"""Webhooks from the real service process (fake engine): signed deliveries of state changes, from
config.toml and from the API, and none lost or renamed across a SIGKILL."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio

from tests.webhook_receiver import Answer, WebhookReceiver

from .service import ServiceProcess

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def call(fn, *args):
    return await trio.to_thread.run_sync(partial(fn, *args))


async def test_state_changes_reach_a_configured_webhook_signed(tmp_path: Path, nursery: trio.Nursery):
    receiver = await nursery.start(WebhookReceiver(secret=SECRET).run)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[webhooks]]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n'
        'events = ["session.status", "session.qr"]\nsession_id = "w1"\n'
    )
    service = ServiceProcess(tmp_path / "data", env={"WASERVICE_ENGINE": "fake"}, config=config)
    await call(service.start)
    try:
        (hook,) = (await call(service.ok, "GET", "/webhooks"))["webhooks"]
        assert hook["source"] == "config" and hook["session_id"] == "w1"
        await call(service.ok, "POST", "/connect", {"session_id": "other"})
        await call(service.ok, "POST", "/connect", {"session_id": "w1"})

        def saw_qr_ready(got: list) -> bool:
            types = {(r.event["type"], r.event["data"].get("state")) for r in got}
            return ("session.qr", None) in types and ("session.status", "qr_ready") in types

        await receiver.wait_for(saw_qr_ready)
        events = [r.event for r in receiver.received]
        assert {e["session_id"] for e in events} == {"w1"}
        statuses = [e["data"]["state"] for e in events if e["type"] == "session.status"]
        assert statuses[:2] == ["connecting", "qr_ready"]
        assert receiver.bad_signatures == 0
        assert all(r.webhook_id == str(r.event["id"]) for r in receiver.received)
    finally:
        assert await call(service.stop) == 0, service.log_tail()


async def test_sigkill_with_50_undelivered_loses_none_and_renames_none(tmp_path: Path, nursery: trio.Nursery):
    receiver = await nursery.start(partial(WebhookReceiver(default=Answer(503)).run))
    service = ServiceProcess(tmp_path / "data", env={"WASERVICE_ENGINE": "fake"})
    await call(service.start)
    created = await call(service.api, "POST", "/webhooks", {"url": receiver.url, "events": ["*"]})
    assert created[0] == 201, created
    hook, receiver.secret = created[1]["webhook"]["id"], created[1]["secret"]
    await call(service.ok, "POST", "/connect", {"session_id": "k"})
    await call(service.wait_state, "k", "qr_ready")
    for _ in range(50):
        await call(service.ok, "POST", "/_fake/rotate-qr", {"session_id": "k"})
    open_ids = await _open_deliveries(service, hook, at_least=52)
    await receiver.wait_for(lambda got: len(got) >= 1)  # the head has been refused at least once
    service.proc.kill()
    await call(service.proc.wait)

    receiver.default = Answer(200)
    await call(service.start)
    try:
        await receiver.wait_for(lambda got: set(open_ids) <= set(receiver.ok_ids()), timeout=120)
        delivered = list(dict.fromkeys(i for i in receiver.ok_ids() if i in set(open_ids)))
        assert delivered == sorted(open_ids)  # all of them, each in log order (one session)
        assert all(r.webhook_id == str(r.event["id"]) for r in receiver.received)
        assert receiver.bad_signatures == 0
    finally:
        assert await call(service.stop) == 0, service.log_tail()


async def _open_deliveries(service: ServiceProcess, hook: str, at_least: int) -> list[int]:
    with trio.fail_after(60):
        while True:
            page = await call(service.ok, "GET", f"/webhooks/{hook}/deliveries?limit=500")
            if page["total"] >= at_least:
                assert all(d["status"] in ("pending", "failed") for d in page["deliveries"]), page
                return [d["event_id"] for d in page["deliveries"]]
            await trio.sleep(0.05)
