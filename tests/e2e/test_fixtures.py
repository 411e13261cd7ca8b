"""The end-to-end fixtures work against the real registry and real skopeo."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from support import (
    ARM64,
    PKI,
    CountingRelay,
    DirVerificationError,
    EgressProxy,
    ImageBuilder,
    ImageFactory,
    PushedImage,
    PushedIndex,
    RegistryClient,
    RegistryEntry,
    RegistryMirror,
    Scope,
    Skopeo,
    StandardImages,
    TokenIssuer,
    UpstreamRegistry,
    decode_jwt,
    registries_conf,
)

pytestmark = pytest.mark.e2e


def _get(
    host: str,
    port: int,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection: http.client.HTTPConnection
    if context is not None:
        connection = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        try:
            body = response.read()
        except http.client.IncompleteRead as short:
            body = short.partial
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _pull_token(issuer: TokenIssuer, repository: str) -> str:
    return issuer.mint("", [Scope("repository", repository, ("pull",))])


# -- token auth on the real registry ---------------------------------------------


def test_registry_requires_a_token_from_the_issuer(
    upstream: UpstreamRegistry, token_issuer: TokenIssuer, images: StandardImages, pki: PKI
) -> None:
    context = pki.client_ssl_context()
    status, headers, _ = _get(upstream.host, upstream.port, "/v2/", context=context)
    assert status == 401
    assert headers["www-authenticate"] == (
        f'Bearer realm="{token_issuer.realm}",service="{token_issuer.service}"'
    )

    manifest_path = f"/v2/{images.public.repository}/manifests/v1"
    status, headers, _ = _get(upstream.host, upstream.port, manifest_path, context=context)
    assert status == 401
    assert 'scope="repository:public/app:pull"' in headers["www-authenticate"]

    # A token for another repository is refused with insufficient_scope.
    other = _pull_token(token_issuer, "public/other")
    status, headers, _ = _get(
        upstream.host,
        upstream.port,
        manifest_path,
        headers={"Authorization": f"Bearer {other}"},
        context=context,
    )
    assert status == 401
    assert 'error="insufficient_scope"' in headers["www-authenticate"]

    token = _pull_token(token_issuer, images.public.repository)
    status, headers, body = _get(
        upstream.host,
        upstream.port,
        manifest_path,
        headers={"Authorization": f"Bearer {token}", "Accept": images.public.media_type},
        context=context,
    )
    assert status == 200
    assert body == images.public.raw
    assert headers["docker-content-digest"] == images.public.digest


def test_issuer_grants_by_user_and_repository(token_issuer: TokenIssuer, pki: PKI) -> None:
    context = pki.client_ssl_context()
    query = "/token?service=regcache-test-registry&scope=repository:public/a:pull,push"
    query += "&scope=repository:private/b:pull"

    status, _, body = _get("127.0.0.1", token_issuer.port, query, context=context)
    assert status == 200
    document = json.loads(body)
    assert document["token"] == document["access_token"]
    assert document["expires_in"] == 300
    assert document["issued_at"].endswith("Z")
    header, claims = decode_jwt(document["token"])
    assert header["alg"] == "ES256"
    assert base64.b64decode(header["x5c"][0]) == pki.signing_cert_der()
    assert claims["aud"] == "regcache-test-registry"
    assert claims["iss"] == "regcache-test-issuer"
    assert claims["access"] == [
        {"type": "repository", "name": "public/a", "actions": ["pull"]},
        {"type": "repository", "name": "private/b", "actions": []},
    ]

    auth = {"Authorization": _basic("alice", "alice-password")}
    status, _, body = _get("127.0.0.1", token_issuer.port, query, headers=auth, context=context)
    assert status == 200
    _, claims = decode_jwt(json.loads(body)["token"])
    assert claims["sub"] == "alice"
    assert [a["actions"] for a in claims["access"]] == [["pull", "push"], ["pull"]]

    bad = {"Authorization": _basic("alice", "wrong")}
    status, headers, _ = _get("127.0.0.1", token_issuer.port, query, headers=bad, context=context)
    assert status == 401
    assert headers["www-authenticate"].startswith("Basic ")

    token_issuer.omit_expires_in = True
    token_issuer.only_access_token = True
    status, _, body = _get("127.0.0.1", token_issuer.port, query, context=context)
    assert set(json.loads(body)) == {"access_token", "issued_at"}

    token_issuer.fail_status = 503
    assert _get("127.0.0.1", token_issuer.port, query, context=context)[0] == 503

    records = token_issuer.requests()
    assert [(r.username, r.authenticated, r.status) for r in records] == [
        (None, False, 200),
        ("alice", True, 200),
        ("alice", False, 401),
        (None, False, 200),
        (None, False, 503),
    ]
    assert records[0].scopes == ("repository:public/a:pull,push", "repository:private/b:pull")
    assert "wrong" not in repr(records)


# -- skopeo straight from the upstream -------------------------------------------


def test_public_image_pulls_anonymously(
    upstream: UpstreamRegistry, images: StandardImages, skopeo: Skopeo, tmp_path: Path
) -> None:
    for pushed in (images.public, images.public_docker):
        dest = tmp_path / pushed.repository.replace("/", "-")
        skopeo.copy(f"docker://{upstream.netloc}/{pushed.reference}", dest).check()
        contents = skopeo.verify_dir(dest, pushed.digest)
        assert contents.manifest_media_type == pushed.media_type
        assert contents.blob_digests == {blob.digest for blob in pushed.blobs}


def test_private_image_needs_credentials(
    upstream: UpstreamRegistry,
    images: StandardImages,
    skopeo: Skopeo,
    tmp_path: Path,
    upstream_credentials: tuple[str, str],
) -> None:
    ref = f"docker://{upstream.netloc}/{images.private.reference}"
    anonymous = skopeo.copy(ref, tmp_path / "anonymous")
    assert not anonymous.ok
    assert "authentication required" in anonymous.stderr

    skopeo.copy(ref, tmp_path / "alice", creds=upstream_credentials).check()
    contents = skopeo.verify_dir(tmp_path / "alice", images.private.digest)
    assert contents.blob_digests == {blob.digest for blob in images.private.blobs}


@pytest.mark.parametrize("which", ["multiarch", "multiarch_docker"])
def test_multiarch_copies_every_platform(
    upstream: UpstreamRegistry, images: StandardImages, skopeo: Skopeo, tmp_path: Path, which: str
) -> None:
    index: PushedIndex = getattr(images, which)
    ref = f"docker://{upstream.netloc}/{index.reference}"
    skopeo.copy(ref, tmp_path / "all", all_platforms=True).check()
    contents = skopeo.verify_dir(tmp_path / "all", index.digest)
    assert contents.manifest_media_type == index.media_type
    assert contents.manifest_digests == {index.digest} | {m.digest for m in index.manifests}
    assert contents.blob_digests == {blob.digest for blob in index.blobs}

    # Without --all, one platform is chosen: pin it so the test does not
    # depend on the machine.
    skopeo.copy(ref, tmp_path / "arm64", extra_args=["--override-arch", "arm64"]).check()
    arm64 = index.index.for_platform(ARM64)
    contents = skopeo.verify_dir(tmp_path / "arm64", arm64.digest)
    assert contents.blob_digests == {blob.digest for blob in arm64.blobs}


def test_inspect_raw_returns_the_pushed_bytes(
    upstream: UpstreamRegistry, images: StandardImages, skopeo: Skopeo
) -> None:
    result = skopeo.inspect(f"docker://{upstream.netloc}/{images.multiarch.reference}").check()
    assert result.stdout == images.multiarch.raw


def test_verify_dir_detects_tampering(
    upstream: UpstreamRegistry, images: StandardImages, skopeo: Skopeo, tmp_path: Path
) -> None:
    dest = tmp_path / "copy"
    skopeo.copy(f"docker://{upstream.netloc}/{images.public.reference}", dest).check()
    with pytest.raises(DirVerificationError):
        skopeo.verify_dir(dest, images.public_docker.digest)
    layer = dest / images.public.manifest.layers[0].digest.removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 1
    layer.write_bytes(bytes(data))
    with pytest.raises(DirVerificationError):
        skopeo.verify_dir(dest)
    layer.unlink()
    with pytest.raises(DirVerificationError):
        skopeo.verify_dir(dest)


def test_image_builder_is_deterministic(tmp_path: Path, image_builder: ImageBuilder) -> None:
    other = ImageBuilder(tmp_path / "other")
    first = image_builder.index("determinism", (10, 70_000))
    second = other.index("determinism", (10, 70_000))
    assert first.raw == second.raw
    assert first.blobs[1].path.read_bytes() == second.blobs[1].path.read_bytes()
    assert first.digest != other.index("determinism-2", (10, 70_000)).digest
    for blob in first.blobs:
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == blob.digest
        assert blob.path.stat().st_size == blob.size


def test_chunked_push_and_delete(
    upstream: UpstreamRegistry, image_factory: ImageFactory, upstream_client: RegistryClient
) -> None:
    pushed = image_factory.image("private/chunked", "v1", (5000, 1), chunk_size=1024)
    assert upstream_client.tags("private/chunked") == ["v1"]
    for blob in pushed.blobs:
        assert upstream_client.get_blob(pushed.repository, blob.digest).body == blob.read_bytes()
    assert upstream_client.delete_manifest(pushed.repository, pushed.digest).status == 202
    assert upstream_client.get_manifest(pushed.repository, "v1").status == 404


# -- the registry process --------------------------------------------------------


def test_open_registry_restarts_with_its_data_and_ignores_registry_env(
    open_upstream: UpstreamRegistry,
    image_builder: ImageBuilder,
    skopeo: Skopeo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = RegistryClient(open_upstream.url)
    assert client.ping().status == 200
    pushed = client.push_image("some/app", image_builder.image("open", (100,)), "v1")
    port = open_upstream.port

    # docker-registry would read this as http.addr if it got through.
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:1")
    open_upstream.restart()
    assert open_upstream.port == port
    assert open_upstream.running

    ref = f"docker://{open_upstream.netloc}/{pushed.reference}"
    skopeo.copy(ref, tmp_path / "copy", tls_verify=False).check()
    skopeo.verify_dir(tmp_path / "copy", pushed.digest)
    counts = open_upstream.request_counts()
    assert counts[("GET", "/v2/some/app/manifests/v1")] == 1
    assert counts[("PUT", "/v2/some/app/manifests/v1")] == 1

    open_upstream.stop()
    assert not open_upstream.running
    with pytest.raises(OSError):
        client.ping()


# -- the counting relay ----------------------------------------------------------


def test_relay_counts_one_get_per_blob(
    relay: CountingRelay, images: StandardImages, skopeo: Skopeo, tmp_path: Path
) -> None:
    pushed = images.public
    skopeo.copy(f"docker://{relay.netloc}/{pushed.reference}", tmp_path / "c", tls_verify=False)
    skopeo.verify_dir(tmp_path / "c", pushed.digest)
    sent = relay.bytes_sent()
    for blob in pushed.blobs:
        assert relay.blob_requests(blob.digest) == 1
        assert sent[f"/v2/{pushed.repository}/blobs/{blob.digest}"] == blob.size
    assert relay.count("GET", f"/v2/{pushed.repository}/manifests/v1") == 1
    assert all(r.side == "registry" and r.complete for r in relay.requests())


def test_relay_corruption_makes_skopeo_fail(
    relay: CountingRelay, images: StandardImages, skopeo: Skopeo, tmp_path: Path
) -> None:
    layer = images.public.manifest.layers[1]
    relay.corrupt(layer.digest)
    result = skopeo.copy(
        f"docker://{relay.netloc}/{images.public.reference}", tmp_path / "c", tls_verify=False
    )
    assert not result.ok
    assert "Digest did not match" in result.stderr
    assert relay.blob_bytes_sent(layer.digest) == layer.size


def test_relay_drops_then_serves_ranges(
    relay: CountingRelay, images: StandardImages, token_issuer: TokenIssuer
) -> None:
    pushed = images.public
    layer = pushed.manifest.layers[1]
    path = f"/v2/{pushed.repository}/blobs/{layer.digest}"
    auth = {"Authorization": f"Bearer {_pull_token(token_issuer, pushed.repository)}"}
    relay.drop_after(layer.digest, 1000, times=1)

    status, headers, first = _get(relay.host, relay.port, path, headers=auth)
    assert status == 200
    assert headers["content-length"] == str(layer.size)
    assert len(first) == 1000

    status, headers, rest = _get(
        relay.host, relay.port, path, headers={**auth, "Range": f"bytes={len(first)}-"}
    )
    assert status == 206
    assert headers["content-range"] == f"bytes 1000-{layer.size - 1}/{layer.size}"
    assert first + rest == layer.read_bytes()
    assert [r.complete for r in relay.requests()] == [False, True]
    assert relay.requests()[1].range == "bytes=1000-"


def test_relay_redirects_blobs_to_the_cdn(
    relay: CountingRelay,
    images: StandardImages,
    skopeo: Skopeo,
    tmp_path: Path,
    token_issuer: TokenIssuer,
) -> None:
    pushed = images.public_docker
    relay.redirect_blobs(True)
    skopeo.copy(f"docker://{relay.netloc}/{pushed.reference}", tmp_path / "c", tls_verify=False)
    skopeo.verify_dir(tmp_path / "c", pushed.digest)
    cdn = relay.cdn_requests()
    assert sorted(r.path for r in cdn) == sorted(f"/cdn/{b.digest}" for b in pushed.blobs)
    assert not any(r.authorization for r in cdn)
    registry_side = [r for r in relay.requests("registry") if "/blobs/" in r.path]
    assert {r.status for r in registry_side} == {307}

    # Without a token the relay does not redirect: it passes on the 401.
    layer = pushed.manifest.layers[0]
    blob_path = f"/v2/{pushed.repository}/blobs/{layer.digest}"
    status, headers, _ = _get(relay.host, relay.port, blob_path)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer ")

    auth = {"Authorization": f"Bearer {_pull_token(token_issuer, pushed.repository)}"}
    status, headers, _ = _get(relay.host, relay.port, blob_path, headers=auth)
    assert status == 307
    location = headers["location"]
    assert location.startswith(f"{relay.cdn_url}/cdn/{layer.digest}?sig=")
    cdn_target = location.removeprefix(relay.cdn_url)
    # A leaked Authorization header is refused, as S3 does.
    status, _, _ = _get(relay.cdn_host, relay.cdn_port, cdn_target, headers=auth)
    assert status == 400
    status, _, body = _get(relay.cdn_host, relay.cdn_port, cdn_target)
    assert status == 200
    assert body == layer.read_bytes()
    status, _, _ = _get(relay.cdn_host, relay.cdn_port, f"/cdn/{layer.digest}?sig=forged")
    assert status == 403
    assert relay.cdn_requests()[-3].authorization


def test_relay_forwards_chunked_pushes(
    relay: CountingRelay,
    image_builder: ImageBuilder,
    upstream_client: RegistryClient,
    upstream_credentials: tuple[str, str],
    pki: PKI,
) -> None:
    user, password = upstream_credentials
    client = RegistryClient(relay.url, ca_file=pki.ca_pem, username=user, password=password)
    image = image_builder.image("through-relay", (70_000,))
    client.push_image("private/through-relay", image, "v1", chunk_size=30_000)
    # Upload URLs point back at the relay, so every step went through it.
    methods = [r.method for r in relay.requests() if "/blobs/uploads/" in r.path]
    assert methods.count("PATCH") == 3 + 1
    assert methods.count("PUT") == 2
    assert upstream_client.get_manifest("private/through-relay", "v1").body == image.raw


def test_relay_fails_on_demand(
    relay: CountingRelay, images: StandardImages, skopeo: Skopeo, tmp_path: Path
) -> None:
    ref = f"docker://{relay.netloc}/{images.public.reference}"
    relay.fail_with(503, retry_after=1)
    result = skopeo.inspect(ref, tls_verify=False)
    assert not result.ok
    assert "503" in result.stderr
    status, headers, _ = _get(relay.host, relay.port, "/v2/")
    assert (status, headers["retry-after"]) == (503, "1")

    relay.fail_with(429, times=1)
    assert _get(relay.host, relay.port, "/v2/")[0] == 429
    assert _get(relay.host, relay.port, "/v2/")[0] == 401
    relay.fail_with(None)
    assert skopeo.inspect(ref, tls_verify=False).check().stdout == images.public.raw


def test_skopeo_uses_a_registries_conf_mirror(
    relay: CountingRelay,
    upstream: UpstreamRegistry,
    images: StandardImages,
    skopeo: Skopeo,
    tmp_path: Path,
) -> None:
    # upstream.regcache.test does not resolve: only the mirror can serve.
    primary = f"upstream.regcache.test:{upstream.port}"
    skopeo.set_registries_conf(
        registries_conf(
            RegistryEntry(
                prefix=primary,
                mirrors=(RegistryMirror(relay.netloc, insecure=True, pull_from_mirror="all"),),
            )
        )
    )
    pushed: PushedImage = images.public
    skopeo.copy(f"docker://{primary}/{pushed.reference}", tmp_path / "c").check()
    skopeo.verify_dir(tmp_path / "c", pushed.digest)
    assert relay.count("GET", f"/v2/{pushed.repository}/manifests/v1") == 1


# -- the egress proxy ------------------------------------------------------------


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    curl = shutil.which("curl")
    assert curl is not None
    return subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_egress_proxy_tunnels_only_mapped_hosts(
    egress_proxy: EgressProxy, upstream: UpstreamRegistry, pki: PKI
) -> None:
    target = f"upstream.regcache.test:{upstream.port}"
    done = _curl("--proxy", egress_proxy.url, "--cacert", str(pki.ca_pem), f"https://{target}/v2/")
    assert done.stdout == "401", done.stderr
    assert egress_proxy.targets() == [target]

    refused = _curl("--proxy", egress_proxy.url, f"https://elsewhere.test:{upstream.port}/v2/")
    assert refused.returncode != 0
    assert "403" in refused.stderr
    assert egress_proxy.records()[-1].status == 403
    assert egress_proxy.targets() == [target]


def test_egress_proxy_checks_proxy_credentials(upstream: UpstreamRegistry, pki: PKI) -> None:
    with EgressProxy({"upstream.regcache.test": "127.0.0.1"}, users={"ops": "s3cret"}) as proxy:
        url = f"https://upstream.regcache.test:{upstream.port}/v2/"
        denied = _curl("--proxy", proxy.url, "--cacert", str(pki.ca_pem), url)
        assert "407" in denied.stderr
        allowed = _curl(
            "--proxy", proxy.url_with_credentials("ops"), "--cacert", str(pki.ca_pem), url
        )
        assert allowed.stdout == "401", allowed.stderr
        assert [(r.status, r.proxy_user) for r in proxy.records()] == [(407, None), (200, "ops")]


@pytest.mark.slow
def test_relay_streams_twenty_concurrent_large_blobs(
    relay: CountingRelay, image_factory: ImageFactory, token_issuer: TokenIssuer
) -> None:
    pushed = image_factory.image("public/large", "v1", (100 << 20,))
    layer = pushed.manifest.layers[0]
    token = _pull_token(token_issuer, pushed.repository)
    url = f"{relay.url}/v2/{pushed.repository}/blobs/{layer.digest}"
    # cksum (CRC32) rather than sha256sum: hashing 2 GiB would dominate the
    # run on a small machine, and a CRC catches any mixed-up or missing byte.
    script = 'curl -sS --fail --max-time 120 -H "$AUTH" "$URL" | cksum'
    env = {"PATH": "/usr/bin:/bin", "AUTH": f"Authorization: Bearer {token}", "URL": url}
    clients = [
        subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(20)
    ]
    outputs = [client.communicate(timeout=180)[0] for client in clients]
    assert [client.returncode for client in clients] == [0] * 20
    with layer.path.open("rb") as source:
        expected = subprocess.run(
            ["cksum"], stdin=source, capture_output=True, text=True, check=True
        ).stdout
    assert set(outputs) == {expected}
    assert relay.blob_requests(layer.digest) == 20
    assert relay.blob_bytes_sent(layer.digest) == 20 * layer.size
