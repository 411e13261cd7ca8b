"""Fixtures for the adapter tests: the end-to-end upstream fixtures, and web
servers (uvicorn, hypercorn, gunicorn, waitress) run as real processes.

The upstream registry, relay, images and skopeo come from tests/conftest.py,
shared with the end-to-end suite (one upstream per test session).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from adapter_hosts import SERVERS, Host, HostFactory, server_env

from support import PKI, CountingRelay, free_port, mirror_config


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
