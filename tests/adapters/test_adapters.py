"""The ASGI and WSGI adapters under real servers, pulled through by real skopeo.

Each server runs as its own process on 127.0.0.1 in front of the counting
relay and the real upstream registry; every pulled byte is checked by digest.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
from pathlib import Path

import pytest
from adapter_hosts import ASGI_SERVERS, WSGI_SERVERS, HostFactory

from support import (
    REGISTRY,
    CountingRelay,
    ImageFactory,
    RegistryEntry,
    RegistryMirror,
    Skopeo,
    StandardImages,
    registries_conf,
)

pytestmark = pytest.mark.e2e


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def app_of(server: str) -> str:
    return "adapter_apps:asgi_app" if server in ASGI_SERVERS else "adapter_apps:wsgi_app"


def use_mirror(skopeo: Skopeo, location: str) -> None:
    skopeo.set_registries_conf(
        registries_conf(
            RegistryEntry(
                prefix=REGISTRY,
                location=REGISTRY,
                mirrors=(RegistryMirror(location=location, insecure=True),),
            )
        )
    )


def pull(skopeo: Skopeo, reference: str, dest: Path) -> set[str]:
    result = skopeo.copy(f"docker://{REGISTRY}/{reference}", dest)
    assert result.ok, result.text
    return set(skopeo.verify_dir(dest).blob_digests)


@pytest.mark.parametrize("server", [*ASGI_SERVERS, *WSGI_SERVERS])
def test_skopeo_pulls_cold_then_warm_and_a_bad_fetch_is_cut(
    server: str,
    host_factory: HostFactory,
    relay: CountingRelay,
    skopeo: Skopeo,
    images: StandardImages,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    host = host_factory(server, app_of(server))
    use_mirror(skopeo, host.netloc)
    image = images.public
    # Cold: blobs stream from the in-flight fetch; warm: from the store file.
    assert pull(skopeo, image.reference, tmp_path / "cold") == {b.digest for b in image.blobs}
    assert skopeo.verify_dir(tmp_path / "cold").manifest_digest == image.digest
    assert pull(skopeo, image.reference, tmp_path / "warm") == {b.digest for b in image.blobs}
    for blob in image.blobs:
        assert relay.blob_requests(blob.digest) == 1, "a cached blob was fetched again"

    # A range of a cached blob: the file region, not the whole file.
    layer = image.blobs[-1]
    target = f"/v2/{image.repository}/blobs/{layer.digest}"
    status, headers, part = host.request("GET", target, {"Range": "bytes=100-199"})
    assert status == 206 and headers["content-range"] == f"bytes 100-199/{layer.size}"
    status, _, whole = host.request("GET", target)
    assert status == 200 and sha256(whole) == layer.digest and part == whole[100:200]
    # HEAD: headers only.
    manifest = f"/v2/{image.repository}/manifests/{image.tag}"
    status, headers, body = host.request("HEAD", manifest, {"Accept": image.media_type})
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == len(image.raw)
    assert headers["docker-content-digest"] == image.digest

    # A fetch that turns out corrupt: the client never gets the whole body.
    # A WSGI server sends no headers before the first body chunk, so a fetch
    # that fails before any byte was followed is answered with a 5xx instead.
    spoiled = image_factory.image("public/spoiled", layer_sizes=(8 * 1024 * 1024,), seed="spoil")
    bad = spoiled.blobs[-1]
    relay.corrupt(bad.digest)
    connection = http.client.HTTPConnection("127.0.0.1", host.port, timeout=60)
    try:
        connection.request("GET", f"/v2/public/spoiled/blobs/{bad.digest}")
        response = connection.getresponse()
        if response.status == 200:
            with pytest.raises(http.client.IncompleteRead):
                response.read()
        else:
            assert response.status >= 500 and server in WSGI_SERVERS
            assert sha256(response.read()) != bad.digest
    finally:
        connection.close()
    relay.corrupt(bad.digest, enabled=False)
    status, _, body = host.request("GET", f"/v2/public/spoiled/blobs/{bad.digest}")
    assert status == 200 and sha256(body) == bad.digest


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-trio"])
def test_fastapi_example_serves_the_mirror_under_a_prefix(
    server: str, host_factory: HostFactory, images: StandardImages
) -> None:
    host = host_factory(server, "fastapi_app:app")
    status, _, body = host.request("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, headers, _ = host.request("GET", "/registry/v2/")
    assert status == 200 and headers["docker-distribution-api-version"] == "registry/2.0"
    status, _, _ = host.request("GET", "/v2/")
    assert status == 404, "the registry API lives under the prefix only"
    # A whole pull, as containerd with override_path makes it.
    index = images.multiarch
    status, headers, body = host.request(
        "GET", f"/registry/v2/{index.repository}/manifests/{index.tag}", {"Accept": OCI_INDEX}
    )
    assert status == 200 and sha256(body) == index.digest
    for child in json.loads(body)["manifests"]:
        status, _, raw = host.request(
            "GET",
            f"/registry/v2/{index.repository}/manifests/{child['digest']}",
            {"Accept": child["mediaType"]},
        )
        assert status == 200 and sha256(raw) == child["digest"]
        manifest = json.loads(raw)
        for blob in [manifest["config"], *manifest["layers"]]:
            for _ in range(2):  # cold, then warm
                status, _, data = host.request(
                    "GET", f"/registry/v2/{index.repository}/blobs/{blob['digest']}"
                )
                assert status == 200 and sha256(data) == blob["digest"]
                assert len(data) == blob["size"]


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_the_auth_hook_refuses_requests(
    server: str, host_factory: HostFactory, images: StandardImages
) -> None:
    host = host_factory(server, app_of(server), ADAPTER_TEST_AUTH="1")
    image = images.public
    target = f"/v2/{image.repository}/manifests/{image.tag}"
    accept = {"Accept": image.media_type}

    def basic(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {**accept, "Authorization": f"Basic {token}"}

    status, headers, body = host.request("GET", target, accept)
    assert status == 401
    assert headers["www-authenticate"].startswith("Basic ")
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    status, _, body = host.request("GET", target, basic("puller", "wrong"))
    assert status == 401
    status, _, body = host.request("GET", target, basic("mallory", "s3cret"))
    assert status == 403 and json.loads(body)["errors"][0]["code"] == "DENIED"
    status, _, body = host.request("GET", target, basic("puller", "s3cret"))
    assert status == 200 and sha256(body) == image.digest


def test_twenty_concurrent_cold_pulls_through_wsgi_cause_one_upstream_fetch(
    host_factory: HostFactory, relay: CountingRelay, image_factory: ImageFactory
) -> None:
    image = image_factory.image("public/wsgi-big", layer_sizes=(24 * 1024 * 1024,), seed="wsgi")
    layer = image.blobs[-1]
    host = host_factory("gunicorn", "adapter_apps:wsgi_app")
    results: list[str | BaseException] = []
    lock = threading.Lock()

    def fetch() -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", host.port, timeout=60)
            connection.request("GET", f"/v2/public/wsgi-big/blobs/{layer.digest}")
            response = connection.getresponse()
            digest = hashlib.sha256()
            while chunk := response.read(1024 * 1024):
                digest.update(chunk)
            connection.close()
            outcome: str | BaseException = "sha256:" + digest.hexdigest()
        except BaseException as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert results == [layer.digest] * 20
    served = [
        request
        for request in relay.requests(side="registry")
        if request.method == "GET" and request.path.endswith(layer.digest) and request.status == 200
    ]
    assert len(served) == 1 and served[0].body_bytes == layer.size
