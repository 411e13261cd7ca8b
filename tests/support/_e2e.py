"""Shared pieces of the end-to-end tests: regcache configs and byte checks."""

from __future__ import annotations

import hashlib
import http.client
import time
from collections.abc import Callable
from pathlib import Path

from ._pki import PKI
from ._relay import CountingRelay

REGISTRY = "upstream.regcache.test"


def mirror_config(
    upstream_url: str,
    pki: PKI,
    *,
    credentials: tuple[str, str] | None = None,
    tag_ttl: str = "5m",
    proxy: str = "",
    registry_proxy: str = "",
    mirrors: tuple[str, ...] = (),
    extra: str = "",
) -> str:
    """A regcache config with the test upstream as the default registry."""
    lines = [
        "[mirror]",
        f'default_registry = "{REGISTRY}"',
        "[upstream]",
        f'ca_file = "{pki.ca_pem}"',
        f'proxy = "{proxy}"',
        'timeout = "10s"',
        'connect_timeout = "3s"',
        "[cache]",
        f'tag_ttl = "{tag_ttl}"',
        f'[registries."{REGISTRY}"]',
        f'url = "{upstream_url}"',
        'aliases = ["testreg"]',
        f'proxy = "{registry_proxy}"',
        "mirrors = [" + ", ".join(f'"{url}"' for url in mirrors) + "]",
    ]
    if credentials is not None:
        lines += [f'username = "{credentials[0]}"', f'password = "{credentials[1]}"']
    return "\n".join(lines) + "\n" + extra


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def slow_upstream(relay: CountingRelay, digest: str, seconds: float = 2.0) -> None:
    """Make the relay drop the blob after 1 MiB and wait before each request,
    so a cold fetch stays in flight for a few seconds."""
    relay.latency = seconds
    relay.drop_after(digest, 1024 * 1024, times=1)


def open_blob(
    port: int, target: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", target)
    return connection, connection.getresponse()


def store_path(data_dir: Path, digest: str) -> Path:
    hex_digest = digest.split(":", 1)[1]
    return data_dir / "store" / "blobs" / "sha256" / hex_digest[:2] / hex_digest


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds passed; whether it held.

    For effects a server completes after its answer, such as a blob's commit
    (clients get a verified blob while it is made durable) or an eviction.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
