"""The per-session send queue: order, pacing to the exact (virtual) second, typing, capacity,
callers that give up before and after the hand-over. trio's MockClock with autojump."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs
import pytest
import trio
import trio.testing

from waservice.engine import SentMessage
from waservice.engine.content import Content, Location, Text
from waservice.errors import SendFailed, SendQueueFull, SessionNotConnected
from waservice.sessions.sendqueue import (
    TYPING_MAX,
    FinishingRequests,
    Pacer,
    Pacing,
    SendQueue,
)


@attrs.define
class Engine:
    """Records what the queue does, at which (virtual) time; a send takes `send_time` seconds."""

    send_time: float = 0.0
    fail: set[str] = attrs.Factory(set)
    offline: set[str] = attrs.Factory(set)  # these find the session disconnected at their turn
    log: list[tuple[float, str, str]] = attrs.Factory(list)  # (time, what, text)
    sends_started: trio.Event = attrs.Factory(trio.Event)

    async def deliver(self, chat: str, content: Content) -> SentMessage:
        text = content.text if isinstance(content, Text) else type(content).__name__
        if text in self.offline:
            raise SessionNotConnected("session 's1' is not connected (state: connecting)")
        self.log.append((trio.current_time(), "send", text))
        self.sends_started.set()
        await trio.sleep(self.send_time)
        if text in self.fail:
            raise SendFailed(f"message not sent: {text}")
        self.log.append((trio.current_time(), "acked", text))
        return SentMessage(id=f"id-{text}", timestamp=0, to=chat)

    async def show_typing(self, chat: str, state: str) -> None:
        self.log.append((trio.current_time(), state, chat))

    def sends(self) -> list[tuple[float, str]]:
        return [(t, text) for t, what, text in self.log if what == "send"]


NO_PACING = Pacing()


def draws(*values: float) -> Iterator[float]:
    yield from values


async def start(
    nursery: trio.Nursery, engine: Engine, pacing: Pacing = NO_PACING, capacity: int = 1000, **kw
):
    queue = SendQueue("s1", pacing, capacity, **kw)
    nursery.start_soon(queue.run, engine.deliver, engine.show_typing)
    await trio.testing.wait_all_tasks_blocked()
    return queue


def text(value: str) -> Text:
    return Text(text=value)


def spawn(nursery: trio.Nursery, queue: SendQueue, value: str) -> None:
    """A caller in the background (its outcome, maybe a failure when the test ends, ignored)."""

    async def caller() -> None:
        with contextlib.suppress(SessionNotConnected, SendFailed):
            await queue.submit("c@s.whatsapp.net", text(value))

    nursery.start_soon(caller)


async def submit_all(queue: SendQueue, texts: list[str]) -> dict[str, object]:
    """Submit in this order, each caller in its own task; their outcomes by text."""
    outcomes: dict[str, object] = {}

    async def one(value: str) -> None:
        try:
            outcomes[value] = await queue.submit("c@s.whatsapp.net", text(value))
        except Exception as exc:
            outcomes[value] = exc

    async with trio.open_nursery() as nursery:
        for value in texts:
            nursery.start_soon(one, value)
            await trio.testing.wait_all_tasks_blocked()  # the order of submission is the order
    return outcomes


def test_pacer_gap_is_interval_plus_jitter_from_the_end_of_a_send():
    values = draws(0.5, 0.0)
    pacer = Pacer(Pacing(min_interval=2.0, jitter=3.0), lambda: next(values))
    assert pacer.ready_at == float("-inf")
    pacer.sent(10.0)
    assert pacer.ready_at == 13.5
    pacer.sent(20.0)
    assert pacer.ready_at == 22.0


def test_typing_time_is_per_character_and_capped():
    pacing = Pacing(typing=True)
    assert pacing.typing_time(text("hello")) == pytest.approx(0.25)
    assert pacing.typing_time(text("x" * 10_000)) == TYPING_MAX
    assert pacing.typing_time(Location(lat=1, lng=2)) == 0
    assert Pacing().typing_time(text("hello")) == 0


async def test_in_order_one_at_a_time(nursery, autojump_clock):
    engine = Engine(send_time=1.0)
    queue = await start(nursery, engine)
    outcomes = await submit_all(queue, ["a", "b", "c", "d"])
    assert engine.sends() == [(0.0, "a"), (1.0, "b"), (2.0, "c"), (3.0, "d")]
    assert [o.id for o in outcomes.values()] == ["id-a", "id-b", "id-c", "id-d"]  # type: ignore[attr-defined]
    assert queue.depth == 0


async def test_pacing_off_adds_no_time(nursery, autojump_clock):
    engine = Engine()
    queue = await start(nursery, engine)
    await submit_all(queue, [str(i) for i in range(50)])
    assert {t for t, _ in engine.sends()} == {0.0}


async def test_min_interval_and_jitter_are_exact(nursery, autojump_clock):
    engine = Engine(send_time=1.0)
    values = draws(0.5, 0.0, 1.0)
    queue = await start(nursery, engine, Pacing(min_interval=2.0, jitter=3.0), draw=lambda: next(values))
    await submit_all(queue, ["a", "b", "c"])
    # a: 0-1, then 2 + 1.5 s; b: 4.5-5.5, then 2 + 0 s; c: 7.5
    assert engine.sends() == [(0.0, "a"), (4.5, "b"), (7.5, "c")]


async def test_an_idle_queue_sends_at_once_when_the_gap_has_passed(nursery, autojump_clock):
    engine = Engine()
    queue = await start(nursery, engine, Pacing(min_interval=5.0))
    await submit_all(queue, ["a"])
    await trio.sleep(7)
    await submit_all(queue, ["b"])
    await trio.sleep(1)
    await submit_all(queue, ["c"])
    assert engine.sends() == [(0.0, "a"), (7.0, "b"), (12.0, "c")]


async def test_a_failed_send_is_paced_too_and_the_next_goes_on(nursery, autojump_clock):
    engine = Engine(send_time=1.0, fail={"a"})
    queue = await start(nursery, engine, Pacing(min_interval=2.0))
    outcomes = await submit_all(queue, ["a", "b"])
    assert isinstance(outcomes["a"], SendFailed) and outcomes["b"].id == "id-b"  # type: ignore[attr-defined]
    assert engine.sends() == [(0.0, "a"), (3.0, "b")]


async def test_a_message_that_finds_the_session_disconnected_fails_at_once(nursery, autojump_clock):
    engine = Engine(send_time=1.0, offline={"b", "c"})
    queue = await start(nursery, engine, Pacing(min_interval=2.0))
    outcomes = await submit_all(queue, ["a", "b", "c", "d"])
    assert isinstance(outcomes["b"], SessionNotConnected) and isinstance(outcomes["c"], SessionNotConnected)
    assert engine.sends() == [(0.0, "a"), (3.0, "d")]  # b and c reached nothing: no gap after them


async def test_typing_before_a_text_only(nursery, autojump_clock):
    engine = Engine()
    queue = await start(nursery, engine, Pacing(typing=True))
    await queue.submit("c@s.whatsapp.net", text("x" * 20))
    await queue.submit("c@s.whatsapp.net", Location(lat=1.0, lng=2.0))
    await queue.submit("c@s.whatsapp.net", text("y" * 1000))
    assert engine.log == [
        (0.0, "composing", "c@s.whatsapp.net"),
        (1.0, "send", "x" * 20),
        (1.0, "acked", "x" * 20),
        (1.0, "send", "Location"),
        (1.0, "acked", "Location"),
        (1.0, "composing", "c@s.whatsapp.net"),
        (1.0 + TYPING_MAX, "send", "y" * 1000),
        (1.0 + TYPING_MAX, "acked", "y" * 1000),
    ]


async def test_a_full_queue_refuses_with_retry_after(nursery, autojump_clock):
    engine = Engine(send_time=100.0)
    queue = await start(nursery, engine, Pacing(min_interval=4.0, jitter=2.0), capacity=2)
    spawn(nursery, queue, "a")
    spawn(nursery, queue, "b")
    await trio.testing.wait_all_tasks_blocked()
    assert queue.depth == 2
    with pytest.raises(SendQueueFull) as refused:
        await queue.submit("c@s.whatsapp.net", text("c"))
    assert refused.value.retry_after == 5.0 and "queue_size is 2" in refused.value.message


async def test_a_caller_that_gives_up_while_queued_sends_nothing(nursery, autojump_clock):
    engine = Engine(send_time=10.0)
    queue = await start(nursery, engine)
    spawn(nursery, queue, "a")
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(3):
        await queue.submit("c@s.whatsapp.net", text("b"))
    assert queue.depth == 1
    await submit_all(queue, ["c"])
    assert engine.sends() == [(0.0, "a"), (10.0, "c")]


async def test_a_caller_that_gives_up_while_typing_sends_nothing(nursery, autojump_clock):
    engine = Engine()
    queue = await start(nursery, engine, Pacing(typing=True))
    with trio.move_on_after(0.1):
        await queue.submit("c@s.whatsapp.net", text("x" * 20))
    await trio.testing.wait_all_tasks_blocked()
    assert queue.depth == 0
    assert engine.log == [(0.0, "composing", "c@s.whatsapp.net"), (0.1, "paused", "c@s.whatsapp.net")]


async def test_once_handed_over_a_message_completes_and_its_request_finishes(nursery, autojump_clock):
    engine = Engine(send_time=2.0)
    queue = await start(nursery, engine)
    finished: list[str] = []
    with trio.move_on_after(1) as gave_up:
        with FinishingRequests().finish_once_handed_over() as handover:
            sent = await queue.submit("c@s.whatsapp.net", text("a"))
            finished.append(sent.id)  # the request goes on to record its outcome
            await trio.sleep(0)  # shielded still: the checkpoint does not raise
            finished.append("after")
        await trio.sleep(0)  # outside the shield the cancellation is raised again
        finished.append("never")
    assert handover.happened and gave_up.cancelled_caught
    assert finished == ["id-a", "after"] and trio.current_time() == 2.0
    assert engine.log[-1] == (2.0, "acked", "a")


async def test_without_the_wrapper_a_caller_leaves_and_the_send_completes(nursery, autojump_clock):
    engine = Engine(send_time=2.0)
    queue = await start(nursery, engine)
    with trio.move_on_after(1) as gave_up:
        await queue.submit("c@s.whatsapp.net", text("a"))
    assert gave_up.cancelled_caught and trio.current_time() == 1.0
    await trio.sleep(5)
    assert engine.log[-1] == (2.0, "acked", "a") and queue.depth == 0


async def test_released_requests_can_be_cancelled_again(nursery, autojump_clock):
    engine = Engine(send_time=10.0)
    queue = await start(nursery, engine)
    finishing = FinishingRequests()

    async def stop_at(when: float) -> None:  # the service stops: its requests must not hold it up
        await trio.sleep_until(when)
        finishing.release()

    nursery.start_soon(stop_at, 4.0)
    with trio.move_on_after(1) as gave_up:  # the client leaves at 1 s
        with finishing.finish_once_handed_over() as handover:
            await queue.submit("c@s.whatsapp.net", text("a"))
    assert handover.happened and gave_up.cancelled_caught
    assert trio.current_time() == 4.0  # not at the send's end (10 s)


async def test_nothing_handed_over_leaves_the_request_cancellable(nursery, autojump_clock):
    engine = Engine(send_time=10.0)
    queue = await start(nursery, engine)
    spawn(nursery, queue, "a")
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(1):
        with FinishingRequests().finish_once_handed_over() as handover:
            await queue.submit("c@s.whatsapp.net", text("b"))
    assert not handover.happened and trio.current_time() == 1.0


async def test_closing_fails_what_is_queued(nursery, autojump_clock):
    engine = Engine(send_time=10.0)
    queue = SendQueue("s1", Pacing(), 10)
    runner = trio.CancelScope()

    async def run() -> None:
        with runner:
            await queue.run(engine.deliver, engine.show_typing)

    nursery.start_soon(run)
    outcomes: dict[str, object] = {}
    async with trio.open_nursery() as callers:

        async def one(value: str) -> None:
            try:
                outcomes[value] = await queue.submit("c@s.whatsapp.net", text(value))
            except Exception as exc:
                outcomes[value] = exc

        for value in "ab":
            callers.start_soon(one, value)
            await trio.testing.wait_all_tasks_blocked()
        runner.cancel()
    assert "outcome is unknown" in str(outcomes["a"]) and isinstance(outcomes["b"], SessionNotConnected)
    with pytest.raises(SessionNotConnected, match="was closed"):
        await queue.submit("c@s.whatsapp.net", text("c"))
