"""Fetching media from a URL without letting the URL reach what it should not.

A URL given to the API could name a service on the host's own network (a cloud metadata
endpoint, an admin page on localhost). So every hop is checked: the host name is resolved here,
every address it has must be public (not loopback, private, link-local, reserved, multicast or
unspecified, unless `media.allow_private_urls`), and the request connects to the address that
was checked (the name is only sent as Host and TLS SNI), so a second DNS answer cannot switch it
(DNS rebinding). Redirects are followed by hand, each one checked like the first URL. The body
streams into a spool file under the size cap, and the whole fetch has one deadline.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl

import attrs
import httpx
import trio

from ..errors import InvalidRequest, MediaTooLarge
from .spool import SpoolFile, too_large

MAX_URL_LENGTH = 2048
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@attrs.frozen
class FetchPolicy:
    timeout: float
    max_redirects: int
    allow_private: bool = False


@attrs.frozen
class Fetched:
    content_type: str | None  # as the server labelled it (a hint when no mimetype was given)
    file_name: str | None  # the last path segment of the final URL


class BadUrl(InvalidRequest):
    """A media URL that cannot or may not be fetched."""


def parse_url(value: str) -> httpx.URL:
    if len(value) > MAX_URL_LENGTH:
        raise BadUrl(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise BadUrl(f"invalid url: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise BadUrl(f"invalid url {value!r}: it must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise BadUrl("invalid url: credentials in the URL are not accepted")
    return url


_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def refused(address: Address) -> str | None:
    """Why this address may not be fetched from, or None if it is a public unicast address.

    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged by that too:
    the network would deliver it there."""
    if isinstance(address, ipaddress.IPv6Address):
        for inner in _embedded_ipv4(address):
            if why := refused(inner):
                return why
    for name, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return name
    return None if address.is_global else "not globally reachable"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if any(address in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


async def resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BadUrl(f"cannot resolve the url's host {host!r}: {exc}") from None
    # An IPv6 answer may carry a zone ("fe80::1%eth0"): the zone is not part of the address.
    found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return sorted(found, key=lambda a: (a.version, int(a)))


async def checked_address(url: httpx.URL, policy: FetchPolicy) -> Address:
    addresses = await resolve(url.host, url.port or _default_port(url))
    if not addresses:
        raise BadUrl(f"the url's host {url.host!r} has no address")
    if not policy.allow_private:
        for address in addresses:
            if why := refused(address):
                raise BadUrl(
                    f"url refused: {url.host} resolves to {address}, a {why} address "
                    "(media.allow_private_urls is off)"
                )
    return addresses[0]


async def fetch_into(url_text: str, spool: SpoolFile, policy: FetchPolicy) -> Fetched:
    """GET the URL into `spool`; raises BadUrl (400) or MediaTooLarge (413)."""
    url = parse_url(url_text)
    with trio.move_on_after(policy.timeout):
        # trust_env off: a proxy from the environment would resolve the name itself (unchecked).
        async with httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=policy.timeout, verify=_tls_context()
        ) as client:
            for _ in range(policy.max_redirects + 1):
                address = await checked_address(url, policy)
                request = _pinned_request(client, url, address)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise BadUrl(f"could not fetch the url: {type(exc).__name__}: {exc}") from None
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = _redirect_target(url, response.headers["location"])
                        continue
                    return await _receive(response, url, spool)
                finally:
                    await response.aclose()
            raise BadUrl(f"too many redirects (more than {policy.max_redirects}, media.max_redirects)")
    raise BadUrl(f"fetching the url took longer than {policy.timeout:g} s (media.fetch_timeout)")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's roots: SSL_CERT_FILE or SSL_CERT_DIR when set (a private CA), else certifi's. The
    client itself runs without trust_env, which would read these but also the proxy variables."""
    return httpx.create_ssl_context(trust_env=True)


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: Address) -> httpx.Request:
    """A request for `url` that connects to `address`: the name goes only into Host and SNI."""
    host_header = url.netloc.decode("ascii")
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return client.build_request(
        "GET",
        url.copy_with(host=str(address)),
        # identity: the cap counts the file's own bytes (aiter_bytes would still inflate a gzip
        # answer chunk by chunk, under the same cap).
        headers={
            "Host": host_header,
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "User-Agent": "waservice",
        },
        extensions=extensions,
    )


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    try:
        target = current.join(location)
    except httpx.InvalidURL as exc:
        raise BadUrl(f"the url redirected to an invalid location: {exc}") from None
    return parse_url(str(target))


async def _receive(response: httpx.Response, url: httpx.URL, spool: SpoolFile) -> Fetched:
    if not 200 <= response.status_code < 300:
        raise BadUrl(f"the url answered HTTP {response.status_code}, not the media")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > spool.max_bytes:
        raise MediaTooLarge(too_large(spool.max_bytes))
    try:
        async for chunk in response.aiter_bytes():
            await spool.write(chunk)
    except httpx.HTTPError as exc:
        raise BadUrl(f"the url's body could not be read: {type(exc).__name__}: {exc}") from None
    await spool.finish()
    name = url.path.rsplit("/", 1)[-1] or None
    return Fetched(content_type=response.headers.get("content-type"), file_name=name)
