"""SSRF policy: which IP addresses and URLs a webhook may target."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from yarl import URL

IPAddress = IPv4Address | IPv6Address
# getaddrinfo's result tuples, as returned by socket and by the event loop.
AddrInfo = tuple[Any, Any, int, str, tuple[Any, ...]]

# First match wins, so more specific ranges come first.
_V4_RULES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "reserved"),  # "this network"; Linux dials 0.x as local
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),  # includes cloud metadata 169.254.169.254
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_RULES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private"),  # local-use NAT64 (RFC 8215): site-specific by definition
        ("100::/64", "reserved"),  # discard-only
        ("2001:2::/48", "benchmarking"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # deprecated site-local
        ("fc00::/7", "private"),  # unique local
        ("ff00::/8", "multicast"),
    )
)

_MAPPED = IPv6Network("::ffff:0:0/96")  # IPv4-mapped
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")  # SIIT IPv4-translated (RFC 2765)
_COMPATIBLE = IPv6Network("::/96")  # deprecated IPv4-compatible
_NAT64 = IPv6Network("64:ff9b::/96")
_SIXTOFOUR = IPv6Network("2002::/16")
_TEREDO = IPv6Network("2001::/32")
# Only 2000::/3 is allocated as global unicast; anything else is not a web server.
_GLOBAL_UNICAST = IPv6Network("2000::/3")

_LOCALHOST_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def _v4_reason(ip: IPv4Address) -> str | None:
    for net, reason in _V4_RULES:
        if ip in net:
            return reason
    # Backstop for special-purpose ranges the table does not name.
    return None if ip.is_global else "reserved"


def _embedded_v4(ip: IPv6Address) -> list[IPv4Address] | None:
    """IPv4 addresses an IPv6 address carries, or None when it embeds none."""
    n = int(ip)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64 or ip in _COMPATIBLE:
        return [IPv4Address(n & 0xFFFFFFFF)]
    if ip in _SIXTOFOUR:
        return [IPv4Address((n >> 80) & 0xFFFFFFFF)]  # bits 16-48
    if ip in _TEREDO:
        # Teredo: server in bits 32-64, client in the low 32 bits XOR-obfuscated.
        return [IPv4Address((n >> 64) & 0xFFFFFFFF), IPv4Address(~n & 0xFFFFFFFF)]
    return None


def is_forbidden_ip(ip: IPAddress) -> str | None:
    """Return why `ip` may not be a webhook destination, or None when it is public.

    Reasons: unspecified, loopback, private, link-local, cgnat, multicast, broadcast,
    reserved, benchmarking, documentation. IPv6 forms embedding an IPv4 address are
    judged by that address (the reason is the embedded address's).
    """
    if isinstance(ip, IPv4Address):
        return _v4_reason(ip)
    ip = IPv6Address(int(ip))  # drop any %scope so range checks see only the bits
    for net, reason in _V6_RULES:
        if ip in net:
            return reason
    embedded = _embedded_v4(ip)
    if embedded is not None:
        return next((r for r in map(_v4_reason, embedded) if r is not None), None)
    if ip not in _GLOBAL_UNICAST:
        return "reserved"
    return None if ip.is_global else "reserved"


def is_forbidden_host_name(host: str) -> bool:
    """True for `localhost` and `*.localhost` (RFC 6761), refused without resolving."""
    name = host.rstrip(".").lower()
    return name in _LOCALHOST_NAMES or name.endswith(".localhost")


def _static_checks(url: str) -> tuple[list[str], str | None, int | None]:
    """Syntax checks; returns errors and, when they pass, the host and port to resolve."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return ["URL must not contain whitespace or control characters"], None, None
    if len(url) > 2048:
        return ["URL must be at most 2048 characters"], None, None
    try:
        parsed = URL(url)
        host = parsed.raw_host  # IDNA-encoded, what aiohttp resolves and dials
        port = parsed.port
    except (ValueError, UnicodeError) as exc:
        return [f"URL is not valid: {exc}"], None, None
    errors: list[str] = []
    if parsed.scheme not in ("http", "https"):
        errors.append("URL scheme must be http or https")
    if not host:
        errors.append("URL must have a host")
    if parsed.user is not None or parsed.password is not None:
        errors.append("URL must not contain a user name or password")
    if port is None or not 1 <= port <= 65535:
        errors.append("URL port must be between 1 and 65535")
    if errors or host is None or port is None:
        return errors, None, None
    return [], host, port


def looks_like_ip(host: str) -> bool:
    """aiohttp's test for an IP literal: such hosts skip the resolver when dialled."""
    return ":" in host or host.replace(".", "").isdigit()


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _judge(host: str, addrs: Iterable[str]) -> list[str]:
    errors: list[str] = []
    for addr in dict.fromkeys(addrs):  # de-duplicated, order kept
        reason = is_forbidden_ip(ipaddress.ip_address(addr))
        if reason is not None:
            errors.append(f"URL host {host} resolves to {addr}, a {reason} address")
    return errors


def _infos_to_addrs(infos: Iterable[AddrInfo]) -> list[str]:
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def _pre_resolve(url: str, allow_private: bool) -> tuple[list[str], str | None, int | None]:
    """Checks that need no DNS; host is None when nothing is left to resolve."""
    errors, host, port = _static_checks(url)
    if errors or host is None:
        return errors, None, None
    literal = _literal_ip(host)
    if literal is None and looks_like_ip(host):
        # Legacy forms such as 2130706433 or 127.1: aiohttp refuses to dial them.
        return [f"URL host {host} is not a canonical IP address"], None, None
    if literal is not None:
        reason = None if allow_private else is_forbidden_ip(literal)
        return ([f"URL host {host} is a {reason} address"] if reason else []), None, None
    if not allow_private and is_forbidden_host_name(host):
        return [f"URL host {host} is a loopback name"], None, None
    return [], host, port


def _post_resolve(host: str, infos: list[AddrInfo] | None, allow_private: bool) -> list[str]:
    addrs = _infos_to_addrs(infos or [])
    if not addrs:
        return [f"URL host {host} does not resolve"]
    return [] if allow_private else _judge(host, addrs)


def check_url(url: str, *, allow_private: bool) -> list[str]:
    """Validate a webhook URL at registration; returns error messages (empty = ok).

    Blocks on DNS: from async code use `check_url_async`. Every resolved address must
    be allowed, since the connection may use any of them.
    """
    errors, host, port = _pre_resolve(url, allow_private)
    if errors or host is None:
        return errors
    try:
        infos: list[AddrInfo] | None = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = None
    return _post_resolve(host, infos, allow_private)


async def check_url_async(url: str, *, allow_private: bool) -> list[str]:
    """`check_url` with the DNS look-up run in the event loop's thread pool."""
    errors, host, port = _pre_resolve(url, allow_private)
    if errors or host is None:
        return errors
    loop = asyncio.get_running_loop()
    try:
        infos: list[AddrInfo] | None = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = None
    return _post_resolve(host, infos, allow_private)
