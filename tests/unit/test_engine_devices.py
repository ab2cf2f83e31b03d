"""The embedded device store keeps today's behaviour behind `DeviceStore`; device JIDs as text; the
URL the workers hand to goneonize. (PostgresDevices on a real server: tests/cluster/test_device_store.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from waservice.cluster.devices import go_url
from waservice.engine.device_jid import DeviceJid, parse_device_jid
from waservice.engine.devices import DeviceSpec, is_postgres
from waservice.engine.sqlite_devices import SqliteDevices


def paired_file(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(directory / "whatsmeow.db") as conn:
        conn.execute("CREATE TABLE whatsmeow_device (jid TEXT)")
        conn.execute("INSERT INTO whatsmeow_device VALUES ('15550001111:7@s.whatsapp.net')")
    conn.close()


async def test_sqlite_spec_is_the_session_files_absolute_path_and_nothing_else(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = await SqliteDevices().spec("s1", Path("data/s1"))
    assert spec == DeviceSpec(db=str(tmp_path / "data" / "s1" / "whatsmeow.db"))
    assert spec.jid is None and not spec.new_device  # Go opens the file's one account, or a new one


async def test_sqlite_credentials_are_the_file_and_forget_removes_it(tmp_path: Path) -> None:
    devices = SqliteDevices()
    directory = tmp_path / "s1"
    assert not await devices.has_credentials("s1", directory)
    paired_file(directory)
    (directory / "whatsmeow.db-wal").write_bytes(b"")
    assert await devices.has_credentials("s1", directory)
    await devices.paired("s1", "15550001111:7@s.whatsapp.net")  # the file already holds the account
    assert await devices.has_credentials("s1", directory)
    await devices.forget("s1", directory)
    assert not await devices.has_credentials("s1", directory)
    assert sorted(p.name for p in directory.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "jid"),
    [
        ("15550001111:7@s.whatsapp.net", DeviceJid("15550001111", 0, 7, "s.whatsapp.net")),
        ("15550001111.1:7@s.whatsapp.net", DeviceJid("15550001111", 1, 7, "s.whatsapp.net")),
        ("15550001111@s.whatsapp.net", DeviceJid("15550001111", 0, 0, "s.whatsapp.net")),
    ],
)
def test_device_jid_text_both_ways(text: str, jid: DeviceJid) -> None:
    assert parse_device_jid(text) == jid
    assert str(jid) == text


@pytest.mark.parametrize("text", ["", "1555", "1555@", "@s.whatsapp.net", "1555:@s", "1555:x@s", "1555.@s"])
def test_not_a_device_jid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_device_jid(text)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@db:5432/ws", "postgresql://u:pw@db:5432/ws?sslmode=prefer"),
        ("postgres://u@db/ws?application_name=x", "postgres://u@db/ws?application_name=x&sslmode=prefer"),
        ("postgresql://u@db/ws?sslmode=verify-full", "postgresql://u@db/ws?sslmode=verify-full"),
        ("postgresql://u@db/ws?sslmode=disable", "postgresql://u@db/ws?sslmode=disable"),
        ("postgresql://db", "postgresql://db?sslmode=prefer"),
        # Characters libpq takes in a password and Go's net/url refuses: encoded (libpq decodes them).
        ("postgresql://u:p[w]@db/ws", "postgresql://u:p%5Bw%5D@db/ws?sslmode=prefer"),
        ("postgresql://u:a%20b:c@db/ws", "postgresql://u:a%20b%3Ac@db/ws?sslmode=prefer"),
    ],
)
def test_go_url_keeps_libpqs_tls_default(url: str, expected: str) -> None:
    assert go_url(url) == expected
    assert is_postgres(go_url(url))


@pytest.mark.parametrize("url", ["host=db password=pw", "mysql://u:pw@db/ws", "/data/whatsmeow.db"])
def test_go_url_must_be_a_postgresql_url(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        go_url(url)
    assert "pw" not in str(caught.value)
