"""The listening socket's options reach accepted connections; accept failures log one line, not a storm."""

from __future__ import annotations

import errno
import logging
import socket

from waservice.tcp import USER_TIMEOUT_MS, AcceptErrorFilter, tune_listener


def test_accepted_connections_inherit_keepalive_and_user_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        tune_listener(listener)
        listener.listen()
        with socket.create_connection(listener.getsockname()) as _client:
            conn, _ = listener.accept()
            with conn:
                assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT_MS


def _accept_failure(code: int = errno.EMFILE) -> logging.LogRecord:
    try:
        raise OSError(code, "Too many open files")
    except OSError:
        import sys

        exc_info = sys.exc_info()
    return logging.LogRecord(
        "trio.serve_listeners", logging.ERROR, __file__, 1, "accept returned %s", ("EMFILE",), exc_info
    )


def test_accept_failures_are_one_line_then_rate_limited():
    now = [0.0]
    accept_filter = AcceptErrorFilter(interval=60, clock=lambda: now[0])
    first = _accept_failure()
    assert accept_filter.filter(first)
    assert first.exc_info is None and "EMFILE" in first.getMessage()
    assert "open file limit" in first.getMessage()
    for _ in range(400):  # 40 s of retries every 0.1 s
        now[0] += 0.1
        assert not accept_filter.filter(_accept_failure())
    now[0] += 21
    again = _accept_failure()
    assert accept_filter.filter(again) and "400 more failures" in again.getMessage()


def test_other_records_pass_untouched():
    accept_filter = AcceptErrorFilter()
    record = _accept_failure(errno.ECONNABORTED)
    assert accept_filter.filter(record) and record.exc_info is not None
