"""The pure state machine: every transition, no clock."""

import pytest

from waservice.sessions.machine import (
    STALE,
    TRANSITIONS,
    DisableAutoconnect,
    ForgetCredentials,
    IllegalTransition,
    Input,
    ReconnectPolicy,
    RetryAfter,
    SessionMachine,
    StartClient,
    State,
    StopClient,
)


def test_policy_delays_match_the_seed():
    policy = ReconnectPolicy()
    assert [policy.delay(n) for n in range(1, 7)] == [3, 6, 12, 24, 30, 30]


def test_connect_is_idempotent():
    m = SessionMachine()
    assert m.connect() == [StartClient()]
    assert m.state is State.CONNECTING
    assert m.connect() == []
    m.qr("code")
    assert m.connect() == []
    assert m.state is State.QR_READY


def test_qr_then_connected():
    m = SessionMachine()
    m.connect()
    m.qr("a")
    assert (m.state, m.qr_code) == (State.QR_READY, "a")
    m.qr("b")
    assert m.qr_code == "b"
    m.connected("15550001111")
    assert (m.state, m.qr_code, m.phone_number) == (State.CONNECTED, None, "15550001111")


def test_backoff_then_failed_then_reset():
    m = SessionMachine()
    m.connect()
    m.connected("1")
    delays = []
    for _ in range(5):
        effects = m.connection_lost("boom")
        assert m.state is State.ERROR and StopClient() in effects
        delays += [e.delay for e in effects if isinstance(e, RetryAfter)]
        assert m.retry_due() == [StartClient()]
    assert delays == [3, 6, 12, 24, 30]
    assert m.connection_lost("boom") == [StopClient()]
    assert m.state is State.FAILED and m.reconnect_attempts == 5
    assert "gave up" in m.last_error
    with pytest.raises(IllegalTransition):  # the supervisor cancels the timer: a bug if it fires
        m.retry_due()
    assert m.reset_reconnect() == [StartClient()]
    assert m.state is State.CONNECTING and m.reconnect_attempts == 0


def test_success_resets_the_counter():
    m = SessionMachine()
    m.connect()
    m.connection_lost("x")
    m.retry_due()
    m.connection_lost("x")
    assert m.reconnect_attempts == 2
    m.retry_due()
    m.connected("1")
    assert m.reconnect_attempts == 0 and m.last_error is None


def test_logged_out_forgets_and_does_not_retry():
    m = SessionMachine()
    m.connect()
    m.connected("1")
    assert m.logged_out("device removed") == [StopClient(), ForgetCredentials()]
    assert (m.state, m.phone_number, m.last_error) == (State.DISCONNECTED, None, "device removed")


def test_replaced_stays_down_and_says_so():
    m = SessionMachine()
    m.connect()
    m.connected("1")
    effects = m.replaced("connection replaced")
    assert m.state is State.DISCONNECTED and effects[0] == StopClient()
    assert isinstance(effects[1], DisableAutoconnect) and "connection replaced" in effects[1].reason
    assert "until POST /connect" in m.last_error


def test_stopped_does_not_retry():
    m = SessionMachine()
    m.connect()
    m.connected("1")
    assert m.stopped("replaced") == [StopClient()]
    assert (m.state, m.last_error) == (State.DISCONNECTED, "replaced")


def test_stale_events_are_ignored():
    m = SessionMachine()
    assert m.connection_lost("late") == []
    assert m.qr("late") == []
    assert m.connected("1") == []
    assert m.state is State.DISCONNECTED
    m.connect()
    m.disconnect()
    assert m.connection_lost("late") == []


def test_disconnect_cancels_waiting_retry():
    m = SessionMachine()
    m.connect()
    m.connection_lost("x")
    assert m.disconnect() == [StopClient()]
    with pytest.raises(IllegalTransition):
        m.retry_due()
    assert m.state is State.DISCONNECTED


def test_every_state_and_input_is_either_a_move_stale_or_illegal():
    moves, stale = set(TRANSITIONS), set(STALE)
    assert not moves & stale
    illegal = {(s, i) for s in State for i in Input} - moves - stale
    # What no correct supervisor or engine can produce, and nothing else.
    assert illegal == {(State.CONNECTED, Input.QR)} | {
        (s, Input.RETRY_DUE) for s in State if s is not State.ERROR
    }


def test_illegal_event_changes_nothing():
    m = SessionMachine()
    m.connect()
    m.connected("1")
    before = (m.state, m.qr_code, m.version)
    with pytest.raises(IllegalTransition, match="qr is not allowed in state connected"):
        m.qr("code")
    assert (m.state, m.qr_code, m.version) == before


def test_stale_events_change_nothing_in_every_idle_state():
    for state in (State.DISCONNECTED, State.ERROR, State.FAILED):
        m = SessionMachine(state=state, last_error="why")
        results = [
            m.qr("x"),
            m.paired("1"),
            m.connected("1"),
            m.connection_lost("x"),
            m.logged_out("x"),
            m.stopped("x"),
            m.replaced("x"),
        ]
        assert results == [[]] * 7
        assert (m.state, m.last_error, m.version) == (state, "why", 0)


def test_connect_from_error_cancels_backoff_and_resets():
    m = SessionMachine()
    m.connect()
    m.connection_lost("x")
    assert m.connect() == [StartClient()]
    assert (m.state, m.reconnect_attempts) == (State.CONNECTING, 0)
