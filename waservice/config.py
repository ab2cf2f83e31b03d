"""Configuration: `config.toml` (optional) + environment overrides, loaded into attrs classes."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn
from cattrs.v import format_exception

from .ids import validate_session_id
from .webhooks.rules import check_events, check_url
from .webhooks.signing import secret_key

__all__ = [
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "EngineConfig",
    "EventsConfig",
    "MediaConfig",
    "MessagesConfig",
    "MetricsConfig",
    "SendingConfig",
    "StreamConfig",
    "load_config",
]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


def _positive(_: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value}")


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = attrs.field(
        default=3002, validator=attrs.validators.and_(attrs.validators.ge(1), attrs.validators.le(65535))
    )
    api_key: str = attrs.field(default="", repr=False)  # never printed
    shutdown_grace: float = attrs.field(default=10.0, validator=_positive)
    # Host names served besides loopback ones when no API key is set (DNS-rebinding guard).
    allowed_hosts: tuple[str, ...] = ()
    # Idle keep-alive connections close after this; it also bounds the wait for a request's headers.
    keep_alive_timeout: float = attrs.field(default=5.0, validator=_positive)
    # Seconds to receive a request body; a slower upload gets 408 and its connection is closed.
    body_timeout: float = attrs.field(default=30.0, validator=_positive)
    # New sessions per minute per client address (POST /connect for an id that does not exist yet),
    # with bursts up to create_burst; 0 turns the limit off.
    create_rate: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    create_burst: int = attrs.field(default=20, validator=attrs.validators.ge(1))


@attrs.frozen
class SessionsConfig:
    data_dir: str = "sessions"
    engine: Literal["neonize", "fake"] = "neonize"
    max: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))


def _cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


@attrs.frozen
class EngineConfig:
    """The real engine's worker processes (each one Go runtime hosting many sessions)."""

    workers: int = attrs.field(factory=_cores, validator=attrs.validators.ge(1))
    # Recycling: a worker past any of these is replaced gracefully (its sessions reconnect).
    # Open files beyond 8 per connected client (whatsmeow leaks a database handle per connect).
    max_leaked_fds: int = attrs.field(default=500, validator=attrs.validators.ge(16))
    max_rss_mb: int = attrs.field(default=1024, validator=attrs.validators.ge(64))
    max_abandoned_clients: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    # Restart after a crash: at once the first time, then restart_delay doubling to restart_max_delay
    # while it keeps dying within a minute of starting.
    restart_delay: float = attrs.field(default=1.0, validator=_positive)
    restart_max_delay: float = attrs.field(default=30.0, validator=_positive)
    ping_interval: float = attrs.field(default=5.0, validator=_positive)
    ping_timeout: float = attrs.field(default=15.0, validator=_positive)


@attrs.frozen
class ReconnectConfig:
    initial_delay: float = attrs.field(default=3.0, validator=_positive)
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))


@attrs.frozen
class EventsConfig:
    """`[events]`: what happens to a session, reported as events."""

    # A history sync (the phone sending past messages to a new device) is reported as a count;
    # on, its messages too (thousands on a first pairing).
    history_messages: bool = False
    retention_days: float = attrs.field(default=7.0, validator=_positive)  # then pruned from the log


@attrs.frozen
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    engine_level: Literal["debug", "info", "warning", "error"] = "warning"


def _check(check):  # an attrs validator from a function that raises ValueError with its message
    return lambda _, __, value: check(value)


@attrs.frozen
class WebhookConfig:
    """A `[[webhooks]]` entry; its id derives from (url, session_id), so its delivery state survives
    restarts. Removed from the file, it is disabled at the next start (its open deliveries wait)."""

    url: str = attrs.field(validator=_check(check_url))
    secret: str = attrs.field(validator=_check(secret_key), repr=False)  # required here: whsec_...
    events: tuple[str, ...] = attrs.field(default=("*",), validator=_check(check_events))
    session_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_check(validate_session_id))
    )


@attrs.frozen
class WebhookDeliveryConfig:
    timeout: float = attrs.field(default=10.0, validator=_positive)  # seconds for a receiver to answer
    max_age_hours: float = attrs.field(default=24.0, validator=_positive)  # retries end; then dead
    concurrency: int = attrs.field(default=64, validator=attrs.validators.ge(1))  # requests in flight


