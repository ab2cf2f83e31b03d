"""`[events] history_messages`: off by default, a real boolean, and handed to the workers at spawn."""

from __future__ import annotations

from pathlib import Path

import pytest

from waservice.config import ConfigError, EventsConfig, load_config
from waservice.engine.launch import worker_environment
from waservice.engine.worker import HISTORY_MESSAGES_ENV


def test_history_messages_is_off_by_default_and_reaches_the_workers(tmp_path: Path) -> None:
    assert load_config(None, environ={}).events.history_messages is False
    assert worker_environment(None, None)[HISTORY_MESSAGES_ENV] == "0"
    path = tmp_path / "config.toml"
    path.write_text("[events]\nhistory_messages = true\n")
    events = load_config(path, environ={}).events
    assert events == EventsConfig(history_messages=True)
    assert worker_environment(None, events)[HISTORY_MESSAGES_ENV] == "1"


@pytest.mark.parametrize("value", ['"yes"', "1", '"nope"'])
def test_history_messages_must_be_a_boolean(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[events]\nhistory_messages = {value}\n")
    with pytest.raises(ConfigError, match="history_messages"):
        load_config(path, environ={})
