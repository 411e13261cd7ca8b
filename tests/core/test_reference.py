"""Image references: grammar, Docker normalisation, validators."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcache.core._digest import Digest
from regcache.core._errors import (
    ErrorCode,
    LocalProtocolError,
    RegcacheError,
    RemoteProtocolError,
)
from regcache.core._reference import (
    DEFAULT_REGISTRY,
    LEGACY_DEFAULT_DOMAIN,
    NAME_TOTAL_LENGTH_MAX,
    OFFICIAL_REPO_PREFIX,
    REFERENCE_TEXT_MAX,
    TAG_MAX,
    Reference,
    canonical_registry,
    looks_like_registry,
    normalize_repository,
    validate_registry,
    validate_repository,
    validate_tag,
)

SHA = "sha256:" + "3f" * 32
SHA512 = "sha512:" + "ab" * 64


def test_constants() -> None:
    assert NAME_TOTAL_LENGTH_MAX == 255
    assert TAG_MAX == 128
    assert DEFAULT_REGISTRY == "docker.io"
    assert LEGACY_DEFAULT_DOMAIN == "index.docker.io"
    assert OFFICIAL_REPO_PREFIX == "library/"


# (input, str(), familiar(), registry, repository, tag, digest)
PARSED = [
    (
        "nginx",
        "docker.io/library/nginx:latest",
        "nginx:latest",
        "docker.io",
        "library/nginx",
        "latest",
        None,
    ),
    (
        "nginx:1.25",
        "docker.io/library/nginx:1.25",
        "nginx:1.25",
        "docker.io",
        "library/nginx",
        "1.25",
        None,
    ),
    (
        "library/nginx",
        "docker.io/library/nginx:latest",
        "nginx:latest",
        "docker.io",
        "library/nginx",
        "latest",
        None,
    ),
    (
        "docker.io/nginx",
        "docker.io/library/nginx:latest",
        "nginx:latest",
        "docker.io",
        "library/nginx",
        "latest",
        None,
    ),
    (
        "index.docker.io/nginx",
        "docker.io/library/nginx:latest",
        "nginx:latest",
        "docker.io",
        "library/nginx",
        "latest",
        None,
    ),
    (
        "index.docker.io/library/nginx:x",
        "docker.io/library/nginx:x",
        "nginx:x",
        "docker.io",
        "library/nginx",
        "x",
        None,
    ),
    (
        "INDEX.Docker.IO/nginx",
        "docker.io/library/nginx:latest",
        "nginx:latest",
        "docker.io",
        "library/nginx",
        "latest",
        None,
    ),
    (
        "user/app",
        "docker.io/user/app:latest",
        "user/app:latest",
        "docker.io",
        "user/app",
        "latest",
        None,
    ),
    (
        "library/a/b",
        "docker.io/library/a/b:latest",
        "library/a/b:latest",
        "docker.io",
        "library/a/b",
        "latest",
        None,
    ),
    (
        "ghcr.io/org/app:v1",
        "ghcr.io/org/app:v1",
        "ghcr.io/org/app:v1",
        "ghcr.io",
        "org/app",
        "v1",
        None,
    ),
    ("ghcr.io/app", "ghcr.io/app:latest", "ghcr.io/app:latest", "ghcr.io", "app", "latest", None),
    (
        "Example.COM/app",
        "example.com/app:latest",
        "example.com/app:latest",
        "example.com",
        "app",
        "latest",
        None,
    ),
    (
        "localhost/app",
        "localhost/app:latest",
        "localhost/app:latest",
        "localhost",
        "app",
        "latest",
        None,
    ),
    (
        "localhost:5000/a/b",
        "localhost:5000/a/b:latest",
        "localhost:5000/a/b:latest",
        "localhost:5000",
        "a/b",
        "latest",
        None,
    ),
    # A single component is always on Docker Hub, even one that looks like a host.
    (
        "localhost:5000",
        "docker.io/library/localhost:5000",
        "localhost:5000",
        "docker.io",
        "library/localhost",
        "5000",
        None,
    ),
    (
        "example.com",
        "docker.io/library/example.com:latest",
        "example.com:latest",
        "docker.io",
        "library/example.com",
        "latest",
        None,
    ),
    (
        "[::1]:5000/app",
        "[::1]:5000/app:latest",
        "[::1]:5000/app:latest",
        "[::1]:5000",
        "app",
        "latest",
        None,
    ),
    (
        "[FE80::1]/app",
        "[fe80::1]/app:latest",
        "[fe80::1]/app:latest",
        "[fe80::1]",
        "app",
        "latest",
        None,
    ),
    (
        "10.0.0.1:443/a",
        "10.0.0.1:443/a:latest",
        "10.0.0.1:443/a:latest",
        "10.0.0.1:443",
        "a",
        "latest",
        None,
    ),
    (
        "reg.example.com:8443/a/b/c:T_1.x-y",
        "reg.example.com:8443/a/b/c:T_1.x-y",
        "reg.example.com:8443/a/b/c:T_1.x-y",
        "reg.example.com:8443",
        "a/b/c",
        "T_1.x-y",
        None,
    ),
    (
        "a__b/c--d/e.f_g",
        "docker.io/a__b/c--d/e.f_g:latest",
        "a__b/c--d/e.f_g:latest",
        "docker.io",
        "a__b/c--d/e.f_g",
        "latest",
        None,
    ),
    (
        f"nginx@{SHA}",
        f"docker.io/library/nginx@{SHA}",
        f"nginx@{SHA}",
        "docker.io",
        "library/nginx",
        None,
        SHA,
    ),
    (
        f"nginx:1.25@{SHA}",
        f"docker.io/library/nginx:1.25@{SHA}",
        f"nginx:1.25@{SHA}",
        "docker.io",
        "library/nginx",
        "1.25",
        SHA,
    ),
    (
        f"quay.io/a/b@{SHA512}",
        f"quay.io/a/b@{SHA512}",
        f"quay.io/a/b@{SHA512}",
        "quay.io",
        "a/b",
        None,
        SHA512,
    ),
]


@pytest.mark.parametrize(
    ("text", "full", "familiar", "registry", "repository", "tag", "digest"), PARSED
)
def test_parse(
    text: str,
    full: str,
    familiar: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
) -> None:
    ref = Reference.parse(text)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.name == f"{registry}/{repository}"
    assert ref.reference == (digest if digest else tag)
    assert Reference.parse(full) == ref
    assert Reference.parse(familiar) == ref


# (input, code, a fragment of the message)
REFUSED = [
    ("", ErrorCode.NAME_INVALID, "empty"),
    ("Nginx", ErrorCode.NAME_INVALID, "upper case"),
    ("User/app", ErrorCode.NAME_INVALID, "registry host name needs a '.'"),
    ("ghcr.io/Org/app", ErrorCode.NAME_INVALID, "component 1 ('Org') has upper case"),
    ("ghcr.io/org/App", ErrorCode.NAME_INVALID, "component 2 ('App') has upper case"),
    ("ghcr.io/a/../b", ErrorCode.NAME_INVALID, "'..'"),
    ("ghcr.io/a/./b", ErrorCode.NAME_INVALID, "'.' or '..'"),
    ("ghcr.io/a..b", ErrorCode.NAME_INVALID, "contains '..'"),
    ("ghcr.io/a//b", ErrorCode.NAME_INVALID, "component 2 ('') is empty"),
    ("ghcr.io/a/", ErrorCode.NAME_INVALID, "is empty"),
    ("ghcr.io/", ErrorCode.NAME_INVALID, "has no repository name"),
    (f"@{SHA}", ErrorCode.NAME_INVALID, "no repository name"),
    ("ghcr.io/a%2fb", ErrorCode.NAME_INVALID, "percent-encoding"),
    ("ghcr.io/a\\b", ErrorCode.NAME_INVALID, "illegal character '\\\\'"),
    ("ghcr.io/a\x00b", ErrorCode.NAME_INVALID, "illegal character '\\x00'"),
    ("ghcr.io/a b", ErrorCode.NAME_INVALID, "illegal character ' '"),
    ("ghcr.io/-a", ErrorCode.NAME_INVALID, "must start and end"),
    ("ghcr.io/a-", ErrorCode.NAME_INVALID, "must start and end"),
    ("ghcr.io/a___b", ErrorCode.NAME_INVALID, "must start and end"),
    ("ghcr.io/" + "a" * 256, ErrorCode.NAME_INVALID, "the limit is 255"),
    ("a" * 250, ErrorCode.NAME_INVALID, "258 characters long"),  # library/ counts
    ("ghcr.io:abc/app", ErrorCode.NAME_INVALID, "is not a host name"),
    ("ex_ample.com/app", ErrorCode.NAME_INVALID, "is not a host name"),
    ("-ghcr.io/app", ErrorCode.NAME_INVALID, "is not a host name"),
    ("[::1/app", ErrorCode.NAME_INVALID, "is not a host name"),
    ("[::g]/app", ErrorCode.NAME_INVALID, "is not a host name"),
    ("x" * 300 + ".io/app", ErrorCode.NAME_INVALID, "the limit is 262"),
    ("3f" * 32, ErrorCode.NAME_INVALID, "image ID"),
    ("nginx:", ErrorCode.MANIFEST_UNKNOWN, "invalid tag '': is empty"),
    ("nginx:-x", ErrorCode.MANIFEST_UNKNOWN, "must start with"),
    ("nginx:a:b", ErrorCode.MANIFEST_UNKNOWN, "illegal character ':'"),
    ("nginx:é", ErrorCode.MANIFEST_UNKNOWN, "illegal character 'é'"),
    ("nginx:" + "a" * 129, ErrorCode.MANIFEST_UNKNOWN, "the limit is 128"),
    ("nginx@sha256:abc", ErrorCode.DIGEST_INVALID, "the digest after '@' is invalid"),
    ("nginx@md5:" + "a" * 32, ErrorCode.DIGEST_INVALID, "not supported"),
    ("nginx@" + SHA.upper(), ErrorCode.DIGEST_INVALID, "digest"),
    (f"nginx@{SHA}@{SHA}", ErrorCode.DIGEST_INVALID, "digest"),
    ("a" * (REFERENCE_TEXT_MAX + 1), ErrorCode.NAME_INVALID, "image reference is"),
]


@pytest.mark.parametrize(("text", "code", "fragment"), REFUSED)
def test_parse_refuses(text: str, code: ErrorCode, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Reference.parse(text)
    assert info.value.code is code
    assert fragment in info.value.message


def test_reference_needs_tag_or_digest() -> None:
    with pytest.raises(LocalProtocolError):
        Reference("docker.io", "library/nginx", None, None)


@pytest.mark.parametrize(
    "name", ["a", "library/nginx", "a/b/c/d", "a.b_c__d-e--f", "0", "a" * 255, "x/" * 127 + "x"]
)
def test_validate_repository_accepts(name: str) -> None:
    assert validate_repository(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "repository name is empty"),
        ("a" * 256, "256 characters long; the limit is 255"),
        ("/a", "component 1 ('') is empty"),
        ("a/", "component 2 ('') is empty"),
        ("a//b", "component 2 ('') is empty"),
        ("..", "'.' or '..' segment"),
        ("a/../b", "component 2 ('..')"),
        ("a/.", "component 2 ('.')"),
        (".a", "must start and end"),
        ("a.", "must start and end"),
        ("a..b", "contains '..'"),
        ("a._b", "must start and end"),
        ("A", "upper case"),
        ("a/Bc", "component 2 ('Bc') has upper case"),
        ("a%2e%2e", "percent-encoding"),
        ("a\\b", "illegal character '\\\\'"),
        ("a\nb", "illegal character '\\n'"),
        ("a:b", "illegal character ':'"),
        ("ä", "illegal character 'ä'"),
        ("a?b", "illegal character '?'"),
    ],
)
def test_validate_repository_refuses(name: str, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        validate_repository(name)
    assert info.value.code is ErrorCode.NAME_INVALID
    assert info.value.status == 400
    assert fragment in info.value.message


@pytest.mark.parametrize("tag", ["latest", "_", "0", "v1.2.3-rc_1", "A" * 128, "a..b", "a--"])
def test_validate_tag_accepts(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "fragment"),
    [
        ("", "is empty"),
        ("a" * 129, "129 characters long"),
        (".a", "must start with"),
        ("-a", "must start with"),
        ("a/b", "illegal character '/'"),
        ("a%2f", "illegal character '%'"),
        ("\u0661", "illegal character"),  # ARABIC-INDIC DIGIT ONE: Go's \w is ASCII only
        ("a\x00", "illegal character '\\x00'"),
    ],
)
def test_validate_tag_refuses(tag: str, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        validate_tag(tag)
    # What distribution answers for a manifest URL with a malformed tag: 404.
    assert info.value.code is ErrorCode.MANIFEST_UNKNOWN
    assert info.value.status == 404
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("domain", "canonical"),
    [
        ("docker.io", "docker.io"),
        ("Docker.IO", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("INDEX.DOCKER.IO", "docker.io"),
        ("GHCR.io", "ghcr.io"),
        ("registry-1.docker.io", "registry-1.docker.io"),
        ("[FE80::1]:5000", "[fe80::1]:5000"),
    ],
)
def test_canonical_registry(domain: str, canonical: str) -> None:
    assert canonical_registry(domain) == canonical
    assert validate_registry(domain) == canonical


@pytest.mark.parametrize("domain", ["", "a_b.io", "a.io:", "a.io:x", ".a.io", "a-.io", "[]", "a/b"])
def test_validate_registry_refuses(domain: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        validate_registry(domain)
    assert info.value.code is ErrorCode.NAME_INVALID


@pytest.mark.parametrize(
    ("component", "is_host"),
    [
        *[("ghcr.io", True), ("localhost", True), ("host:5000", True), ("[::1]", True)],
        *[("library", False), ("localhost2", False), ("dockerhub", False)],
    ],
)
def test_looks_like_registry(component: str, is_host: bool) -> None:
    assert looks_like_registry(component) is is_host


@pytest.mark.parametrize(
    ("registry", "repository", "normal"),
    [
        ("docker.io", "nginx", "library/nginx"),
        ("index.docker.io", "nginx", "library/nginx"),
        ("docker.io", "library/nginx", "library/nginx"),
        ("docker.io", "user/app", "user/app"),
        ("ghcr.io", "nginx", "nginx"),
    ],
)
def test_normalize_repository(registry: str, repository: str, normal: str) -> None:
    assert normalize_repository(registry, repository) == normal


# --------------------------------------------------------------------------
# Properties

_ALNUM = st.text("abcz0189", min_size=1, max_size=6)
_SEPARATOR = st.sampled_from([".", "_", "__", "-", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    """A component drawn from the grammar ``alnum (separator alnum)*``."""
    parts = [draw(_ALNUM)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_SEPARATOR), draw(_ALNUM)]
    return "".join(parts)


repositories = (
    st.lists(path_components(), min_size=1, max_size=5)
    .map("/".join)
    .filter(lambda name: len(name) <= NAME_TOTAL_LENGTH_MAX - len(OFFICIAL_REPO_PREFIX))
)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
digests = st.binary(max_size=64).flatmap(
    lambda content: st.sampled_from([Digest.of_bytes(content), Digest.of_bytes(content, "sha512")])
)
_HOST_LABEL = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
registries = st.one_of(
    st.sampled_from(["docker.io", "index.docker.io", "localhost", "ghcr.io", "[::1]"]),
    st.lists(_HOST_LABEL, min_size=2, max_size=4).map(".".join),
    st.from_regex(r"\[[0-9a-fA-F]{0,4}:[0-9a-fA-F:]{0,16}\]", fullmatch=True),
).flatmap(lambda host: st.sampled_from(["", ":5000", ":1"]).map(lambda port: host + port))


@given(repositories)
def test_generated_repositories_are_valid(name: str) -> None:
    assert validate_repository(name) == name
    assert ".." not in name
    assert "%" not in name
    assert name.lower() == name
    assert "" not in name.split("/")


@given(
    st.one_of(st.none(), registries),
    repositories,
    st.one_of(st.none(), tags),
    st.one_of(st.none(), digests),
)
def test_reference_round_trip(
    registry: str | None, repository: str, tag: str | None, digest: Digest | None
) -> None:
    if registry is None and looks_like_registry(repository.split("/")[0]) and "/" in repository:
        registry = "docker.io"  # without a host, the first component would be taken for one
    text = (registry + "/" if registry is not None else "") + repository
    text += (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")
    ref = Reference.parse(text)
    expected_registry = canonical_registry(registry) if registry is not None else "docker.io"
    assert ref.registry == expected_registry
    assert ref.repository == normalize_repository(expected_registry, repository)
    assert ref.digest == digest
    assert ref.tag == (tag if tag is not None or digest is not None else "latest")
    assert Reference.parse(str(ref)) == ref
    assert str(Reference.parse(str(ref))) == str(ref)


@given(st.text(max_size=300))
def test_parse_random_text_raises_only_our_errors(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except RegcacheError:
        return
    assert Reference.parse(str(ref)) == ref


@given(st.text(alphabet="aZ09./:@_-[]%\\ \x00", max_size=80))
def test_parse_reference_like_text_raises_only_our_errors(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except RegcacheError:
        return
    validate_repository(ref.repository)
    assert Reference.parse(str(ref)) == ref
