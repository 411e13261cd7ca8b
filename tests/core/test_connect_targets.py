"""CONNECT targets and what the proxy does with them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcache.core import RegcacheError, RegistryMap, RemoteProtocolError
from regcache.core._connect import (
    Intercept,
    Refuse,
    Tunnel,
    classify_connect,
    parse_connect_target,
)

REGISTRIES = RegistryMap.build(
    {
        "docker.io": ["registry-1.docker.io", "index.docker.io"],
        "ghcr.io": [],
        "upstream.test": ["upstream.test:5443"],
    }
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("registry-1.docker.io:443", ("registry-1.docker.io", 443)),
        ("GHCR.IO:443", ("ghcr.io", 443)),
        ("[::1]:5000", ("::1", 5000)),
        ("10.0.0.1:8443", ("10.0.0.1", 8443)),
        ("example.com.:443", ("example.com", 443)),
    ],
)
def test_targets(target: str, expected: tuple[str, int]) -> None:
    assert parse_connect_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "",
        "example.com",
        "example.com:",
        "example.com:0",
        "example.com:70000",
        "a:b:443",
        "[::1]443",
        "[nothost]:443",
        "user@host:443",
        "host/path:443",
        "ho st:443",
        "x" * 400,
    ],
)
def test_bad_targets_are_400(target: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse_connect_target(target)
    assert caught.value.status == 400


def test_registries_are_intercepted_by_name_alias_or_host() -> None:
    assert classify_connect("registry-1.docker.io", 443, REGISTRIES, tunnel_allowed=False) == (
        Intercept("docker.io", "registry-1.docker.io", 443)
    )
    assert classify_connect("ghcr.io", 443, REGISTRIES, tunnel_allowed=True) == (
        Intercept("ghcr.io", "ghcr.io", 443)
    )
    assert classify_connect("upstream.test", 5443, REGISTRIES, tunnel_allowed=False) == (
        Intercept("upstream.test", "upstream.test", 5443)
    )


def test_a_registry_name_on_another_port_is_not_that_registry() -> None:
    decision = classify_connect("ghcr.io", 8443, REGISTRIES, tunnel_allowed=False)
    assert isinstance(decision, Refuse)


def test_tunnels_and_refusals() -> None:
    assert classify_connect("example.com", 443, REGISTRIES, tunnel_allowed=True) == Tunnel(
        "example.com", 443
    )
    refused = classify_connect("example.com", 443, REGISTRIES, tunnel_allowed=False)
    assert isinstance(refused, Refuse)
    assert "[proxy] tunnel" in refused.reason and "example.com" in refused.reason


@given(st.text(max_size=80))
def test_random_targets_raise_only_our_errors(target: str) -> None:
    try:
        host, port = parse_connect_target(target)
    except RegcacheError:
        return
    assert 0 < port < 65536 and host


def test_token_realm_hosts_of_configured_registries_are_logins() -> None:
    from regcache.core._connect import Login

    assert classify_connect("auth.docker.io", 443, REGISTRIES, tunnel_allowed=False) == Login(
        "docker.io", "auth.docker.io", 443
    )
    # gitlab.com serves registry.gitlab.com, which is not configured here.
    assert isinstance(classify_connect("gitlab.com", 443, REGISTRIES, tunnel_allowed=False), Refuse)
    learned = {"token.example:8443": "ghcr.io"}
    decision = classify_connect(
        "token.example", 8443, REGISTRIES, tunnel_allowed=False, token_hosts=learned
    )
    assert decision == Login("ghcr.io", "token.example", 8443)
