"""SSRF-safe webhook egress: guarded resolver, HTTP session and a bounded POST helper."""

from __future__ import annotations

import codecs
import functools
import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from gateway.webhooks.addresses import is_forbidden_ip, looks_like_ip

SNIPPET_BYTES = 1024
# Read at most this much past the snippet so the connection can be reused; a larger
# body closes the connection instead of being read.
DRAIN_LIMIT = 64 * 1024
USER_AGENT = "mailgw-webhooks/1"


class ForbiddenDestination(OSError):
    """The destination address is refused by the SSRF policy."""


def _reason(addr: str) -> str | None:
    try:
        return is_forbidden_ip(ipaddress.ip_address(addr))
    except ValueError:
        return "invalid"  # never dial what we cannot judge


class GuardedResolver(AbstractResolver):
    """Resolver that drops forbidden addresses, so only checked addresses get dialled."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        # Created lazily: aiohttp's resolvers need a running loop at construction.
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            reason = _reason(result["host"])
            if reason is None:
                allowed.append(result)
            else:
                refused.append(f"{result['host']} ({reason})")
        if not allowed:
            raise ForbiddenDestination(f"{host} resolves only to forbidden addresses: {', '.join(refused)}")
        return allowed

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def guarded_socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    """Socket factory that refuses forbidden peers: the last check, on the exact address dialled.

    It also covers IP-literal URLs, for which aiohttp skips the resolver.
    """
    family, type_, proto, _, address = addr_info
    reason = _reason(str(address[0]))
    if reason is not None:
        raise ForbiddenDestination(f"{address[0]} is a {reason} address")
    return socket.socket(family=family, type=type_, proto=proto)


def make_session(
    *, timeout: float, allow_private: bool, limit: int = 100, limit_per_host: int = 10
) -> aiohttp.ClientSession:
    """Return a client session for webhook POSTs; call it inside a running event loop.

    `timeout` bounds each whole request (connect, send, response). The session does not
    refuse redirects itself: pass `allow_redirects=False` on every request (`post` does),
    since a redirect target is an unchecked URL and 3xx is a failed delivery anyway.
    No cookies are kept and no proxy settings are read from the environment.
    """
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private),
        limit=limit,
        limit_per_host=limit_per_host,
        socket_factory=None if allow_private else guarded_socket_factory,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),  # endpoints must not share state via cookies
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )


@dataclass(frozen=True, slots=True)
class PostResult:
    """Outcome of one webhook POST."""

    status: int | None  # None when no response status arrived
    snippet: str  # first SNIPPET_BYTES of the response body, decoded with replacement
    duration_ms: int
    error: str | None  # transport failure, timeout or refused destination
    retry_after: float | None  # seconds, from a Retry-After header

    @property
    def ok(self) -> bool:
        """A 2xx answered in full within the timeout."""
        return self.error is None and self.status is not None and 200 <= self.status < 300


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _decode_snippet(data: bytes) -> str:
    try:
        return data.decode("utf-8")  # the usual case; the same text the slow path gives
    except UnicodeDecodeError:
        pass
    # final=False drops a multi-byte character cut in half by the size limit.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    buf = bytearray()
    while len(buf) < SNIPPET_BYTES:
        chunk = await resp.content.read(SNIPPET_BYTES - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if resp.content.at_eof():  # the usual short answer: no further read
            return bytes(buf)
    drained = 0
    while drained < DRAIN_LIMIT:
        chunk = await resp.content.read(DRAIN_LIMIT - drained)
        if not chunk:
            return bytes(buf)
        drained += len(chunk)
    if not resp.content.at_eof():
        resp.close()  # too large to drain: drop the connection instead of reading on
    return bytes(buf)


def _forbidden_in(exc: BaseException) -> ForbiddenDestination | None:
    """Find a ForbiddenDestination that aiohttp wrapped in its connector errors."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ForbiddenDestination):
            return cur
        if isinstance(cur, aiohttp.ClientConnectorError):
            todo.append(cur.os_error)
        todo.extend((cur.__cause__, cur.__context__))
    return None


def _literal_refusal(url: URL, allow_private: bool) -> str | None:
    host = url.raw_host
    if url.scheme not in ("http", "https") or not host:
        return f"invalid webhook URL: {url}"
    if allow_private or not looks_like_ip(host):
        return None
    # aiohttp dials IP literals without the resolver, so judge them here.
    reason = _reason(host)
    return None if reason is None else f"forbidden destination: {host} is a {reason} address"


@functools.lru_cache(maxsize=4096)
def _target(url: str, allow_private: bool) -> tuple[URL | None, str]:
    """The parsed URL to POST to, or None and why it is refused (cached: endpoints repeat;
    a host name is still resolved and checked on every new connection)."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        return None, f"invalid webhook URL: {exc}"
    refusal = _literal_refusal(parsed, allow_private)
    return (None, refusal) if refusal is not None else (parsed, "")


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    allow_private: bool,
) -> PostResult:
    """POST `body` once, never following redirects; never raises for network failures."""
    start = time.monotonic()
    status: int | None = None
    snippet = b""
    retry_after: float | None = None

    def result(error: str | None) -> PostResult:
        elapsed = round((time.monotonic() - start) * 1000)
        return PostResult(status, _decode_snippet(snippet), elapsed, error, retry_after)

    parsed, refusal = _target(url, allow_private)
    if parsed is None:
        return result(refusal)
    try:
        async with session.post(parsed, data=body, headers=headers, allow_redirects=False) as resp:
            status = resp.status
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            snippet = await _read_bounded(resp)
    except Exception as exc:  # every failure becomes a recorded attempt, not a crash
        forbidden = _forbidden_in(exc)
        if forbidden is not None:
            return result(f"forbidden destination: {forbidden}")
        if isinstance(exc, TimeoutError):
            total = session.timeout.total
            return result(f"timeout after {total:g}s" if total else "timeout")
        if isinstance(exc, (aiohttp.ClientError, OSError, ValueError)):
            return result(f"{type(exc).__name__}: {exc}")
        raise
    return result(None)
