"""Fixtures for the adapter tests: the end-to-end upstream fixtures, and web
servers (uvicorn, hypercorn, gunicorn, waitress) run as real processes.

The upstream registry, relay, images and skopeo are the end-to-end suite's
own fixtures, imported from its conftest module: one definition (a run of
both directories makes the session-wide ones once for each).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from adapter_hosts import SERVERS, Host, HostFactory, server_env

from e2e.conftest import (
    image_builder,
    image_factory,
    images,
    pki,
    relay,
    session_token_issuer,
    session_upstream,
    skopeo,
    token_issuer,
    upstream,
    upstream_client,
    upstream_credentials,
)
from e2e.test_mirror import mirror_config
from support import PKI, CountingRelay, free_port

__all__ = [
    "image_builder",
    "image_factory",
    "images",
    "pki",
    "relay",
    "session_token_issuer",
    "session_upstream",
    "skopeo",
    "token_issuer",
    "upstream",
    "upstream_client",
    "upstream_credentials",
]


@pytest.fixture
def host_factory(tmp_path: Path, relay: CountingRelay, pki: PKI) -> Iterator[HostFactory]:
    """Makes servers over a fresh cache in front of the counting relay; stops them all."""
    started: list[Host] = []

    def make(server: str, app: str, **extra_env: str) -> Host:
        directory = tmp_path / f"{server}-{len(started)}"
        directory.mkdir()
        config_path = directory / "regcache.toml"
        config_path.write_text(
            f'data_dir = "{directory / "data"}"\n' + mirror_config(relay.url, pki)
        )
        port = free_port()
        argv = [sys.executable, *SERVERS[server](port, app)]
        host = Host(directory, argv, server_env(config_path, **extra_env), port)
        started.append(host)
        return host.start()

    yield make
    for host in started:
        host.stop()
