"""The mirror front end against a real registry, pulled by real skopeo.

The upstream is Debian's docker-registry with TLS and token auth; a counting
relay sits in front of it where a test needs to see or spoil the bytes.
regcache runs as its own process, started and stopped by each test.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import (
    PKI,
    REGISTRY,
    CountingRelay,
    EgressProxy,
    ImageFactory,
    Regcache,
    RegistryEntry,
    RegistryMirror,
    Skopeo,
    StandardImages,
    UpstreamRegistry,
    mirror_config,
    registries_conf,
    sha256,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def regcache_dir(tmp_path: Path) -> Path:
    return tmp_path / "regcache"


@pytest.fixture
def mirror(regcache_dir: Path, relay: CountingRelay, pki: PKI) -> Iterator[Regcache]:
    """regcache in front of the counting relay, anonymous upstream access."""
    with Regcache(regcache_dir, mirror_config(relay.url, pki)) as process:
        yield process
    assert process.exit_code == 0, process.log()[-4000:]


def use_mirror(skopeo: Skopeo, mirror: Regcache) -> None:
    """Point skopeo's registries.conf at the mirror for the test registry's name."""
    skopeo.set_registries_conf(
        registries_conf(
            RegistryEntry(
                prefix=REGISTRY,
                location=REGISTRY,
                mirrors=(RegistryMirror(location=mirror.netloc, insecure=True),),
            )
        )
    )


def pull(skopeo: Skopeo, reference: str, dest: Path, **kwargs: object) -> set[str]:
    """skopeo copy through the mirror; every byte checked; the blob digests seen."""
    result = skopeo.copy(f"docker://{REGISTRY}/{reference}", dest, **kwargs)  # type: ignore[arg-type]
    assert result.ok, result.text
    return set(skopeo.verify_dir(dest).blob_digests)


def test_skopeo_pulls_through_the_mirror_and_the_second_pull_is_served_from_cache(
    mirror: Regcache, relay: CountingRelay, skopeo: Skopeo, images: StandardImages, tmp_path: Path
) -> None:
    use_mirror(skopeo, mirror)
    image = images.public
    seen = pull(skopeo, image.reference, tmp_path / "first")
    assert seen == {blob.digest for blob in image.blobs}
    contents = skopeo.verify_dir(tmp_path / "first")
    assert contents.manifest_digest == image.digest
    first_counts = {blob.digest: relay.blob_requests(blob.digest) for blob in image.blobs}
    assert all(count == 1 for count in first_counts.values()), first_counts

    pull(skopeo, image.reference, tmp_path / "second")
    for blob in image.blobs:
        assert relay.blob_requests(blob.digest) == 1, "a cached blob was fetched again"
    log = mirror.log()
    assert " hit " in log and " miss " in log


@pytest.mark.parametrize("which", ["multiarch", "multiarch_docker"])
def test_index_is_kept_whole_and_every_platform_pulls(
    mirror: Regcache, skopeo: Skopeo, images: StandardImages, tmp_path: Path, which: str
) -> None:
    use_mirror(skopeo, mirror)
    index = getattr(images, which)
    seen = pull(skopeo, index.reference, tmp_path / "all", all_platforms=True)
    assert seen == {blob.digest for blob in index.blobs}
    status, headers, body = mirror.request(
        "GET",
        f"/v2/{index.repository}/manifests/{index.tag}",
        {"Accept": index.media_type},
    )
    assert status == 200
    assert body == index.raw, "the index must be the upstream's exact bytes"
    assert headers["docker-content-digest"] == index.digest
    assert headers["content-type"] == index.media_type


def test_docker_manifest_and_client_accept_negotiation(
    mirror: Regcache, images: StandardImages
) -> None:
    image = images.public_docker
    target = f"/v2/{image.repository}/manifests/{image.tag}"
    status, headers, body = mirror.request("GET", target, {"Accept": image.media_type})
    assert status == 200 and body == image.raw and sha256(body) == image.digest
    assert headers["etag"] == f'"{image.digest}"'
    assert int(headers["content-length"]) == len(image.raw)
    status, headers, body = mirror.request("HEAD", target, {"Accept": image.media_type})
    assert status == 200 and body == b""
    assert headers["docker-content-digest"] == image.digest


def test_ns_parameter_and_path_prefixes_reach_the_same_registry(
    mirror: Regcache, images: StandardImages
) -> None:
    image = images.public
    accept = {"Accept": image.media_type}
    tail = f"{image.repository}/manifests/{image.tag}"
    status, headers, body = mirror.request("GET", f"/v2/{tail}?ns={REGISTRY}", accept)
    assert status == 200 and sha256(body) == image.digest
    assert headers["oci-namespace"] == REGISTRY
    for prefix in ("testreg", REGISTRY):
        status, headers, body = mirror.request("GET", f"/v2/{prefix}/{tail}", accept)
        assert status == 200 and sha256(body) == image.digest, prefix
        assert "oci-namespace" not in headers
    layer = image.blobs[-1]
    status, _, body = mirror.request("GET", f"/v2/testreg/{image.repository}/blobs/{layer.digest}")
    assert status == 200 and sha256(body) == layer.digest


def test_unconfigured_namespace_and_hostile_names_are_refused(mirror: Regcache) -> None:
    status, _, body = mirror.request(
        "GET", "/v2/library/nginx/manifests/latest?ns=evil.example.com"
    )
    assert status == 403
    assert json.loads(body)["errors"][0]["code"] == "DENIED"
    for target in (
        "/v2/public/../private/app/manifests/v1",
        "/v2/public/%2e%2e/app/manifests/v1",
        "/v2/Public/App/manifests/v1",
        "/v2/public//app/manifests/v1",
    ):
        status, _, body = mirror.request("GET", target)
        assert status in (400, 404), target
        assert json.loads(body)["errors"][0]["code"] in ("NAME_INVALID", "NAME_UNKNOWN"), target


def test_push_and_delete_are_unsupported(mirror: Regcache, images: StandardImages) -> None:
    status, _, body = mirror.request("POST", "/v2/public/app/blobs/uploads/")
    assert status == 405
    assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
    image = images.public
    status, _, _ = mirror.request("DELETE", f"/v2/public/app/manifests/{image.digest}")
    assert status == 405


def test_ping_tags_catalog_and_referrers(mirror: Regcache, images: StandardImages) -> None:
    status, headers, _ = mirror.request("GET", "/v2/")
    assert status == 200
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    image = images.public
    status, _, body = mirror.request("GET", f"/v2/{image.repository}/tags/list")
    assert status == 200 and image.tag in json.loads(body)["tags"]
    mirror.request(
        "GET", f"/v2/{image.repository}/manifests/{image.tag}", {"Accept": image.media_type}
    )
    status, _, body = mirror.request("GET", "/v2/_catalog")
    assert status == 200
    assert f"{REGISTRY}/{image.repository}" in json.loads(body)["repositories"]
    # docker-registry 2.8 has no referrers API: the fallback answers an index.
    status, headers, body = mirror.request(
        "GET", f"/v2/{image.repository}/referrers/{image.digest}"
    )
    assert status == 200
    assert headers["content-type"] == "application/vnd.oci.image.index.v1+json"
    assert json.loads(body)["manifests"] == []


def test_range_requests_on_a_cached_blob(mirror: Regcache, images: StandardImages) -> None:
    layer = images.public.blobs[-1]
    target = f"/v2/{images.public.repository}/blobs/{layer.digest}"
    status, _, whole = mirror.request("GET", target)
    assert status == 200 and sha256(whole) == layer.digest
    status, headers, part = mirror.request("GET", target, {"Range": "bytes=100-199"})
    assert status == 206
    assert headers["content-range"] == f"bytes 100-199/{layer.size}"
    assert part == whole[100:200]
    status, _, _ = mirror.request("GET", target, {"Range": f"bytes={layer.size}-"})
    assert status == 416


def test_head_of_an_uncached_blob_is_answered_from_upstream(
    mirror: Regcache, relay: CountingRelay, images: StandardImages
) -> None:
    layer = images.public_docker.blobs[-1]
    status, headers, body = mirror.request(
        "HEAD", f"/v2/{images.public_docker.repository}/blobs/{layer.digest}"
    )
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == layer.size
    assert relay.blob_requests(layer.digest, method="HEAD")
    assert not relay.blob_requests(layer.digest, method="GET")


def test_redirected_blobs_are_fetched_without_the_registry_authorization(
    mirror: Regcache, relay: CountingRelay, skopeo: Skopeo, images: StandardImages, tmp_path: Path
) -> None:
    relay.redirect_blobs(True)
    use_mirror(skopeo, mirror)
    image = images.public
    assert pull(skopeo, image.reference, tmp_path / "pulled") == {b.digest for b in image.blobs}
    cdn = relay.cdn_requests()
    assert cdn, "the blobs did not go through the CDN redirect"
    assert all(not request.authorization for request in cdn)
    assert all(request.status == 200 for request in cdn)


def test_a_corrupted_blob_is_never_cached_nor_delivered_whole(
    mirror: Regcache, relay: CountingRelay, images: StandardImages
) -> None:
    image = images.public_docker
    layer = image.blobs[-1]
    relay.corrupt(layer.digest)
    target = f"/v2/{image.repository}/blobs/{layer.digest}"
    connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        if response.status == 200:
            # The answer started while the blob streamed in: it is cut short.
            with pytest.raises(http.client.IncompleteRead):
                response.read()
        else:
            # The whole (small) blob arrived and failed verification before
            # the answer started: an error, never the bytes.
            assert response.status == 502
            assert "does not match" in json.loads(response.read())["errors"][0]["message"]
    finally:
        connection.close()
    store = mirror.data_dir / "store" / "blobs" / "sha256" / layer.digest[7:9] / layer.digest[7:]
    assert not store.exists()
    assert "does not match" in mirror.log()
    relay.corrupt(layer.digest, enabled=False)
    status, _, body = mirror.request("GET", target)
    assert status == 200 and sha256(body) == layer.digest


def test_a_dropped_upstream_connection_is_resumed_with_a_range(
    mirror: Regcache, relay: CountingRelay, image_factory: ImageFactory
) -> None:
    image = image_factory.image("public/resume", layer_sizes=(3 * 1024 * 1024,), seed="resume")
    layer = image.blobs[-1]
    relay.drop_after(layer.digest, 1024 * 1024, times=2)
    status, _, body = mirror.request("GET", f"/v2/public/resume/blobs/{layer.digest}")
    assert status == 200 and sha256(body) == layer.digest
    ranges = [
        request.range
        for request in relay.requests(side="registry")
        if request.method == "GET" and request.path.endswith(layer.digest) and request.status != 401
    ]
    assert ranges[0] is None
    assert len(ranges) == 3 and all(r and r.startswith("bytes=") for r in ranges[1:]), ranges


def test_upstream_down_serves_cached_tags_stale_and_fails_uncached_clearly(
    regcache_dir: Path, upstream: UpstreamRegistry, pki: PKI, images: StandardImages
) -> None:
    config = mirror_config(upstream.url, pki, tag_ttl="1s")
    with Regcache(regcache_dir, config) as mirror:
        image = images.public
        target = f"/v2/{image.repository}/manifests/{image.tag}"
        status, _, body = mirror.request("GET", target, {"Accept": image.media_type})
        assert status == 200
        layer = image.blobs[-1]
        status, _, _ = mirror.request("GET", f"/v2/{image.repository}/blobs/{layer.digest}")
        assert status == 200
        upstream.stop()
        import time

        time.sleep(1.2)  # past tag_ttl, so the tag must be revalidated
        status, _, stale = mirror.request("GET", target, {"Accept": image.media_type})
        assert status == 200 and stale == body
        assert "stale" in mirror.log()
        status, _, _ = mirror.request("GET", f"/v2/{image.repository}/manifests/{image.digest}")
        assert status == 200
        status, _, blob = mirror.request("GET", f"/v2/{image.repository}/blobs/{layer.digest}")
        assert status == 200 and sha256(blob) == layer.digest
        other = images.public_docker
        status, _, body = mirror.request(
            "GET", f"/v2/{other.repository}/manifests/{other.tag}", {"Accept": other.media_type}
        )
        assert status in (502, 503)
        assert "unreachable" in json.loads(body)["errors"][0]["message"]


def test_private_content_is_not_readable_after_a_restart_without_credentials(
    regcache_dir: Path,
    upstream: UpstreamRegistry,
    pki: PKI,
    images: StandardImages,
    upstream_credentials: tuple[str, str],
) -> None:
    private = images.private
    layer = private.blobs[-1]
    accept = {"Accept": private.media_type}
    with_credentials = mirror_config(upstream.url, pki, credentials=upstream_credentials)
    mirror = Regcache(regcache_dir, with_credentials).start()
    try:
        status, _, body = mirror.request(
            "GET", f"/v2/{private.repository}/manifests/{private.tag}", accept
        )
        assert status == 200 and sha256(body) == private.digest
        status, _, body = mirror.request("GET", f"/v2/{private.repository}/blobs/{layer.digest}")
        assert status == 200 and sha256(body) == layer.digest
        mirror.restart(mirror_config(upstream.url, pki))
        for target in (
            f"/v2/{private.repository}/manifests/{private.tag}",
            f"/v2/{private.repository}/manifests/{private.digest}",
            f"/v2/{private.repository}/blobs/{layer.digest}",
            f"/v2/public/app/manifests/{private.digest}",
            f"/v2/public/app/blobs/{layer.digest}",
        ):
            status, _, body = mirror.request("GET", target, accept)
            assert status in (401, 403, 404), (target, status)
            assert sha256(body) != layer.digest and sha256(body) != private.digest
        assert upstream_credentials[1] not in mirror.log()
    finally:
        assert mirror.stop() == 0


@pytest.mark.parametrize("where", ["upstream", "registry"])
def test_pulls_through_an_egress_proxy_only(
    regcache_dir: Path,
    pki: PKI,
    upstream: UpstreamRegistry,
    token_issuer: object,
    skopeo: Skopeo,
    images: StandardImages,
    tmp_path: Path,
    where: str,
) -> None:
    """[upstream] proxy, or a registry's own proxy, carries every upstream connection."""
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(REGISTRY, 443)
    relay = CountingRelay(upstream.url, ca_file=pki.ca_pem, cdn_url_host="cdn.regcache.test")
    issuer_host = "127.0.0.1"
    with (
        relay,
        EgressProxy(
            {REGISTRY: "127.0.0.1", "cdn.regcache.test": "127.0.0.2", issuer_host: "127.0.0.1"}
        ) as egress,
    ):
        relay.redirect_blobs(True)
        url = f"http://{REGISTRY}:{relay.port}"
        if where == "upstream":
            config = mirror_config(url, pki, proxy=egress.url)
        else:
            config = mirror_config(url, pki, registry_proxy=egress.url)
        with Regcache(regcache_dir, config) as mirror:
            use_mirror(skopeo, mirror)
            image = images.public
            assert pull(skopeo, image.reference, tmp_path / "pulled") == {
                b.digest for b in image.blobs
            }
        targets = set(egress.targets())
        assert f"{REGISTRY}:{relay.port}" in targets
        assert any(target.startswith("cdn.regcache.test:") for target in targets)
        assert any(target.startswith(f"{issuer_host}:") for target in targets), targets
        assert relay.cdn_requests()


@pytest.mark.slow
def test_twenty_concurrent_cold_pulls_of_one_blob_cause_one_upstream_fetch(
    mirror: Regcache, relay: CountingRelay, image_factory: ImageFactory
) -> None:
    image = image_factory.image("public/big", layer_sizes=(100 * 1024 * 1024,), seed="big")
    layer = image.blobs[-1]
    results: list[str | BaseException] = []
    lock = threading.Lock()

    def fetch() -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=120)
            connection.request("GET", f"/v2/public/big/blobs/{layer.digest}")
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
        thread.join(180)
    assert len(results) == 20
    assert results == [layer.digest] * 20
    # One GET that carried the blob (a token challenge may precede it), and
    # the blob's bytes crossed the upstream link once.
    served = [
        request
        for request in relay.requests(side="registry")
        if request.method == "GET" and request.path.endswith(layer.digest) and request.status == 200
    ]
    assert len(served) == 1 and served[0].body_bytes == layer.size
    # Everything else sent for this digest is small error bodies (401s).
    assert relay.blob_bytes_sent(layer.digest) < layer.size + 4096
