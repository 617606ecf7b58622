"""Egress pieces that need no network: Retry-After, resolver filtering, socket guard."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.webhooks.egress import (
    ForbiddenDestination,
    GuardedResolver,
    PostResult,
    _decode_snippet,
    guarded_socket_factory,
    parse_retry_after,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Tue, 14 Nov 2023 22:14:20 GMT", 60.0),
        ("Tue, 14 Nov 2023 22:10:00 GMT", 0.0),  # in the past: retry now
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("١٢", None),  # non-ASCII digits
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_snippet_decoding_drops_a_cut_character() -> None:
    assert _decode_snippet("é".encode() * 2 + "é".encode()[:1]) == "éé"
    assert _decode_snippet(b"ok\xffok") == "ok\ufffdok"


def test_post_result_ok() -> None:
    assert PostResult(204, "", 3, None, None).ok
    assert not PostResult(302, "", 3, None, None).ok
    assert not PostResult(200, "", 3, "timeout after 1s", None).ok
    assert not PostResult(None, "", 3, "refused", None).ok


class FakeResolver(AbstractResolver):
    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in self.answers
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_filters_forbidden_addresses() -> None:
    inner = FakeResolver(["10.0.0.1", "93.184.216.34", "::ffff:127.0.0.1", "2606:4700::1111"])
    resolver = GuardedResolver(False, inner)
    got = await resolver.resolve("rebind.example", 443)
    assert [r["host"] for r in got] == ["93.184.216.34", "2606:4700::1111"]
    await resolver.close()
    assert inner.closed


async def test_resolver_refuses_when_nothing_allowed() -> None:
    resolver = GuardedResolver(False, FakeResolver(["127.0.0.1", "169.254.169.254"]))
    with pytest.raises(
        ForbiddenDestination, match=r"127\.0\.0\.1 \(loopback\).*169\.254\.169\.254 \(link-local\)"
    ):
        await resolver.resolve("rebind.example", 80)


async def test_resolver_allow_private_passes_everything() -> None:
    resolver = GuardedResolver(True, FakeResolver(["127.0.0.1", "10.0.0.1"]))
    assert [r["host"] for r in await resolver.resolve("internal.example", 80)] == ["127.0.0.1", "10.0.0.1"]


def test_forbidden_destination_is_an_oserror() -> None:
    assert issubclass(ForbiddenDestination, OSError)


@pytest.mark.parametrize(
    "info",
    [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:10.0.0.1", 80, 0, 0)),
    ],
)
def test_socket_factory_refuses_forbidden_peer(info: tuple[int, int, int, str, tuple[object, ...]]) -> None:
    with pytest.raises(ForbiddenDestination):
        guarded_socket_factory(info)


def test_socket_factory_allows_public_peer() -> None:
    sock = guarded_socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)))
    try:
        assert sock.family == socket.AF_INET
    finally:
        sock.close()
