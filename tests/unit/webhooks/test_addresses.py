"""SSRF policy: forbidden address forms, embedded IPv4 in IPv6, and URL registration checks."""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.webhooks.addresses import check_url, check_url_async, is_forbidden_host_name, is_forbidden_ip


def teredo(server: str, client: str, flags: int = 0x8000, port: int = 0x63BF) -> IPv6Address:
    """Build a Teredo address (RFC 4380): client address and port stored XOR-obfuscated."""
    n = (0x20010000 << 96) | (int(IPv4Address(server)) << 64) | (flags << 48)
    n |= ((~port & 0xFFFF) << 32) | (~int(IPv4Address(client)) & 0xFFFFFFFF)
    return IPv6Address(n)


def sixtofour(v4: str) -> IPv6Address:
    return IPv6Address((0x2002 << 112) | (int(IPv4Address(v4)) << 80) | 1)


FORBIDDEN = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "reserved"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("192.88.99.1", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fec0::1", "private"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "reserved"),
    ("4000::1", "reserved"),
    # IPv6 forms embedding an IPv4 address are judged by that address.
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:0:127.0.0.1", "loopback"),  # SIIT IPv4-translated
    ("::127.0.0.1", "loopback"),  # IPv4-compatible
    ("::10.0.0.1", "private"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::10.1.2.3", "private"),
    ("64:ff9b:1::1", "private"),  # local-use NAT64
    ("64:ff9b:1::7f00:1", "private"),
    ("2002:7f00:1::", "loopback"),
    ("2002:0a00:0001::", "private"),
    ("2002:a9fe:a9fe::1", "link-local"),
    ("2002:6440:1::1", "cgnat"),
    (str(teredo("65.54.227.120", "10.0.0.1")), "private"),
    (str(teredo("65.54.227.120", "127.0.0.1")), "loopback"),
    (str(teredo("10.0.0.1", "93.184.216.34")), "private"),  # private Teredo server
]

PUBLIC = [
    "93.184.216.34",
    "1.1.1.1",
    "8.8.8.8",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "2606:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34",
    "64:ff9b::93.184.216.34",
    "2002:5db8:d822::1",
    str(teredo("65.54.227.120", "93.184.216.34")),
]


@pytest.mark.parametrize(("addr", "reason"), FORBIDDEN)
def test_forbidden(addr: str, reason: str) -> None:
    assert is_forbidden_ip(ipaddress.ip_address(addr)) == reason


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_allowed(addr: str) -> None:
    assert is_forbidden_ip(ipaddress.ip_address(addr)) is None


def test_teredo_helper_matches_stdlib() -> None:
    addr = teredo("65.54.227.120", "10.0.0.1")
    assert addr.teredo == (IPv4Address("65.54.227.120"), IPv4Address("10.0.0.1"))


def test_scoped_link_local() -> None:
    assert is_forbidden_ip(IPv6Address("fe80::1%eth0")) == "link-local"


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_embedded_forms_agree_with_ipv4(n: int) -> None:
    v4 = IPv4Address(n)
    expected = is_forbidden_ip(v4)
    for form in (
        IPv6Address(f"::ffff:{v4}"),
        IPv6Address((0x64FF9B << 96) | n),
        sixtofour(str(v4)),
        teredo("65.54.227.120", str(v4)),
    ):
        assert is_forbidden_ip(form) == expected, form


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "api.localhost", "ip6-localhost"])
def test_localhost_names(name: str) -> None:
    assert is_forbidden_host_name(name)
    assert check_url(f"http://{name}/hook", allow_private=False)


def test_localhost_not_a_suffix_match_of_other_names() -> None:
    assert not is_forbidden_host_name("notlocalhost.example")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://localhost/", "loopback"),
        ("http://localhost:8080/x", "loopback"),
        ("ftp://example.com/file", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("http://user:pw@example.com/", "user name"),
        ("http://user@example.com/", "user name"),
        ("http:///nohost", "host"),
        ("http://example.com:0/", "port"),
        ("http://example.com:99999/", "not valid"),
        ("http://example.com:abc/", "not valid"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[64:ff9b::a00:1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://2130706433/", "canonical"),
        ("http://127.1/", "canonical"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\n", "whitespace"),
        ("", "scheme"),
    ],
)
def test_check_url_rejects(url: str, needle: str) -> None:
    errors = check_url(url, allow_private=False)
    assert errors
    assert any(needle in e for e in errors), errors


def test_public_literal_needs_no_dns() -> None:
    assert check_url("https://93.184.216.34/hook", allow_private=False) == []
    assert check_url("https://[2606:4700::1111]:8443/hook", allow_private=False) == []


def test_allow_private_accepts_loopback() -> None:
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True) == []
    assert check_url("http://[::1]:8080/hook", allow_private=True) == []
    # Syntax rules still apply.
    assert check_url("ftp://127.0.0.1/", allow_private=True)


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    asked: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out: list[Any] = []
        for a in answers[host]:
            if ":" in a:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_any_forbidden_resolved_address_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(
        monkeypatch,
        {
            "good.example": ["93.184.216.34", "2606:4700::1111"],
            "mixed.example": ["93.184.216.34", "10.0.0.5"],
            "mapped.example": ["::ffff:127.0.0.1"],
            "bücher.example".encode("idna").decode(): ["93.184.216.34"],
        },
    )
    assert check_url("https://good.example/hook", allow_private=False) == []
    errors = check_url("https://mixed.example/hook", allow_private=False)
    assert errors == ["URL host mixed.example resolves to 10.0.0.5, a private address"]
    assert check_url("https://mapped.example/", allow_private=False)
    assert check_url("https://mixed.example/hook", allow_private=True) == []
    assert check_url("https://bücher.example/", allow_private=False) == []
    assert "xn--bcher-kva.example" in asked


def test_unresolvable_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {})
    assert check_url("https://nowhere.invalid/", allow_private=False) == [
        "URL host nowhere.invalid does not resolve"
    ]
    assert check_url("https://nowhere.invalid/", allow_private=True)


def test_localhost_refused_without_resolving(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, {"localhost": ["93.184.216.34"]})
    assert check_url("http://localhost/", allow_private=False)
    assert asked == []


async def test_check_url_async(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"good.example": ["1.1.1.1"], "bad.example": ["1.1.1.1", "fd00::1"]})
    assert await check_url_async("https://good.example/", allow_private=False) == []
    assert await check_url_async("https://bad.example/", allow_private=False) == [
        "URL host bad.example resolves to fd00::1, a private address"
    ]
    assert await check_url_async("ftp://good.example/", allow_private=False)
    assert await check_url_async("http://localhost/", allow_private=False)