def _distinct_webhooks(_: object, __: attrs.Attribute, hooks: tuple[WebhookConfig, ...]) -> None:
    seen = set()
    for hook in hooks:
        if (hook.url, hook.session_id) in seen:
            raise ValueError(f"two [[webhooks]] with url {hook.url!r} and the same session_id")
        seen.add((hook.url, hook.session_id))


@attrs.frozen
class MetricsConfig:
    # GET /metrics without the API key (for a scraper on a private network).
    public: bool = False
    # Session ids become labels (per-session gauges) only below this many sessions.
    per_session_max: int = attrs.field(default=100, validator=attrs.validators.ge(0))


@attrs.frozen
class StreamConfig:
    """`[stream]`: the live event stream, GET /events."""

    # A comment on a quiet stream this often, so that proxies and NATs keep the connection.
    heartbeat: float = attrs.field(default=15.0, validator=_positive)
    retry_ms: int = attrs.field(default=3000, validator=attrs.validators.ge(0))  # the `retry:` hint
    max_subscribers: int = attrs.field(default=1000, validator=attrs.validators.ge(1))  # then 503
    # A consumer one of whose writes took longer than this is cut (it resumes with Last-Event-ID).
    write_timeout: float = attrs.field(default=10.0, validator=_positive)
    replay_page: int = attrs.field(default=500, validator=attrs.validators.ge(1))  # events per log read
    # After an event, a live stream waits this long for the ones right behind it: one write for
    # many (with 100 readers, a write per event per reader was most of the API process's CPU).
    coalesce: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))


@attrs.frozen
class MessagesConfig:
    """`[messages]`: sending messages."""

    # /send asks WhatsApp whether a number is on it before sending (a request's check_number wins).
    check_number: bool = False


@attrs.frozen
class MediaConfig:
    """`[media]`: media sent (POST /send-media) and downloaded (GET /media/...)."""

    # Largest file accepted, however it arrives (upload, base64 or URL); enforced while streaming.
    max_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=attrs.validators.ge(1024))
    # Seconds a URL fetch may take in all (connect, redirects, body).
    fetch_timeout: float = attrs.field(default=30.0, validator=_positive)
    # Redirects followed (each hop checked like the first URL).
    max_redirects: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    # Fetch URLs on loopback, private, link-local or reserved addresses (off: a request could reach
    # services on the host's network through the API).
    allow_private_urls: bool = False
    # Downloaded media is cached; the oldest files go once the cache passes either bound.
    cache_max_bytes: int = attrs.field(default=1024 * 1024 * 1024, validator=attrs.validators.ge(0))
    cache_max_age_hours: float = attrs.field(default=24.0, validator=_positive)


@attrs.frozen
class SendingConfig:
    """`[sending]`: each session's send queue (sessions/sendqueue.py)."""

    # Seconds from the end of one send to the start of the next, plus a random extra up to jitter.
    min_interval: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    # Show "composing" before each text, 50 ms per character up to 5 s, then send it.
    typing: bool = False
    # Messages a session may have queued; one more answers 429 with Retry-After.
    queue_size: int = attrs.field(default=1000, validator=attrs.validators.ge(1))


def _database_url(url: str) -> None:
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("database.url must start with postgresql:// (or be empty for SQLite)")


@attrs.frozen
class DatabaseConfig:
    """`[database]`: PostgreSQL for several nodes (waservice/cluster/); empty: SQLite, one node."""

    # "postgresql://user:password@host:5432/db" (env WASERVICE_DATABASE_URL). Never logged.
    url: str = attrs.field(default="", repr=False, validator=_check(_database_url))
    # Connections this node's own queries use (whatsmeow opens its own: about 2 per session).
    pool_size: int = attrs.field(default=8, validator=attrs.validators.ge(2))


def _node_id(value: str) -> None:
    if value and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
        raise ValueError("cluster.node_id: 1-64 letters, digits, '_', '.', ':' or '-'")


