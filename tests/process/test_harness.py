"""The service harness itself: what a developer's shell has set must not change a test's service."""

from __future__ import annotations

import pytest

from .service import ServiceProcess


def test_the_shells_service_settings_do_not_leak_into_the_service(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WASERVICE_API_KEY", "from-the-shell")
    monkeypatch.setenv("WASERVICE_LOG_FORMAT", "json")
    with ServiceProcess(tmp_path / "data", env={"WASERVICE_ENGINE": "fake"}) as service:
        status, _ = service.api("GET", "/sessions")
    assert status == 200  # no API key asked for: the shell's key stayed out
    assert not service.log().lstrip().startswith("{")  # text logs, the default
