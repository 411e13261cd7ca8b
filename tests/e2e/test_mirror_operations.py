"""The mirror under an operator's conditions: shutdown mid-pull, clients that
leave, client authentication, and upstream mirrors that fail."""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest

from regcache.core import hash_password
from support import (
    PKI,
    CountingRelay,
    ImageFactory,
    Regcache,
    StandardImages,
    mirror_config,
    open_blob,
    sha256,
    slow_upstream,
    store_path,
    wait_for,
)

pytestmark = pytest.mark.e2e


def test_sigterm_mid_pull_commits_nothing_and_exits_zero(
    tmp_path: Path, relay: CountingRelay, pki: PKI, image_factory: ImageFactory
) -> None:
    image = image_factory.image("public/shutdown", layer_sizes=(8 * 1024 * 1024,), seed="shutdown")
    layer = image.blobs[-1]
    slow_upstream(relay, layer.digest)
    mirror = Regcache(tmp_path / "rc", mirror_config(relay.url, pki)).start()
    try:
        connection, response = open_blob(mirror.port, f"/v2/public/shutdown/blobs/{layer.digest}")
        assert response.status == 200
        received = response.read(512 * 1024)
        assert len(received) == 512 * 1024
        assert any((mirror.data_dir / "store" / "tmp").iterdir()), "no partial file while pulling"
    finally:
        assert mirror.stop() == 0, mirror.log()[-3000:]
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        response.read()
    connection.close()
    assert not store_path(mirror.data_dir, layer.digest).exists()
    assert not any((mirror.data_dir / "store" / "tmp").iterdir())
    # The next run fetches it again, whole.
    relay.latency = 0
    with Regcache(tmp_path / "rc", mirror_config(relay.url, pki)) as again:
        status, _, body = again.request("GET", f"/v2/public/shutdown/blobs/{layer.digest}")
        assert status == 200 and sha256(body) == layer.digest


def test_a_client_that_leaves_does_not_stop_the_fetch_for_others(
    tmp_path: Path, relay: CountingRelay, pki: PKI, image_factory: ImageFactory
) -> None:
    image = image_factory.image("public/leaver", layer_sizes=(8 * 1024 * 1024,), seed="leaver")
    layer = image.blobs[-1]
    target = f"/v2/public/leaver/blobs/{layer.digest}"
    slow_upstream(relay, layer.digest)
    with Regcache(tmp_path / "rc", mirror_config(relay.url, pki)) as mirror:
        leaver, response = open_blob(mirror.port, target)
        assert response.status == 200
        response.read(1024)
        leaver.close()
        status, _, body = mirror.request("GET", target)
        assert status == 200 and sha256(body) == layer.digest
        # The verified blob is sent while it is made durable: the commit may
        # land a moment after the answer.
        assert wait_for(store_path(mirror.data_dir, layer.digest).exists)
        served = [
            request
            for request in relay.requests(side="registry")
            if request.method == "GET"
            and request.path.endswith(layer.digest)
            and request.status in (200, 206)
        ]
        # One fetch: the first GET (dropped by the relay after 1 MiB) and its resume.
        assert [request.status for request in served] == [200, 206]
        assert "joined" in mirror.log()


def test_mirror_users_must_authenticate(tmp_path: Path, relay: CountingRelay, pki: PKI) -> None:
    encoded = hash_password("s3cret-pass", salt=os.urandom(16), iterations=1000)
    config = mirror_config(relay.url, pki).replace(
        "[upstream]", f'users = {{ ci = "{encoded}" }}\n[upstream]', 1
    )
    with Regcache(tmp_path / "rc", config) as mirror:
        status, headers, body = mirror.request("GET", "/v2/")
        assert status == 401
        assert headers["www-authenticate"].startswith("Basic ")
        assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
        wrong = base64.b64encode(b"ci:nope").decode()
        status, _, _ = mirror.request("GET", "/v2/", {"Authorization": f"Basic {wrong}"})
        assert status == 401
        right = base64.b64encode(b"ci:s3cret-pass").decode()
        for _ in range(2):  # the second check is served from the verified set
            status, _, _ = mirror.request("GET", "/v2/", {"Authorization": f"Basic {right}"})
            assert status == 200
        assert "s3cret-pass" not in mirror.log()


def test_upstream_mirrors_are_tried_in_order(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    failing = CountingRelay(relay.upstream_url, ca_file=pki.ca_pem)
    with failing:
        failing.fail_with(503)
        config = mirror_config(relay.url, pki, mirrors=("http://127.0.0.1:9", failing.url))
        with Regcache(tmp_path / "rc", config) as mirror:
            image = images.public
            status, _, body = mirror.request(
                "GET", f"/v2/{image.repository}/manifests/{image.tag}", {"Accept": image.media_type}
            )
            assert status == 200 and sha256(body) == image.digest
            log = mirror.log()
        assert failing.requests(side="registry"), "the second mirror was not tried"
        assert all(request.status == 503 for request in failing.requests(side="registry"))
        assert relay.count("GET", f"/v2/{image.repository}/manifests/{image.tag}") >= 1
        assert "127.0.0.1:9 unreachable" in log and "answered 503" in log


def test_concurrent_clients_of_a_slow_fetch_all_get_every_byte(
    tmp_path: Path, relay: CountingRelay, pki: PKI, image_factory: ImageFactory
) -> None:
    image = image_factory.image("public/slow", layer_sizes=(4 * 1024 * 1024,), seed="slowfan")
    layer = image.blobs[-1]
    slow_upstream(relay, layer.digest, seconds=1.0)
    results: list[str] = []
    with Regcache(tmp_path / "rc", mirror_config(relay.url, pki)) as mirror:

        def fetch() -> None:
            _, _, body = mirror.request("GET", f"/v2/public/slow/blobs/{layer.digest}")
            results.append(sha256(body))

        threads = [threading.Thread(target=fetch) for _ in range(5)]
        for thread in threads:
            thread.start()
            time.sleep(0.2)  # clients arrive while the fetch runs
        for thread in threads:
            thread.join(60)
    assert results == [layer.digest] * 5
    # All five followed one fetch: the first GET (dropped after 1 MiB) and
    # its resume, nothing more.
    served = [
        request.status
        for request in relay.requests(side="registry")
        if request.method == "GET"
        and request.path.endswith(layer.digest)
        and request.status in (200, 206)
    ]
    assert served == [200, 206]