@attrs.frozen
class ClusterConfig:
    """`[cluster]`: this node among others on one PostgreSQL (only with `database.url`)."""

    # Unique per node (env WASERVICE_NODE_ID); default: the host name and the port.
    node_id: str = attrs.field(default="", validator=_check(_node_id))
    # Where the other nodes reach this node's API (env WASERVICE_ADVERTISE_URL); default:
    # http://<server.host>:<server.port>.
    advertise_url: str = ""
    # A node owns its sessions while its lease lasts; it renews it every lease_ttl / 4 seconds and
    # stops its own WhatsApp connections when it could not for 3/4 of lease_ttl (a partition),
    # before another node may take them over.
    lease_ttl: float = attrs.field(default=20.0, validator=attrs.validators.ge(1.0))
    # Seconds a request forwarded to a session's owner may take (a send waits for its ack).
    forward_timeout: float = attrs.field(default=90.0, validator=_positive)


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    sessions: SessionsConfig = SessionsConfig()
    engine: EngineConfig = attrs.field(factory=EngineConfig)
    reconnect: ReconnectConfig = ReconnectConfig()
    logging: LoggingConfig = LoggingConfig()
    events: EventsConfig = EventsConfig()
    webhooks: tuple[WebhookConfig, ...] = attrs.field(default=(), validator=_distinct_webhooks)
    webhooks_delivery: WebhookDeliveryConfig = WebhookDeliveryConfig()
    metrics: MetricsConfig = MetricsConfig()
    stream: StreamConfig = StreamConfig()
    messages: MessagesConfig = MessagesConfig()
    media: MediaConfig = MediaConfig()
    sending: SendingConfig = SendingConfig()
    database: DatabaseConfig = DatabaseConfig()
    cluster: ClusterConfig = ClusterConfig()

    @property
    def data_dir(self) -> Path:
        return Path(self.sessions.data_dir)


# Environment variable -> (section, key). Values are parsed by cattrs like TOML strings.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "PORT": ("server", "port"),
    "WASERVICE_HOST": ("server", "host"),
    "WASERVICE_API_KEY": ("server", "api_key"),
    "WASERVICE_DATA_DIR": ("sessions", "data_dir"),
    "WASERVICE_ENGINE": ("sessions", "engine"),
    "WASERVICE_WORKERS": ("engine", "workers"),
    "WASERVICE_LOG_LEVEL": ("logging", "level"),
    "WASERVICE_LOG_FORMAT": ("logging", "format"),
    "WASERVICE_METRICS_PUBLIC": ("metrics", "public"),
    "WASERVICE_DATABASE_URL": ("database", "url"),
    "WASERVICE_NODE_ID": ("cluster", "node_id"),
    "WASERVICE_ADVERTISE_URL": ("cluster", "advertise_url"),
}


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    # Env values arrive as strings; TOML values must already have the right type.
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _strict_str_tuple)
    classes = (
        ServerConfig,
        SessionsConfig,
        EngineConfig,
        ReconnectConfig,
        LoggingConfig,
        EventsConfig,
        MetricsConfig,
        StreamConfig,
        MessagesConfig,
        MediaConfig,
        SendingConfig,
        DatabaseConfig,
        ClusterConfig,
        Config,
    )
    for cls in (*classes, WebhookConfig, WebhookDeliveryConfig):
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True))
    return conv


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ValueError(f"expected true or false, got {value!r}")


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _strict_str_tuple(value: Any, _: type) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def _with_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    merged = {
        section: dict(values) if isinstance(values, dict) else values for section, values in raw.items()
    }
    for name, (section, key) in ENV_OVERRIDES.items():
        if environ.get(name):
            target = merged.setdefault(section, {})
            if isinstance(target, dict):
                target[key] = environ[name]
    return merged


def _format_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown key {', '.join(sorted(exc.extra_fields))!r}"
    if not isinstance(exc, KeyError) and str(exc):
        return f"invalid value ({exc})"
    return format_exception(exc, type_)


def _describe(error: BaseException) -> str:
    if not isinstance(error, cattrs.BaseValidationError):
        return str(error)
    return "; ".join(cattrs.transform_error(error, path="config", format_exception=_format_exception))


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path` (a TOML file; None means built-in defaults) and apply environment overrides."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        config = _converter().structure(_with_env(raw, environ), Config)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from None
    _check_exposure(config)
    return config


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_exposure(config: Config) -> None:
    # No open relay: without an API key the API must not be reachable from other machines.
    if not config.server.api_key and not is_loopback(config.server.host):
        raise ConfigError(
            f"refusing to listen on {config.server.host} without an API key: "
            "set WASERVICE_API_KEY (or server.api_key), or bind 127.0.0.1"
        )
