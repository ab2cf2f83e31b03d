from pathlib import Path

import pytest

from waservice.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_seeds():
    config = load_config(None, environ={})
    assert (config.server.host, config.server.port, config.server.api_key) == ("127.0.0.1", 3002, "")
    r = config.reconnect
    assert (r.initial_delay, r.factor, r.max_delay, r.max_attempts) == (3, 2, 30, 5)
    assert config.sessions.engine == "neonize"


def test_committed_config_toml_equals_the_defaults():
    assert load_config(ROOT / "config.toml", environ={}) == load_config(None, environ={})


def test_environment_overrides():
    config = load_config(
        None,
        environ={
            "PORT": "4000",
            "WASERVICE_HOST": "0.0.0.0",
            "WASERVICE_API_KEY": "s3cr3t-key",
            "WASERVICE_DATA_DIR": "/x",
            "WASERVICE_LOG_LEVEL": "debug",
            "WASERVICE_ENGINE": "fake",
        },
    )
    assert config.server.port == 4000 and config.server.host == "0.0.0.0"
    assert config.data_dir == Path("/x") and config.logging.level == "debug"
    assert "s3cr3t-key" not in repr(config)  # the key never reaches a log line


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[server]\nprot = 1", ["prot", "server"]),
        ("[server]\nport = 'x'", ["server.port"]),
        ("[server]\nport = true", ["server.port"]),
        ("[reconnect]\nmax_attempts = 0", ["max_attempts"]),
        ("[sessions]\nengine = 'foo'", ["sessions.engine"]),
        ("[nope]\na = 1", ["nope"]),
        ("not toml [", ["not valid TOML"]),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, words):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    for word in words:
        assert word in str(info.value)


def test_public_host_needs_an_api_key():
    with pytest.raises(ConfigError, match="without an API key"):
        load_config(None, environ={"WASERVICE_HOST": "0.0.0.0"})
    assert load_config(None, environ={"WASERVICE_HOST": "::1"}).server.host == "::1"


def test_bad_env_value_names_the_key():
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(None, environ={"PORT": "abc"})


def test_sessions_max(tmp_path):
    assert load_config(None, environ={}).sessions.max == 10_000
    config = tmp_path / "c.toml"
    config.write_text("[sessions]\nmax = 0\n")
    with pytest.raises(ConfigError, match="max"):
        load_config(config, environ={})
