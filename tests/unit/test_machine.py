"""The pure state machine: every transition, no clock."""

from waservice.sessions.machine import (
    ForgetCredentials,
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
    assert m.retry_due() == []
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
    assert m.retry_due() == []
    assert m.state is State.DISCONNECTED
