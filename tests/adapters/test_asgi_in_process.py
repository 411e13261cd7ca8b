"""The ASGI app called in-process under trio: the lifespan protocol, a mount
prefix, and ``http.response.zerocopysend`` for cached blobs (which neither
uvicorn nor hypercorn offers, so the server tests cannot reach it)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import trio

from regcache.config import load_config
from regcache_adapters.asgi import create_app
from support import PKI, CountingRelay, StandardImages, mirror_config, store_path

pytestmark = pytest.mark.e2e


def http_scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "/registry",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 1234),
        "extensions": {"http.response.zerocopysend": {}},
    }


async def call(app: Any, scope: dict[str, Any]) -> tuple[int, dict[str, str], bytes, list[str]]:
    """Run one request; zero-copy messages are read from their file region."""
    status, headers, body, kinds = 0, {}, b"", []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers, body
        kinds.append(message["type"])
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")
        elif message["type"] == "http.response.zerocopysend":
            body += os.pread(message["file"].fileno(), message["count"], message["offset"])

    await app(scope, receive, send)
    return status, headers, body, kinds


async def test_lifespan_prefix_and_zero_copy(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    config = load_config(f'data_dir = "{tmp_path / "data"}"\n' + mirror_config(relay.url, pki), {})
    app = create_app(config)
    layer = images.public.blobs[-1]
    target = f"/registry/v2/{images.public.repository}/blobs/{layer.digest}"

    to_app, from_test = trio.open_memory_channel[MutableMapping[str, Any]](4)
    to_test, from_app = trio.open_memory_channel[MutableMapping[str, Any]](4)

    async def lifespan() -> None:
        await app({"type": "lifespan"}, from_test.receive, to_test.send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lifespan)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"

        status, headers, body, kinds = await call(app, http_scope(target))  # cold
        assert status == 200 and hashlib.sha256(body).hexdigest() == layer.digest[7:]
        assert "http.response.zerocopysend" not in kinds
        # The verified blob went out while the commit made it durable; once
        # it is in the store it is served from there.
        blob_file = store_path(tmp_path / "data", layer.digest)
        with trio.fail_after(10):
            while not blob_file.exists():
                await trio.sleep(0.01)
        status, _, body, kinds = await call(app, http_scope(target))  # cached
        assert status == 200 and hashlib.sha256(body).hexdigest() == layer.digest[7:]
        assert kinds == ["http.response.start", "http.response.zerocopysend"]
        status, headers, part, kinds = await call(
            app, http_scope(target, [(b"range", b"bytes=100-199")])
        )
        assert status == 206 and part == body[100:200]
        assert headers["content-length"] == "100"
        served = [
            r
            for r in relay.requests(side="registry")
            if r.method == "GET" and r.path.endswith(layer.digest) and r.status == 200
        ]
        assert len(served) == 1, "the cached blob was fetched again"

        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"
    status, _, body, _ = await call(app, http_scope("/registry/v2/"))
    assert status == 503, "not running after shut-down"
