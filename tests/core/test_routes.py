"""The request router: every endpoint, every routing rule, every refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcache.core._digest import Digest
from regcache.core._errors import ConfigError, ErrorCode, RegcacheError, RemoteProtocolError
from regcache.core._reference import RegistryMap, validate_repository, validate_tag
from regcache.core._routes import (
    MAX_PAGE_SIZE,
    MAX_TARGET_LENGTH,
    MAX_UPLOAD_ID_LENGTH,
    BlobRoute,
    Catalog,
    ManifestRoute,
    Ping,
    Referrers,
    Route,
    TagsList,
    WriteKind,
    WriteOperation,
    parse_route,
)

SHA = "sha256:" + "0123456789abcdef" * 4
DIGEST = Digest.parse(SHA)
SHA512 = "sha512:" + "ab" * 64

REGISTRIES = RegistryMap.build(
    {
        "docker.io": ["dockerhub", "registry-1.docker.io"],
        "registry.k8s.io": ["k8s"],
        "ghcr.io": [],
        "quay.io": ["quay"],
        "localhost:5000": ["local"],
    }
)
OPEN = RegistryMap.build({"docker.io": ["dockerhub"], "ghcr.io": []}, allow_unknown_registries=True)


def route(method: str, target: str, **kwargs: object) -> Route:
    return parse_route(method, target, REGISTRIES, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Every endpoint of the spec's table, plus the catalog

ENDPOINTS = [
    # end-1
    ("GET", "/v2/", Ping()),
    ("HEAD", "/v2/", Ping()),
    ("GET", "/v2", Ping()),
    ("GET", "/v2/?ns=docker.io", Ping()),
    # end-2
    ("GET", f"/v2/library/nginx/blobs/{SHA}", BlobRoute("docker.io", "library/nginx", DIGEST)),
    (
        "HEAD",
        f"/v2/library/nginx/blobs/{SHA}",
        BlobRoute("docker.io", "library/nginx", DIGEST, head=True),
    ),
    ("GET", f"/v2/a/b/blobs/{SHA512}", BlobRoute("docker.io", "a/b", Digest.parse(SHA512))),
    # end-3
    (
        "GET",
        "/v2/library/nginx/manifests/latest",
        ManifestRoute("docker.io", "library/nginx", "latest"),
    ),
    (
        "HEAD",
        "/v2/library/nginx/manifests/1.25",
        ManifestRoute("docker.io", "library/nginx", "1.25", head=True),
    ),
    (
        "GET",
        f"/v2/library/nginx/manifests/{SHA}",
        ManifestRoute("docker.io", "library/nginx", DIGEST),
    ),
    ("GET", "/v2/a/manifests/V1_x.y-z", ManifestRoute("docker.io", "library/a", "V1_x.y-z")),
    # end-4a, end-4b, end-4c, end-11
    (
        "POST",
        "/v2/a/b/blobs/uploads/",
        WriteOperation(WriteKind.END_4A_UPLOAD_START, "docker.io", "a/b"),
    ),
    (
        "POST",
        "/v2/a/b/blobs/uploads",
        WriteOperation(WriteKind.END_4A_UPLOAD_START, "docker.io", "a/b"),
    ),
    (
        "POST",
        f"/v2/a/b/blobs/uploads/?digest={SHA}",
        WriteOperation(WriteKind.END_4B_UPLOAD_MONOLITHIC, "docker.io", "a/b", digest=DIGEST),
    ),
    (
        "POST",
        "/v2/a/b/blobs/uploads/?digest-algorithm=sha512",
        WriteOperation(
            WriteKind.END_4C_UPLOAD_START_ALGORITHM, "docker.io", "a/b", digest_algorithm="sha512"
        ),
    ),
    (
        "POST",
        f"/v2/a/b/blobs/uploads/?mount={SHA}&from=c/d",
        WriteOperation(WriteKind.END_11_MOUNT, "docker.io", "a/b", digest=DIGEST, mount_from="c/d"),
    ),
    (
        "POST",
        f"/v2/a/b/blobs/uploads/?mount={SHA}&from=nginx",
        WriteOperation(
            WriteKind.END_11_MOUNT, "docker.io", "a/b", digest=DIGEST, mount_from="library/nginx"
        ),
    ),
    (
        "POST",
        f"/v2/a/b/blobs/uploads/?mount={SHA}",
        WriteOperation(WriteKind.END_11_MOUNT, "docker.io", "a/b", digest=DIGEST),
    ),
    # end-5, end-6, end-13, end-14
    (
        "PATCH",
        "/v2/a/b/blobs/uploads/4f2c-9a_b.c=",
        WriteOperation(WriteKind.END_5_UPLOAD_CHUNK, "docker.io", "a/b", upload_id="4f2c-9a_b.c="),
    ),
    (
        "PUT",
        f"/v2/a/b/blobs/uploads/u1?digest={SHA}&_state=xyz",
        WriteOperation(
            WriteKind.END_6_UPLOAD_COMPLETE, "docker.io", "a/b", digest=DIGEST, upload_id="u1"
        ),
    ),
    (
        "GET",
        "/v2/a/b/blobs/uploads/u1",
        WriteOperation(WriteKind.END_13_UPLOAD_STATUS, "docker.io", "a/b", upload_id="u1"),
    ),
    (
        "DELETE",
        "/v2/a/b/blobs/uploads/u1",
        WriteOperation(WriteKind.END_14_UPLOAD_CANCEL, "docker.io", "a/b", upload_id="u1"),
    ),
    # end-7, end-9, end-10
    (
        "PUT",
        "/v2/a/b/manifests/v1",
        WriteOperation(WriteKind.END_7_MANIFEST_PUT, "docker.io", "a/b", reference="v1"),
    ),
    (
        "PUT",
        f"/v2/a/b/manifests/{SHA}?tag=v1&tag=v2",
        WriteOperation(
            WriteKind.END_7_MANIFEST_PUT, "docker.io", "a/b", reference=DIGEST, tags=("v1", "v2")
        ),
    ),
    (
        "DELETE",
        "/v2/a/b/manifests/v1",
        WriteOperation(WriteKind.END_9_MANIFEST_DELETE, "docker.io", "a/b", reference="v1"),
    ),
    (
        "DELETE",
        f"/v2/a/b/manifests/{SHA}",
        WriteOperation(WriteKind.END_9_MANIFEST_DELETE, "docker.io", "a/b", reference=DIGEST),
    ),
    (
        "DELETE",
        f"/v2/a/b/blobs/{SHA}",
        WriteOperation(WriteKind.END_10_BLOB_DELETE, "docker.io", "a/b", digest=DIGEST),
    ),
    # end-8a, end-8b
    ("GET", "/v2/a/b/tags/list", TagsList("docker.io", "a/b")),
    ("GET", "/v2/a/b/tags/list?n=0", TagsList("docker.io", "a/b", n=0)),
    ("GET", "/v2/a/b/tags/list?n=50&last=v1.2", TagsList("docker.io", "a/b", n=50, last="v1.2")),
    ("GET", f"/v2/a/b/tags/list?n={MAX_PAGE_SIZE}", TagsList("docker.io", "a/b", n=MAX_PAGE_SIZE)),
    # end-12a, end-12b
    ("GET", f"/v2/a/b/referrers/{SHA}", Referrers("docker.io", "a/b", DIGEST)),
    (
        "GET",
        f"/v2/a/b/referrers/{SHA}?artifactType=application/vnd.example.sbom%2Bjson",
        Referrers("docker.io", "a/b", DIGEST, "application/vnd.example.sbom+json"),
    ),
    (
        "GET",
        f"/v2/a/b/referrers/{SHA}?artifactType=application%2Fvnd.cncf.notary.signature",
        Referrers("docker.io", "a/b", DIGEST, "application/vnd.cncf.notary.signature"),
    ),
    # catalog
    ("GET", "/v2/_catalog", Catalog("docker.io")),
    ("GET", "/v2/_catalog?n=10&last=library/nginx", Catalog("docker.io", 10, "library/nginx")),
    ("GET", "/v2/_catalog?ns=ghcr.io", Catalog("ghcr.io", namespace_from_ns=True)),
    ("GET", "/v2/quay/_catalog", Catalog("quay.io")),
    ("GET", "/v2/ghcr.io/_catalog?n=1", Catalog("ghcr.io", 1)),
    # Repository components may be named like endpoint words.
    ("GET", "/v2/blobs/manifests/x", ManifestRoute("docker.io", "library/blobs", "x")),
    ("GET", f"/v2/a/blobs/b/blobs/{SHA}", BlobRoute("docker.io", "a/blobs/b", DIGEST)),
    ("GET", "/v2/a/manifests/b/tags/list", TagsList("docker.io", "a/manifests/b")),
    ("GET", "/v2/tags/list/manifests/list", ManifestRoute("docker.io", "tags/list", "list")),
    ("GET", "/v2/a/uploads/manifests/x", ManifestRoute("docker.io", "a/uploads", "x")),
    ("GET", "/v2/referrers/tags/list", TagsList("docker.io", "library/referrers")),
]


@pytest.mark.parametrize(("method", "target", "expected"), ENDPOINTS)
def test_endpoints(method: str, target: str, expected: Route) -> None:
    assert route(method, target) == expected


def test_every_write_endpoint_is_covered() -> None:
    kinds = {r.kind for _, _, r in ENDPOINTS if isinstance(r, WriteOperation)}
    assert kinds == set(WriteKind)
    assert {kind.value for kind in WriteKind} == {
        "end-4a",
        "end-4b",
        "end-4c",
        "end-5",
        "end-6",
        "end-7",
        "end-9",
        "end-10",
        "end-11",
        "end-13",
        "end-14",
    }


def test_write_refusal_is_unsupported() -> None:
    operation = route("PUT", "/v2/a/b/manifests/v1")
    assert isinstance(operation, WriteOperation)
    error = operation.refusal()
    assert error.code is ErrorCode.UNSUPPORTED
    assert error.status == 405
    assert "end-7" in error.message


# --------------------------------------------------------------------------
# Routing rules

ROUTING = [
    # Rule 4: the default registry, with Docker Hub normalisation.
    ("/v2/nginx/manifests/latest", {}, ("docker.io", "library/nginx", False)),
    ("/v2/library/nginx/manifests/latest", {}, ("docker.io", "library/nginx", False)),
    ("/v2/bitnami/redis/manifests/latest", {}, ("docker.io", "bitnami/redis", False)),
    # A single component is always a repository, even when it is an alias or a host.
    ("/v2/dockerhub/manifests/latest", {}, ("docker.io", "library/dockerhub", False)),
    ("/v2/ghcr.io/manifests/latest", {}, ("docker.io", "library/ghcr.io", False)),
    # Rule 2: a configured alias or host as the leading component.
    ("/v2/dockerhub/nginx/manifests/latest", {}, ("docker.io", "library/nginx", False)),
    ("/v2/dockerhub/library/nginx/manifests/latest", {}, ("docker.io", "library/nginx", False)),
    ("/v2/docker.io/nginx/manifests/latest", {}, ("docker.io", "library/nginx", False)),
    ("/v2/index.docker.io/nginx/manifests/latest", {}, ("docker.io", "library/nginx", False)),
    ("/v2/registry-1.docker.io/a/b/manifests/latest", {}, ("docker.io", "a/b", False)),
    ("/v2/ghcr.io/org/app/manifests/latest", {}, ("ghcr.io", "org/app", False)),
    ("/v2/ghcr.io/app/manifests/latest", {}, ("ghcr.io", "app", False)),
    ("/v2/k8s.gcr.io/pause/manifests/3.9", {}, ("registry.k8s.io", "pause", False)),
    ("/v2/k8s/pause/manifests/3.9", {}, ("registry.k8s.io", "pause", False)),
    ("/v2/local/a/manifests/x", {}, ("localhost:5000", "a", False)),
    ("/v2/localhost:5000/a/manifests/x", {}, ("localhost:5000", "a", False)),
    # Rule 1: ns= wins over everything, and the whole path is the repository.
    ("/v2/library/nginx/manifests/latest?ns=docker.io", {}, ("docker.io", "library/nginx", True)),
    ("/v2/nginx/manifests/latest?ns=docker.io", {}, ("docker.io", "library/nginx", True)),
    ("/v2/org/app/manifests/latest?ns=ghcr.io", {}, ("ghcr.io", "org/app", True)),
    ("/v2/org/app/manifests/latest?ns=GHCR.IO", {}, ("ghcr.io", "org/app", True)),
    ("/v2/pause/manifests/3.9?ns=k8s.gcr.io", {}, ("registry.k8s.io", "pause", True)),
    ("/v2/ghcr.io/app/manifests/x?ns=quay.io", {}, ("quay.io", "ghcr.io/app", True)),
    ("/v2/a/manifests/x?ns=docker.io", {"host": "ghcr.io"}, ("docker.io", "library/a", True)),
    # Rule 3: the CONNECT host; path prefixes are off by default there.
    ("/v2/org/app/manifests/x", {"host": "ghcr.io"}, ("ghcr.io", "org/app", False)),
    ("/v2/org/app/manifests/x", {"host": "GHCR.io:443"}, ("ghcr.io", "org/app", False)),
    (
        "/v2/library/nginx/manifests/x",
        {"host": "registry-1.docker.io"},
        ("docker.io", "library/nginx", False),
    ),
    (
        "/v2/nginx/manifests/x",
        {"host": "index.docker.io:443"},
        ("docker.io", "library/nginx", False),
    ),
    ("/v2/a/manifests/x", {"host": "localhost:5000"}, ("localhost:5000", "a", False)),
    ("/v2/quay/app/manifests/x", {"host": "ghcr.io"}, ("ghcr.io", "quay/app", False)),
    ("/v2/ghcr.io/app/manifests/x", {"host": "quay.io"}, ("quay.io", "ghcr.io/app", False)),
    # ... unless asked for, and then rule 2 comes before rule 3.
    (
        "/v2/quay/app/manifests/x",
        {"host": "ghcr.io", "registry_prefixes": True},
        ("quay.io", "app", False),
    ),
    # Prefixes can be turned off for the mirror too.
    ("/v2/quay/app/manifests/x", {"registry_prefixes": False}, ("docker.io", "quay/app", False)),
]


@pytest.mark.parametrize(("target", "kwargs", "expected"), ROUTING)
def test_routing(target: str, kwargs: dict[str, object], expected: tuple[str, str, bool]) -> None:
    result = route("GET", target, **kwargs)
    assert isinstance(result, ManifestRoute)
    assert (result.registry, result.repository, result.namespace_from_ns) == expected


@pytest.mark.parametrize(
    ("target", "kwargs", "expected"),
    [
        ("/v2/org/app/manifests/x?ns=r.example.com", {}, ("r.example.com", "org/app", True)),
        ("/v2/org/app/manifests/x?ns=INDEX.docker.io", {}, ("docker.io", "org/app", True)),
        (
            "/v2/r.example.com:8443/org/app/manifests/x",
            {},
            ("r.example.com:8443", "org/app", False),
        ),
        ("/v2/localhost/app/manifests/x", {}, ("localhost", "app", False)),
        ("/v2/[::1]:5000/app/manifests/x", {}, ("[::1]:5000", "app", False)),
        (
            "/v2/my.group/app/manifests/x",
            {"host": "registry.gitlab.com"},
            ("registry.gitlab.com", "my.group/app", False),
        ),
        ("/v2/app/manifests/x", {"host": "R.Example.com:443"}, ("r.example.com", "app", False)),
        (
            "/v2/app/manifests/x",
            {"host": "r.example.com:8443"},
            ("r.example.com:8443", "app", False),
        ),
    ],
)
def test_routing_unknown_registries_when_allowed(
    target: str, kwargs: dict[str, object], expected: tuple[str, str, bool]
) -> None:
    result = parse_route("GET", target, OPEN, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, ManifestRoute)
    assert (result.registry, result.repository, result.namespace_from_ns) == expected


def test_routing_default_registry_other_than_docker_hub() -> None:
    registries = RegistryMap.build({"ghcr.io": ["gh"], "docker.io": []}, default_registry="gh")
    result = parse_route("GET", "/v2/app/manifests/x", registries)
    assert result == ManifestRoute("ghcr.io", "app", "x")
    result = parse_route("GET", "/v2/docker.io/app/manifests/x", registries)
    assert result == ManifestRoute("docker.io", "library/app", "x")


@pytest.mark.parametrize(
    ("target", "kwargs", "fragment"),
    [
        ("/v2/a/manifests/x?ns=evil.example", {}, "registry from ns= 'evil.example'"),
        ("/v2/evil.example/a/manifests/x", {}, "registry prefix 'evil.example'"),
        ("/v2/localhost/a/manifests/x", {}, "registry prefix 'localhost'"),
        ("/v2/evil.example:5000/a/manifests/x", {}, "'evil.example:5000'"),
        (
            "/v2/a/manifests/x",
            {"host": "registry.gitlab.com"},
            "registry host 'registry.gitlab.com'",
        ),
        ("/v2/evil.example/_catalog", {}, "'evil.example'"),
        ("/v2/_catalog?ns=evil.example", {}, "'evil.example'"),
        ("/v2/_catalog", {"host": "evil.example"}, "'evil.example'"),
    ],
)
def test_unconfigured_registry_is_denied(
    target: str, kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        route("GET", target, **kwargs)
    assert info.value.code is ErrorCode.DENIED
    assert info.value.status == 403
    assert fragment in info.value.message
    assert "is not configured" in info.value.message
    assert "allow_unknown_registries" in info.value.message
    assert "[registries." in info.value.message


# --------------------------------------------------------------------------
# Refusals

REFUSALS = [
    # Not the registry API.
    ("GET", "", ErrorCode.NAME_UNKNOWN, 404, "starting with '/v2/'"),
    ("GET", "*", ErrorCode.NAME_UNKNOWN, 404, "starting with '/v2/'"),
    ("GET", "http://ghcr.io/v2/", ErrorCode.NAME_UNKNOWN, 404, "starting with '/v2/'"),
    ("GET", "/", ErrorCode.NAME_UNKNOWN, 404, "not a registry API path"),
    ("GET", "/v1/_ping", ErrorCode.NAME_UNKNOWN, 404, "not a registry API path"),
    ("GET", "/v2x/", ErrorCode.NAME_UNKNOWN, 404, "not a registry API path"),
    ("GET", "/V2/", ErrorCode.NAME_UNKNOWN, 404, "not a registry API path"),
    ("GET", "/v2/a/b", ErrorCode.NAME_UNKNOWN, 404, "not a registry API endpoint"),
    ("GET", "/v2/a/tags/lists", ErrorCode.NAME_UNKNOWN, 404, "not a registry API endpoint"),
    ("GET", "/v2/a/b/_catalog", ErrorCode.NAME_UNKNOWN, 404, "not a registry API endpoint"),
    ("GET", "/v2/a/uploads/x", ErrorCode.NAME_UNKNOWN, 404, "not a registry API endpoint"),
    # Anything that could escape or confuse a path.
    ("GET", "/v2/a/%2e%2e/manifests/x", ErrorCode.NAME_INVALID, 400, "percent-encoding"),
    ("GET", "/v2/a%2Fb/manifests/x", ErrorCode.NAME_INVALID, 400, "percent-encoding"),
    ("GET", "/v2/a/manifests/%41", ErrorCode.NAME_INVALID, 400, "percent-encoding"),
    ("GET", "/v2/a/../manifests/x", ErrorCode.NAME_INVALID, 400, "'..' segment"),
    ("GET", "/v2/../v2/a/manifests/x", ErrorCode.NAME_INVALID, 400, "'..' segment"),
    ("GET", "/v2/a/./manifests/x", ErrorCode.NAME_INVALID, 400, "'..' segment"),
    ("GET", "/v2/a/manifests/..", ErrorCode.NAME_INVALID, 400, "'..' segment"),
    ("GET", "/v2/a/blobs/uploads/..", ErrorCode.NAME_INVALID, 400, "'..' segment"),
    ("GET", "/v2/a..b/manifests/x", ErrorCode.NAME_INVALID, 400, "contains '..'"),
    ("GET", "/v2//a/manifests/x", ErrorCode.NAME_INVALID, 400, "double slash"),
    ("GET", "/v2/a//b/manifests/x", ErrorCode.NAME_INVALID, 400, "double slash"),
    ("GET", "/v2/a/manifests//x", ErrorCode.NAME_INVALID, 400, "double slash"),
    ("GET", "/v2/a/manifests/x/", ErrorCode.NAME_INVALID, 400, "ends with a slash"),
    ("GET", "/v2/a/tags/list/", ErrorCode.NAME_INVALID, 400, "ends with a slash"),
    ("GET", "/v2/_catalog/", ErrorCode.NAME_INVALID, 400, "ends with a slash"),
    ("GET", "/v2/A/manifests/x", ErrorCode.NAME_INVALID, 400, "upper case"),
    (
        "GET",
        "/v2/a/Bc/manifests/x",
        ErrorCode.NAME_INVALID,
        400,
        "component 2 ('Bc') has upper case",
    ),
    ("GET", "/v2/GHCR.io/a/manifests/x", ErrorCode.NAME_INVALID, 400, "must be lower case"),
    ("GET", "/v2/Dockerhub/a/manifests/x", ErrorCode.NAME_INVALID, 400, "upper case"),
    ("GET", "/v2/a\x00/manifests/x", ErrorCode.NAME_INVALID, 400, "illegal character '\\x00'"),
    ("GET", "/v2/a\r\n/manifests/x", ErrorCode.NAME_INVALID, 400, "illegal character '\\r'"),
    ("GET", "/v2/a b/manifests/x", ErrorCode.NAME_INVALID, 400, "illegal character ' '"),
    ("GET", "/v2/a\\b/manifests/x", ErrorCode.NAME_INVALID, 400, "illegal character '\\\\'"),
    ("GET", "/v2/\u00e4/manifests/x", ErrorCode.NAME_INVALID, 400, "illegal character"),
    ("GET", "/v2/a/manifests/x#frag", ErrorCode.NAME_INVALID, 400, "illegal character '#'"),
    ("GET", "/v2/a_/manifests/x", ErrorCode.NAME_INVALID, 400, "must start and end"),
    ("GET", "/v2/" + "a" * 256 + "/manifests/x", ErrorCode.NAME_INVALID, 400, "the limit is 255"),
    ("GET", "/v2/" + "a" * 250 + "/manifests/x", ErrorCode.NAME_INVALID, 400, "the limit is 255"),
    ("GET", "/v2/" + "a/" * 5000 + "manifests/x", ErrorCode.NAME_INVALID, 414, "the limit is 8192"),
    ("GET", "/v2/manifests/x", ErrorCode.NAME_INVALID, 400, "names no repository"),
    ("GET", "/v2/blobs/uploads/u1", ErrorCode.NAME_INVALID, 400, "names no repository"),
    ("POST", "/v2/blobs/uploads/", ErrorCode.NAME_INVALID, 400, "names no repository"),
    ("GET", "/v2/dockerhub/_/manifests/x", ErrorCode.NAME_INVALID, 400, "must start and end"),
    ("GET", "/v2/a.b_c/x/manifests/y", ErrorCode.NAME_INVALID, 400, "not a host name"),
    ("GET", "/v2/library/_catalog", ErrorCode.NAME_INVALID, 400, "only a configured registry"),
    ("GET", "/v2/quay/_catalog?ns=ghcr.io", ErrorCode.NAME_INVALID, 400, "not together with ns="),
    # Digests, tags and upload ids.
    ("GET", "/v2/a/blobs/sha256:abc", ErrorCode.DIGEST_INVALID, 400, "64 lower-case hex"),
    ("GET", "/v2/a/blobs/" + SHA.upper(), ErrorCode.DIGEST_INVALID, 400, "not supported"),
    ("GET", "/v2/a/blobs/latest", ErrorCode.DIGEST_INVALID, 400, "no algorithm prefix"),
    ("GET", "/v2/a/blobs/md5:" + "a" * 32, ErrorCode.DIGEST_INVALID, 400, "not supported"),
    ("GET", "/v2/a/manifests/sha256:abc", ErrorCode.DIGEST_INVALID, 400, "64 lower-case hex"),
    ("GET", "/v2/a/referrers/v1", ErrorCode.DIGEST_INVALID, 400, "no algorithm prefix"),
    ("DELETE", "/v2/a/blobs/x", ErrorCode.DIGEST_INVALID, 400, "no algorithm prefix"),
    ("GET", "/v2/a/manifests/-x", ErrorCode.MANIFEST_UNKNOWN, 404, "invalid tag '-x'"),
    ("GET", "/v2/a/manifests/" + "t" * 129, ErrorCode.MANIFEST_UNKNOWN, 404, "the limit is 128"),
    ("GET", "/v2/a/manifests/a@b", ErrorCode.MANIFEST_UNKNOWN, 404, "illegal character '@'"),
    ("PUT", "/v2/a/manifests/x?tag=-bad", ErrorCode.UNSUPPORTED, 400, "query parameter tag"),
    ("GET", "/v2/a/blobs/uploads/a:b", ErrorCode.BLOB_UPLOAD_UNKNOWN, 404, "upload session id"),
    (
        "PATCH",
        "/v2/a/blobs/uploads/" + "u" * (MAX_UPLOAD_ID_LENGTH + 1),
        ErrorCode.BLOB_UPLOAD_UNKNOWN,
        404,
        "upload session id",
    ),
    ("PUT", "/v2/a/blobs/uploads/u1", ErrorCode.DIGEST_INVALID, 400, "needs a ?digest="),
    (
        "PUT",
        "/v2/a/blobs/uploads/u1?digest=sha256:x",
        ErrorCode.DIGEST_INVALID,
        400,
        "query parameter digest",
    ),
    (
        "POST",
        "/v2/a/blobs/uploads/?digest=x",
        ErrorCode.DIGEST_INVALID,
        400,
        "query parameter digest",
    ),
    (
        "POST",
        "/v2/a/blobs/uploads/?mount=x&from=b",
        ErrorCode.DIGEST_INVALID,
        400,
        "query parameter mount",
    ),
    (
        "POST",
        f"/v2/a/blobs/uploads/?mount={SHA}&from=B",
        ErrorCode.NAME_INVALID,
        400,
        "query parameter from",
    ),
    (
        "POST",
        f"/v2/a/blobs/uploads/?mount={SHA}&from=../x",
        ErrorCode.NAME_INVALID,
        400,
        "query parameter from",
    ),
    (
        "POST",
        "/v2/a/blobs/uploads/?digest-algorithm=md5",
        ErrorCode.DIGEST_INVALID,
        400,
        "not supported",
    ),
    # Query parameters.
    ("GET", "/v2/a/tags/list?n=", ErrorCode.UNSUPPORTED, 400, "not a non-negative integer"),
    ("GET", "/v2/a/tags/list?n=-1", ErrorCode.UNSUPPORTED, 400, "not a non-negative integer"),
    ("GET", "/v2/a/tags/list?n=1.5", ErrorCode.UNSUPPORTED, 400, "not a non-negative integer"),
    ("GET", "/v2/a/tags/list?n=%2B5", ErrorCode.UNSUPPORTED, 400, "not a non-negative integer"),
    ("GET", "/v2/a/tags/list?n=1_000", ErrorCode.UNSUPPORTED, 400, "not a non-negative integer"),
    ("GET", "/v2/a/tags/list?n=%D9%A1", ErrorCode.UNSUPPORTED, 400, "not a non-negative integer"),
    (
        "GET",
        "/v2/a/tags/list?n=" + "9" * 50,
        ErrorCode.UNSUPPORTED,
        400,
        "not a non-negative integer",
    ),
    (
        "GET",
        f"/v2/a/tags/list?n={MAX_PAGE_SIZE + 1}",
        ErrorCode.UNSUPPORTED,
        400,
        "above the limit",
    ),
    ("GET", "/v2/a/tags/list?n=1&n=2", ErrorCode.UNSUPPORTED, 400, "given 2 times"),
    ("GET", "/v2/a/tags/list?last=-x", ErrorCode.UNSUPPORTED, 400, "query parameter last"),
    ("GET", "/v2/a/tags/list?last=a%2Fb", ErrorCode.UNSUPPORTED, 400, "query parameter last"),
    ("GET", "/v2/_catalog?last=Library/x", ErrorCode.UNSUPPORTED, 400, "query parameter last"),
    ("GET", "/v2/_catalog?n=x", ErrorCode.UNSUPPORTED, 400, "not a non-negative integer"),
    (
        "GET",
        f"/v2/a/referrers/{SHA}?artifactType=nonsense",
        ErrorCode.UNSUPPORTED,
        400,
        "not a media type",
    ),
    (
        "GET",
        f"/v2/a/referrers/{SHA}?artifactType=a/b%0A",
        ErrorCode.UNSUPPORTED,
        400,
        "control character",
    ),
    ("GET", "/v2/a/tags/list?n=%zz", ErrorCode.UNSUPPORTED, 400, "malformed percent-escape"),
    ("GET", "/v2/a/tags/list?n=%4", ErrorCode.UNSUPPORTED, 400, "malformed percent-escape"),
    ("GET", "/v2/a/tags/list?last=%FF", ErrorCode.UNSUPPORTED, 400, "not UTF-8"),
    ("GET", "/v2/a/tags/list?last=%00", ErrorCode.UNSUPPORTED, 400, "control character"),
    ("GET", "/v2/a/tags/list?last=a b", ErrorCode.UNSUPPORTED, 400, "illegal character ' '"),
    ("GET", "/v2/a/tags/list?last=\u00e9", ErrorCode.UNSUPPORTED, 400, "illegal character"),
    ("GET", "/v2/a/manifests/x?ns=", ErrorCode.NAME_INVALID, 400, "ns= is empty"),
    ("GET", "/v2/a/manifests/x?ns=a/b", ErrorCode.NAME_INVALID, 400, "not a host name"),
    ("GET", "/v2/a/manifests/x?ns=ghcr.io&ns=quay.io", ErrorCode.UNSUPPORTED, 400, "given 2 times"),
]


@pytest.mark.parametrize(("method", "target", "code", "status", "fragment"), REFUSALS)
def test_refusals(method: str, target: str, code: ErrorCode, status: int, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        route(method, target)
    assert info.value.code is code
    assert info.value.status == status
    assert fragment in info.value.message


def test_target_length_limit() -> None:
    assert MAX_TARGET_LENGTH == 8192
    target = "/v2/a/tags/list?x=" + "y" * (MAX_TARGET_LENGTH - 18)
    assert len(target) == MAX_TARGET_LENGTH
    assert route("GET", target) == TagsList("docker.io", "library/a")
    with pytest.raises(RemoteProtocolError) as info:
        route("GET", target + "y")
    assert info.value.status == 414


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        ("POST", "/v2/", "GET, HEAD"),
        ("PUT", "/v2", "GET, HEAD"),
        ("get", "/v2/", "GET, HEAD"),
        ("HEAD", "/v2/_catalog", "GET"),
        ("POST", f"/v2/a/blobs/{SHA}", "GET, HEAD, DELETE"),
        ("POST", "/v2/a/manifests/x", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/v2/a/manifests/x", "GET, HEAD, PUT, DELETE"),
        ("HEAD", "/v2/a/tags/list", "GET"),
        ("DELETE", "/v2/a/tags/list", "GET"),
        ("HEAD", f"/v2/a/referrers/{SHA}", "GET"),
        ("GET", "/v2/a/blobs/uploads/", "POST"),
        ("PUT", "/v2/a/blobs/uploads", "POST"),
        ("POST", "/v2/a/blobs/uploads/u1", "GET, PATCH, PUT, DELETE"),
        ("HEAD", "/v2/a/blobs/uploads/u1", "GET, PATCH, PUT, DELETE"),
        ("OPTIONS", "/v2/a/manifests/x", "GET, HEAD, PUT, DELETE"),
    ],
)
def test_unknown_method_is_unsupported(method: str, target: str, allow: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        route(method, target)
    assert info.value.code is ErrorCode.UNSUPPORTED
    assert info.value.status == 405
    assert info.value.headers == (("Allow", allow),)


# --------------------------------------------------------------------------
# The registry map


def test_registry_map_names() -> None:
    assert dict(REGISTRIES.names) == {
        "docker.io": "docker.io",
        "dockerhub": "docker.io",
        "registry-1.docker.io": "docker.io",
        "index.docker.io": "docker.io",
        "registry.k8s.io": "registry.k8s.io",
        "k8s": "registry.k8s.io",
        "k8s.gcr.io": "registry.k8s.io",
        "ghcr.io": "ghcr.io",
        "quay.io": "quay.io",
        "quay": "quay.io",
        "localhost:5000": "localhost:5000",
        "local": "localhost:5000",
    }
    assert REGISTRIES.default_registry == "docker.io"
    assert REGISTRIES.allow_unknown_registries is False
    assert REGISTRIES.registries == {
        "docker.io",
        "registry.k8s.io",
        "ghcr.io",
        "quay.io",
        "localhost:5000",
    }
    assert REGISTRIES.lookup("DockerHub") == "docker.io"
    assert REGISTRIES.lookup("gcr.io") is None


def test_registry_map_build_normalises() -> None:
    registries = RegistryMap.build(
        {"INDEX.docker.io": ["Hub"], "k8s.gcr.io": []}, default_registry="HUB"
    )
    assert registries.default_registry == "docker.io"
    assert registries.lookup("hub") == "docker.io"
    assert registries.lookup("index.docker.io") == "docker.io"
    # A configured k8s.gcr.io is its own registry; the well-known alias does not apply.
    assert registries.lookup("k8s.gcr.io") == "k8s.gcr.io"
    assert registries.lookup("registry.k8s.io") is None


def test_registry_map_direct_construction_lower_cases() -> None:
    registries = RegistryMap("docker.io", {"Docker.IO": "Docker.IO"})
    assert dict(registries.names) == {"docker.io": "docker.io"}
    assert hash(registries) == hash(RegistryMap("docker.io", {"x": "y"}))


@pytest.mark.parametrize(
    ("registries", "kwargs", "key_path", "fragment"),
    [
        ({"not a host": []}, {}, 'registries."not a host"', "not a host name"),
        ({"docker.io": ["a/b"]}, {}, 'registries."docker.io".aliases', "single path segment"),
        ({"docker.io": ["Bad_"]}, {}, 'registries."docker.io".aliases', "single path segment"),
        ({"docker.io": ["library"]}, {}, 'registries."docker.io".aliases', "official namespace"),
        (
            {"docker.io": ["hub"], "ghcr.io": ["hub"]},
            {},
            'registries."ghcr.io".aliases',
            "already names",
        ),
        ({"docker.io": ["ghcr.io"], "ghcr.io": []}, {}, 'registries."ghcr.io"', "already names"),
        (
            {"docker.io": []},
            {"default_registry": "ghcr.io"},
            "mirror.default_registry",
            "not a configured",
        ),
        (
            {"docker.io": []},
            {"default_registry": "x y", "allow_unknown_registries": True},
            "mirror.default_registry",
            "not a host name",
        ),
    ],
)
def test_registry_map_build_refuses(
    registries: dict[str, list[str]], kwargs: dict[str, object], key_path: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RegistryMap.build(registries, **kwargs)  # type: ignore[arg-type]
    assert info.value.key_path == key_path
    assert fragment in info.value.reason


def test_registry_map_unknown_default_when_allowed() -> None:
    registries = RegistryMap.build(
        {}, default_registry="R.example.com", allow_unknown_registries=True
    )
    assert registries.default_registry == "r.example.com"
    assert parse_route("GET", "/v2/a/manifests/x", registries) == ManifestRoute(
        "r.example.com", "a", "x"
    )


# --------------------------------------------------------------------------
# Properties

_METHODS = st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "get"])
_SEGMENT_WORDS = st.sampled_from(
    [
        *("v2", "blobs", "uploads", "manifests", "tags", "list", "referrers", "_catalog"),
        *("a", "B", "dockerhub", "ghcr.io", "evil.io", "localhost:5000", "[::1]", "..", ".", ""),
        *(SHA, "sha256:ab", "latest", "-x", "%2e", "a\x00", "u-1"),
    ]
)
_QUERIES = st.lists(
    st.sampled_from(
        [
            *("ns=ghcr.io", "ns=evil.io", "ns=", "n=5", "n=-1", "last=v1", "last=%FF"),
            *(f"digest={SHA}", f"mount={SHA}", "from=a/b", "artifactType=a%2Fb"),
            *("digest-algorithm=sha512", "%zz", "&"),
        ]
    ),
    max_size=4,
).map("&".join)


@given(_METHODS, st.lists(_SEGMENT_WORDS, max_size=7), _QUERIES, st.booleans())
def test_structured_targets_raise_only_our_errors(
    method: str, segments: list[str], query: str, connect: bool
) -> None:
    target = "/v2/" + "/".join(segments) + ("?" + query if query else "")
    host = "ghcr.io" if connect else None
    for registries in (REGISTRIES, OPEN):
        try:
            result = parse_route(method, target, registries, host=host)
        except RegcacheError:
            continue
        _check_route(result)


@given(_METHODS, st.text(max_size=200), st.one_of(st.none(), st.text(max_size=30)))
def test_random_targets_raise_only_our_errors(method: str, target: str, host: str | None) -> None:
    for candidate in (target, "/v2/" + target):
        for registries in (REGISTRIES, OPEN):
            try:
                result = parse_route(method, candidate, registries, host=host)
            except RegcacheError:
                continue
            _check_route(result)


def _check_route(result: Route) -> None:
    """Whatever the router accepts is safe to use as a storage key or URL path."""
    if isinstance(result, Ping):
        return
    assert "/" not in result.registry
    assert result.registry == result.registry.lower()
    if isinstance(result, Catalog):
        return
    assert validate_repository(result.repository) == result.repository
    if isinstance(result, ManifestRoute) and isinstance(result.reference, str):
        assert validate_tag(result.reference) == result.reference
