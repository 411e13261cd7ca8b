"""pytest fixtures for the end-to-end tests: a real upstream and real clients.

Slow things (PKI, token issuer, registry, pushed images) live for the whole
session; things tests reconfigure (relay, egress proxy, skopeo) are made per
test. Every server is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import (
    DEFAULT_USERS,
    PKI,
    CountingRelay,
    EgressProxy,
    ImageBuilder,
    ImageFactory,
    RegistryClient,
    Skopeo,
    StandardImages,
    TokenIssuer,
    UpstreamRegistry,
    push_standard_images,
)

PUSH_USER = "alice"

# Host names the egress proxy resolves, and to what.
EGRESS_HOSTS = {
    "upstream.regcache.test": "127.0.0.1",
    "cdn.regcache.test": "127.0.0.2",
}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """The test CA, server certificate and token-signing certificate."""
    return PKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def session_token_issuer(pki: PKI) -> Iterator[TokenIssuer]:
    """The token issuer shared by the session (prefer ``token_issuer``)."""
    with TokenIssuer(pki) as issuer:
        yield issuer


@pytest.fixture
def token_issuer(session_token_issuer: TokenIssuer) -> Iterator[TokenIssuer]:
    """The session's token issuer, its records cleared and options restored after."""
    issuer = session_token_issuer
    issuer.reset()
    saved = (
        issuer.fail_status,
        issuer.omit_expires_in,
        issuer.only_access_token,
        issuer.reject_bad_credentials,
        issuer.lifetime,
        issuer.acl,
        dict(issuer.users),
    )
    yield issuer
    (
        issuer.fail_status,
        issuer.omit_expires_in,
        issuer.only_access_token,
        issuer.reject_bad_credentials,
        issuer.lifetime,
        issuer.acl,
        users,
    ) = saved
    issuer.users.clear()
    issuer.users.update(users)


@pytest.fixture(scope="session")
def session_upstream(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, session_token_issuer: TokenIssuer
) -> Iterator[UpstreamRegistry]:
    """The upstream registry shared by the session (prefer ``upstream``)."""
    with UpstreamRegistry(tmp_path_factory.mktemp("upstream"), pki, session_token_issuer) as reg:
        yield reg


@pytest.fixture
def upstream(session_upstream: UpstreamRegistry) -> Iterator[UpstreamRegistry]:
    """docker-registry with TLS and token auth; running again after each test."""
    session_upstream.start()
    yield session_upstream
    session_upstream.start()


@pytest.fixture(scope="session")
def upstream_credentials() -> tuple[str, str]:
    """(user, password) that may pull and push everything on the upstream."""
    return PUSH_USER, DEFAULT_USERS[PUSH_USER]


@pytest.fixture(scope="session")
def image_builder(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilder:
    """Builds synthetic images; blob files are shared by the session."""
    return ImageBuilder(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="session")
def upstream_client(
    session_upstream: UpstreamRegistry, pki: PKI, upstream_credentials: tuple[str, str]
) -> RegistryClient:
    """A registry client for the upstream with push credentials."""
    user, password = upstream_credentials
    return RegistryClient(
        session_upstream.url, ca_file=pki.ca_pem, username=user, password=password
    )


@pytest.fixture(scope="session")
def images(upstream_client: RegistryClient, image_builder: ImageBuilder) -> StandardImages:
    """The standard images, pushed to the upstream once per session."""
    return push_standard_images(upstream_client, image_builder)


@pytest.fixture(scope="session")
def image_factory(upstream_client: RegistryClient, image_builder: ImageBuilder) -> ImageFactory:
    """Pushes more images to the upstream on demand (cached by arguments)."""
    return ImageFactory(upstream_client, image_builder)


@pytest.fixture(scope="session")
def session_open_upstream(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI
) -> Iterator[UpstreamRegistry]:
    """An upstream without auth and without TLS, started on first use."""
    with UpstreamRegistry(
        tmp_path_factory.mktemp("open-upstream"), pki, auth=False, tls=False
    ) as reg:
        yield reg


@pytest.fixture
def open_upstream(session_open_upstream: UpstreamRegistry) -> Iterator[UpstreamRegistry]:
    """docker-registry on plain HTTP with no auth; running again after each test."""
    session_open_upstream.start()
    yield session_open_upstream
    session_open_upstream.start()


@pytest.fixture
def relay(upstream: UpstreamRegistry, pki: PKI) -> Iterator[CountingRelay]:
    """A counting relay (plain HTTP on 127.0.0.1) in front of ``upstream``.

    Its CDN side listens on 127.0.0.2.
    """
    with CountingRelay(upstream.url, ca_file=pki.ca_pem) as counting_relay:
        yield counting_relay
    assert not counting_relay.unexpected_errors, counting_relay.unexpected_errors


@pytest.fixture
def egress_proxy() -> Iterator[EgressProxy]:
    """A CONNECT proxy resolving upstream.regcache.test and cdn.regcache.test."""
    with EgressProxy(EGRESS_HOSTS) as proxy:
        yield proxy


@pytest.fixture
def skopeo(tmp_path: Path, pki: PKI) -> Skopeo:
    """An isolated skopeo trusting the test CA (``--src-cert-dir``)."""
    return Skopeo(tmp_path / "skopeo", ca_file=pki.ca_pem)
