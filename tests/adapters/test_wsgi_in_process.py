"""The WSGI app called in-process: a server without ``wsgi.file_wrapper``, HEAD,
and a response abandoned before its first chunk."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from regcache.config import load_config
from regcache_adapters.wsgi import create_app
from support import PKI, CountingRelay, StandardImages, mirror_config

pytestmark = pytest.mark.e2e


def call(app: Any, method: str, path: str, **headers: str) -> tuple[str, dict[str, str], Any]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(),
        **{"HTTP_" + k.upper(): v for k, v in headers.items()},
    }
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(response_headers)

    body = app(environ, start_response)
    return answer["status"], answer["headers"], body


def read(body: Iterable[bytes]) -> bytes:
    try:
        return b"".join(body)
    finally:
        if hasattr(body, "close"):  # PEP 3333: call it when there is one
            body.close()


def test_without_file_wrapper_head_and_abandoned_bodies(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    config = load_config(f'data_dir = "{tmp_path / "data"}"\n' + mirror_config(relay.url, pki), {})
    app = create_app(config)
    try:
        image = images.public
        small, layer = image.blobs[0], image.blobs[-1]
        # Abandoned before the first chunk: the in-flight follower is released.
        status, _, body = call(app, "GET", f"/v2/{image.repository}/blobs/{small.digest}")
        assert status.startswith("200")
        body.close()
        target = f"/v2/{image.repository}/blobs/{layer.digest}"
        status, headers, body = call(app, "GET", target)  # cold: streamed
        assert status == "200 OK" and hashlib.sha256(read(body)).hexdigest() == layer.digest[7:]
        status, headers, body = call(app, "GET", target, RANGE="bytes=10-19")  # cached
        assert status == "206 Partial Content" and headers["Content-Length"] == "10"
        part = read(body)
        status, headers, body = call(app, "HEAD", target)
        assert read(body) == b"" and headers["Content-Length"] == str(layer.size)
        status, _, body = call(app, "GET", target)
        whole = read(body)
        assert hashlib.sha256(whole).hexdigest() == layer.digest[7:] and part == whole[10:20]
        status, _, body = call(app, "GET", f"/v2/{image.repository}/blobs/{small.digest}")
        assert hashlib.sha256(read(body)).hexdigest() == small.digest[7:]
    finally:
        app.close()
