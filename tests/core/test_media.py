"""Manifest media types, manifest parsing and Accept negotiation."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcache.core._digest import Digest
from regcache.core._errors import (
    DigestMismatchError,
    ErrorCode,
    LocalProtocolError,
    RegcacheError,
    RemoteProtocolError,
)
from regcache.core._media import (
    DEFAULT_ACCEPT,
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    IMAGE_MANIFEST_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MAX_ACCEPT_RANGES,
    MAX_MANIFEST_SIZE,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    accepts,
    is_manifest_media_type,
    normalize_media_type,
    parse_accept,
    parse_manifest,
    upstream_accept,
)

H1 = "b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
H2 = "9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0"
H3 = "3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b"
H4 = "ec4b8955958665577945c89419d1af06b5f7636b4ac3da7f12184802ad867736"
H5 = "e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f"
H6 = "5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270"
EMPTY_HEX = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def sha256(hex_value: str) -> Digest:
    return Digest("sha256", hex_value)


# --- literal fixtures --------------------------------------------------------

OCI_MANIFEST_BYTES = b"""{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "size": 7023,
    "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
  },
  "layers": [
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "size": 32654,
      "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0"
    },
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "size": 16724,
      "digest": "sha256:3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b"
    },
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "size": 73109,
      "digest": "sha256:ec4b8955958665577945c89419d1af06b5f7636b4ac3da7f12184802ad867736",
      "annotations": {"org.opencontainers.image.title": "app.tar.gz"}
    }
  ],
  "annotations": {
    "com.example.key1": "value1",
    "com.example.key2": "value2"
  }
}
"""

OCI_INDEX_BYTES = b"""{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "artifactType": "application/vnd.example.signatures.v1",
  "manifests": [
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "size": 7143,
      "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f",
      "platform": {"architecture": "ppc64le", "os": "linux"}
    },
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "size": 7682,
      "digest": "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270",
      "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}
    },
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "size": 1024,
      "digest": "sha256:3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b",
      "platform": {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1879",
        "os.features": ["win32k"],
        "features": ["reserved"]
      },
      "artifactType": "application/vnd.example.sbom.v1",
      "annotations": {"com.example.kind": "windows"}
    }
  ],
  "subject": {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "size": 1234,
    "digest": "sha256:ec4b8955958665577945c89419d1af06b5f7636b4ac3da7f12184802ad867736"
  },
  "annotations": {"com.example.key1": "value1"}
}
"""

DOCKER_MANIFEST_BYTES = b"""{
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": 7023,
        "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
    },
    "layers": [
        {
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "size": 32654,
            "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0",
            "urls": ["https://example.com/layers/base.tar.gz"]
        },
        {
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 16724,
            "digest": "sha256:3c3a4604a545cdc127456d94e421cd355bca5b528f4a9c1905b15da2eb4a4c6b"
        }
    ]
}"""

DOCKER_LIST_BYTES = b"""{
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "size": 7143,
      "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f",
      "platform": {"architecture": "ppc64le", "os": "linux"}
    },
    {
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "size": 7682,
      "digest": "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270",
      "platform": {"architecture": "amd64", "os": "linux", "features": ["sse4"]}
    }
  ]
}"""

SCHEMA1_SIGNED_BYTES = b"""{
   "schemaVersion": 1,
   "name": "library/hello-world",
   "tag": "latest",
   "architecture": "amd64",
   "fsLayers": [
      {
         "blobSum": "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
      }
   ],
   "history": [
      {
         "v1Compatibility": "{\\"id\\":\\"e45a5af57b00862e\\",\\"os\\":\\"linux\\"}"
      }
   ],
   "signatures": [
      {
         "header": {
            "jwk": {
               "crv": "P-256",
               "kid": "OD6I:6DRK:JXEJ:KBM4:255X:NSAA:MUSF:E4VM:ZI6W:CUN2:L4Z6:LSF4",
               "kty": "EC",
               "x": "3gAwX48IQ5oaYQAYSxor6rYYc_6yjuLCjtQ9LUakg4A",
               "y": "t72ge6kIA1XOjqjVoEOiPPAURltJFBMGDSQvEGVB010"
            },
            "alg": "ES256"
         },
         "signature": "XREm0L8WNn27Ga_iE_vRnTxVMhhYY0Zst_FfkKopg6gWSoTOZTuW4rK0fg_IqnKkEKlbD8",
         "protected": "eyJmb3JtYXRMZW5ndGgiOjY2MjgsImZvcm1hdFRhaWwiOiJDbjAifQ"
      }
   ]
}"""

# Keys out of the usual order, tabs, CRLF, spaces before colons, an escaped
# slash, a trailing newline: all legal JSON, all part of what is hashed.
ODD_WHITESPACE_BYTES = (
    b'\r\n\t{ "layers" :[ ] ,\r\n  "config"\t: {"size":2,"digest" : '
    b'"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",'
    b'  "mediaType":"application\\/vnd.oci.empty.v1+json"} , "schemaVersion" : 2 ,'
    b' "artifactType":"application/vnd.example.thing"}  \n'
)


# --- media types ---------------------------------------------------------------


def test_media_type_sets() -> None:
    assert OCI_MANIFEST == "application/vnd.oci.image.manifest.v1+json"
    assert DOCKER_MANIFEST == "application/vnd.docker.distribution.manifest.v2+json"
    assert DOCKER_SCHEMA1 == "application/vnd.docker.distribution.manifest.v1+json"
    assert DOCKER_SCHEMA1_SIGNED == "application/vnd.docker.distribution.manifest.v1+prettyjws"
    assert {OCI_INDEX, DOCKER_MANIFEST_LIST} == INDEX_MEDIA_TYPES
    assert {OCI_MANIFEST, DOCKER_MANIFEST} == IMAGE_MANIFEST_MEDIA_TYPES
    assert MANIFEST_MEDIA_TYPES == INDEX_MEDIA_TYPES | IMAGE_MANIFEST_MEDIA_TYPES
    assert DEFAULT_ACCEPT.split(", ") == [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST,
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (OCI_MANIFEST, True),
        ("Application/VND.oci.image.index.v1+json; charset=utf-8", True),
        (f" {DOCKER_MANIFEST_LIST} ", True),
        (DOCKER_SCHEMA1_SIGNED, False),
        ("application/json", False),
        ("", False),
        ("not a type", False),
    ],
)
def test_is_manifest_media_type(value: str, expected: bool) -> None:
    assert is_manifest_media_type(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Application/JSON; charset=utf-8", "application/json"),
        ("a/b", "a/b"),
        ("a/", ""),
        ("/b", ""),
        ("ab", ""),
        ("a b/c", ""),
        ("a/b/c", ""),
    ],
)
def test_normalize_media_type(value: str, expected: str) -> None:
    assert normalize_media_type(value) == expected


# --- parsing the fixtures ---------------------------------------------------------


def test_oci_manifest() -> None:
    manifest = parse_manifest(OCI_MANIFEST_BYTES, OCI_MANIFEST)
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.raw is OCI_MANIFEST_BYTES
    assert manifest.digest == sha256(hashlib.sha256(OCI_MANIFEST_BYTES).hexdigest())
    assert manifest.size == len(OCI_MANIFEST_BYTES)
    assert not manifest.is_index
    config = Descriptor(OCI_CONFIG, sha256(H1), 7023)
    layers = (
        Descriptor(OCI_LAYER_GZIP, sha256(H2), 32654),
        Descriptor(OCI_LAYER_GZIP, sha256(H3), 16724),
        Descriptor(
            OCI_LAYER_GZIP,
            sha256(H4),
            73109,
            annotations={"org.opencontainers.image.title": "app.tar.gz"},
        ),
    )
    assert manifest.config == config
    assert manifest.layers == layers
    assert manifest.blobs() == (config, *layers)
    assert manifest.manifests == ()
    assert manifest.subject is None
    assert manifest.artifact_type is None
    assert dict(manifest.annotations) == {
        "com.example.key1": "value1",
        "com.example.key2": "value2",
    }


def test_oci_index_with_platforms_subject_and_artifact_type() -> None:
    manifest = parse_manifest(OCI_INDEX_BYTES, f"{OCI_INDEX}; charset=utf-8")
    assert manifest.media_type == OCI_INDEX
    assert manifest.is_index
    assert manifest.config is None
    assert manifest.layers == ()
    assert manifest.blobs() == ()
    assert manifest.artifact_type == "application/vnd.example.signatures.v1"
    assert manifest.subject == Descriptor(OCI_MANIFEST, sha256(H4), 1234)
    assert dict(manifest.annotations) == {"com.example.key1": "value1"}
    assert manifest.manifests == (
        Descriptor(OCI_MANIFEST, sha256(H5), 7143, platform=Platform("ppc64le", "linux")),
        Descriptor(OCI_MANIFEST, sha256(H6), 7682, platform=Platform("arm64", "linux", "v8")),
        Descriptor(
            OCI_MANIFEST,
            sha256(H3),
            1024,
            platform=Platform(
                "amd64", "windows", os_version="10.0.17763.1879", os_features=("win32k",)
            ),
            annotations={"com.example.kind": "windows"},
            artifact_type="application/vnd.example.sbom.v1",
        ),
    )
    assert [str(entry.platform) for entry in manifest.manifests] == [
        "linux/ppc64le",
        "linux/arm64/v8",
        "windows/amd64",
    ]


def test_docker_manifest_with_foreign_layer() -> None:
    manifest = parse_manifest(DOCKER_MANIFEST_BYTES, DOCKER_MANIFEST)
    assert manifest.media_type == DOCKER_MANIFEST
    assert not manifest.is_index
    assert manifest.blobs() == (
        Descriptor(DOCKER_CONFIG, sha256(H1), 7023),
        Descriptor(
            DOCKER_FOREIGN_LAYER,
            sha256(H2),
            32654,
            urls=("https://example.com/layers/base.tar.gz",),
        ),
        Descriptor(DOCKER_LAYER, sha256(H3), 16724),
    )


def test_docker_manifest_list() -> None:
    manifest = parse_manifest(DOCKER_LIST_BYTES, DOCKER_MANIFEST_LIST)
    assert manifest.media_type == DOCKER_MANIFEST_LIST
    assert manifest.is_index
    assert [entry.platform for entry in manifest.manifests] == [
        Platform("ppc64le", "linux"),
        Platform("amd64", "linux"),
    ]
    assert [entry.digest for entry in manifest.manifests] == [sha256(H5), sha256(H6)]


def test_docker_ignores_oci_only_fields() -> None:
    document = json.loads(DOCKER_MANIFEST_BYTES)
    # Not part of Docker's schema 2: unknown fields, ignored even when odd.
    document["annotations"] = 5
    document["subject"] = "x"
    manifest = parse_manifest(json.dumps(document).encode(), DOCKER_MANIFEST)
    assert manifest.subject is None
    assert dict(manifest.annotations) == {}


def test_digest_is_over_the_exact_bytes() -> None:
    manifest = parse_manifest(ODD_WHITESPACE_BYTES, None)
    assert manifest.raw == ODD_WHITESPACE_BYTES
    assert manifest.digest == sha256(hashlib.sha256(ODD_WHITESPACE_BYTES).hexdigest())
    compact = json.dumps(json.loads(ODD_WHITESPACE_BYTES), separators=(",", ":")).encode()
    assert parse_manifest(compact, None).digest != manifest.digest
    assert manifest.media_type == OCI_MANIFEST  # no mediaType: told by its shape
    assert manifest.config == Descriptor(OCI_EMPTY, sha256(EMPTY_HEX), 2)
    assert manifest.layers == ()
    assert manifest.artifact_type == "application/vnd.example.thing"


def test_expected_digest_matches() -> None:
    expected = sha256(hashlib.sha256(OCI_MANIFEST_BYTES).hexdigest())
    assert parse_manifest(OCI_MANIFEST_BYTES, OCI_MANIFEST, expected_digest=expected).digest == (
        expected
    )


def test_expected_digest_algorithm_is_used() -> None:
    expected = Digest("sha512", hashlib.sha512(OCI_MANIFEST_BYTES).hexdigest())
    manifest = parse_manifest(OCI_MANIFEST_BYTES, OCI_MANIFEST, expected_digest=expected)
    assert manifest.digest == expected


def test_expected_digest_mismatch() -> None:
    wrong = sha256(H1)
    with pytest.raises(DigestMismatchError) as caught:
        parse_manifest(OCI_MANIFEST_BYTES, OCI_MANIFEST, expected_digest=wrong)
    assert caught.value.expected == str(wrong)
    assert caught.value.actual == "sha256:" + hashlib.sha256(OCI_MANIFEST_BYTES).hexdigest()


def test_expected_digest_is_checked_before_the_content() -> None:
    with pytest.raises(DigestMismatchError):
        parse_manifest(b"not json", None, expected_digest=sha256(H1))


# --- media type resolution ---------------------------------------------------------


def refused(raw: bytes, content_type: str | None = None) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        parse_manifest(raw, content_type)
    assert type(caught.value) is RemoteProtocolError
    assert caught.value.code is ErrorCode.MANIFEST_INVALID
    return caught.value


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (OCI_MANIFEST_BYTES, DOCKER_MANIFEST),
        (OCI_INDEX_BYTES, DOCKER_MANIFEST_LIST),
        (DOCKER_MANIFEST_BYTES, OCI_MANIFEST),
        (DOCKER_LIST_BYTES, OCI_INDEX),
        (OCI_MANIFEST_BYTES, OCI_INDEX),
    ],
)
def test_content_type_and_media_type_disagree(raw: bytes, content_type: str) -> None:
    error = refused(raw, content_type)
    assert error.message.startswith("mediaType: ")
    assert "disagrees with the Content-Type" in error.message


@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/plain; x=y", "%%%"])
def test_unknown_content_type_falls_back_to_media_type(content_type: str | None) -> None:
    assert parse_manifest(DOCKER_LIST_BYTES, content_type).media_type == DOCKER_MANIFEST_LIST


def test_content_type_parameters_and_case() -> None:
    content_type = "Application/VND.Docker.Distribution.Manifest.v2+JSON ; charset=UTF-8"
    assert parse_manifest(DOCKER_MANIFEST_BYTES, content_type).media_type == DOCKER_MANIFEST


def test_content_type_supplies_an_absent_oci_media_type() -> None:
    document = json.loads(OCI_INDEX_BYTES)
    del document["mediaType"]
    raw = json.dumps(document).encode()
    assert parse_manifest(raw, OCI_INDEX).media_type == OCI_INDEX
    assert parse_manifest(raw, None).media_type == OCI_INDEX


def test_unsupported_media_type_is_refused() -> None:
    document = json.loads(OCI_MANIFEST_BYTES)
    document["mediaType"] = "application/vnd.oci.artifact.manifest.v1+json"
    error = refused(json.dumps(document).encode(), "application/octet-stream")
    assert error.message.startswith("mediaType: ")
    assert "not a supported manifest media type" in error.message


# --- schema 1 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1, f"{DOCKER_SCHEMA1}; x=1", None, "text/x"],
)
def test_schema1_is_refused_with_the_reason(content_type: str | None) -> None:
    error = refused(SCHEMA1_SIGNED_BYTES, content_type)
    assert error.status == 400
    assert "Docker schema 1 manifests are not supported; " in error.message
    assert "digest" in error.message  # says why


def test_schema1_media_type_field_is_refused() -> None:
    raw = b'{"schemaVersion": 2, "mediaType": "' + DOCKER_SCHEMA1.encode() + b'"}'
    assert "Docker schema 1 manifests are not supported" in refused(raw).message


def test_schema1_content_type_is_refused_before_the_body_is_read() -> None:
    assert "Docker schema 1" in refused(b"\xff not json", DOCKER_SCHEMA1_SIGNED).message


# --- size limit ---------------------------------------------------------------------


def test_size_limit() -> None:
    padded = OCI_MANIFEST_BYTES + b" " * (MAX_MANIFEST_SIZE - len(OCI_MANIFEST_BYTES))
    assert len(padded) == MAX_MANIFEST_SIZE == 4 * 1024 * 1024
    assert parse_manifest(padded, OCI_MANIFEST).raw == padded
    error = refused(padded + b" ", OCI_MANIFEST)
    assert "more than the 4194304 byte limit" in error.message


# --- malformed documents ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "manifest is not valid JSON: "),
        (b"{", "manifest is not valid JSON: "),
        (b'{"schemaVersion": 2} x', "manifest is not valid JSON: "),
        (b'{"schemaVersion": NaN}', "manifest is not valid JSON: NaN"),
        (b'{"schemaVersion": -Infinity}', "manifest is not valid JSON: -Infinity"),
        (b"[" * 100_000, "manifest is not valid JSON: nested too deeply"),
        (b'{"size": ' + b"9" * 5000 + b"}", "manifest is not valid JSON: "),
        (b"\xef\xbb\xbf{}", "manifest is not valid JSON: "),
        (b'{"a": "\xff"}', "manifest is not UTF-8"),
        ('{"schemaVersion": 2}'.encode("utf-16"), "manifest is not UTF-8"),
        (
            b'{"schemaVersion": 2, "schemaVersion": 2}',
            "manifest has a duplicate key 'schemaVersion'",
        ),
        (b'{"config": {"size": 1, "size": 2}}', "manifest has a duplicate key 'size'"),
        (b"[]", "manifest must be a JSON object, not an array"),
        (b'"x"', "manifest must be a JSON object, not a string"),
        (b"null", "manifest must be a JSON object, not null"),
        (b"{}", "schemaVersion: is missing"),
        (b'{"schemaVersion": "2"}', "schemaVersion: must be an integer, not a string"),
        (b'{"schemaVersion": true}', "schemaVersion: must be an integer, not a boolean"),
        (b'{"schemaVersion": 2.0}', "schemaVersion: must be an integer, not a number"),
        (b'{"schemaVersion": 3}', "schemaVersion: must be 2, not 3"),
        (b'{"schemaVersion": 2, "mediaType": 5}', "mediaType: must be a string, not a number"),
        (b'{"schemaVersion": 2}', "mediaType: is missing, and neither"),
    ],
)
def test_malformed_documents(raw: bytes, message: str) -> None:
    assert refused(raw).message.startswith(message)


def mutate(raw: bytes, path: tuple[str | int, ...], value: Any) -> bytes:
    """``raw`` with the field at ``path`` set to ``value`` (deleted if ``...``)."""
    document = json.loads(raw)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return json.dumps(document).encode()


M, IX, D, DL = OCI_MANIFEST_BYTES, OCI_INDEX_BYTES, DOCKER_MANIFEST_BYTES, DOCKER_LIST_BYTES


@pytest.mark.parametrize(
    ("raw", "path", "value", "message"),
    [
        (M, ("config",), ..., "config: is missing"),
        (M, ("config",), None, "config: is missing"),
        (M, ("config",), [], "config: must be an object, not an array"),
        (M, ("config", "mediaType"), ..., "config.mediaType: is missing"),
        (M, ("config", "mediaType"), "", "config.mediaType: '' is not a media type"),
        (M, ("config", "mediaType"), "a b/c", "config.mediaType: 'a b/c' is not a media type"),
        (M, ("config", "mediaType"), "a\n/c", "config.mediaType: 'a\\n/c' is not a media type"),
        (M, ("config", "mediaType"), 7, "config.mediaType: must be a string, not a number"),
        (M, ("config", "digest"), ..., "config.digest: is missing"),
        (M, ("config", "digest"), 12, "config.digest: must be a string, not a number"),
        (M, ("config", "size"), ..., "config.size: is missing"),
        (M, ("config", "size"), -1, "config.size: -1 is not a size"),
        (M, ("config", "size"), 2**63, f"config.size: {2**63} is not a size"),
        (M, ("config", "size"), 1.5, "config.size: must be an integer, not a number"),
        (M, ("config", "size"), True, "config.size: must be an integer, not a boolean"),
        (M, ("config", "size"), "7", "config.size: must be an integer, not a string"),
        (M, ("layers",), ..., "layers: is missing"),
        (M, ("layers",), {}, "layers: must be an array, not an object"),
        (M, ("layers", 0), "sha256:x", "layers[0]: must be an object, not a string"),
        (M, ("layers", 2, "digest"), "sha256:abc", "layers[2].digest: sha256 digest must be 64"),
        (M, ("layers", 2, "digest"), H4, "layers[2].digest: digest "),
        (M, ("layers", 1, "digest"), "md5:" + H1[:32], "layers[1].digest: digest algorithm 'md5'"),
        (M, ("layers", 1, "digest"), "sha256:" + H1.upper(), "layers[1].digest: sha256 digest"),
        (M, ("layers", 0, "urls"), "https://x", "layers[0].urls: must be an array of strings"),
        (M, ("layers", 0, "urls"), ["https://x", 1], "layers[0].urls[1]: must be a string"),
        (M, ("layers", 2, "annotations"), [], "layers[2].annotations: must be an object of"),
        (M, ("layers", 2, "annotations", "k"), 1, "layers[2].annotations['k']: must be a string"),
        (M, ("layers", 0, "artifactType"), 3, "layers[0].artifactType: must be a string"),
        (M, ("layers", 0, "data"), 3, "layers[0].data: must be a string, not a number"),
        (M, ("layers", 0, "platform"), "linux", "layers[0].platform: must be an object"),
        (M, ("annotations",), "x", "annotations: must be an object of strings, not a string"),
        (M, ("annotations", "k"), None, "annotations['k']: must be a string, not null"),
        (M, ("annotations", "k"), "\ud800", "annotations['k']: contains an unpaired surrogate"),
        (M, ("artifactType",), 1, "artifactType: must be a string, not a number"),
        (M, ("artifactType",), "x y", "artifactType: 'x y' is not a media type"),
        (M, ("subject",), [], "subject: must be an object, not an array"),
        (M, ("subject",), {"mediaType": OCI_MANIFEST, "size": 1}, "subject.digest: is missing"),
        (M, ("manifests",), [], "manifests: must not be present in an image manifest"),
        (M, ("schemaVersion",), 1, "schemaVersion 1: Docker schema 1 manifests are not"),
        (IX, ("manifests",), ..., "manifests: is missing"),
        (IX, ("manifests",), "x", "manifests: must be an array, not a string"),
        (IX, ("config",), {}, "config: must not be present in an index"),
        (IX, ("layers",), [], "layers: must not be present in an index"),
        (IX, ("manifests", 1, "size"), -5, "manifests[1].size: -5 is not a size"),
        (IX, ("manifests", 1, "platform"), [], "manifests[1].platform: must be an object"),
        (
            IX,
            ("manifests", 0, "platform", "architecture"),
            ...,
            "manifests[0].platform.architecture: is missing",
        ),
        (IX, ("manifests", 0, "platform", "os"), 1, "manifests[0].platform.os: must be a string"),
        (
            IX,
            ("manifests", 1, "platform", "variant"),
            8,
            "manifests[1].platform.variant: must be a string",
        ),
        (
            IX,
            ("manifests", 2, "platform", "os.version"),
            10,
            "manifests[2].platform.os.version: must be a string",
        ),
        (
            IX,
            ("manifests", 2, "platform", "os.features"),
            "win32k",
            "manifests[2].platform.os.features: must be an array of strings",
        ),
        (
            IX,
            ("manifests", 2, "platform", "os.features"),
            ["a", None],
            "manifests[2].platform.os.features[1]: must be a string, not null",
        ),
        (IX, ("subject", "size"), "1", "subject.size: must be an integer, not a string"),
        (IX, ("artifactType",), "", "artifactType: '' is not a media type"),
        (D, ("mediaType",), ..., "mediaType: is missing; it is required"),
        (D, ("layers", 0, "urls", 0), {}, "layers[0].urls[0]: must be a string, not an object"),
        (D, ("manifests",), [], "manifests: must not be present in an image manifest"),
        (DL, ("mediaType",), ..., "mediaType: is missing; it is required"),
        (DL, ("manifests", 1, "digest"), "sha256:", "manifests[1].digest: sha256 digest must"),
        (DL, ("layers",), [], "layers: must not be present in an index"),
    ],
)
def test_malformed_fields_name_their_path(
    raw: bytes, path: tuple[str | int, ...], value: Any, message: str
) -> None:
    mutated = mutate(raw, path, value)
    content_type = json.loads(raw)["mediaType"]
    assert refused(mutated, content_type).message.startswith(message)


def test_nulls_in_optional_fields_read_as_absent() -> None:
    raw = mutate(OCI_MANIFEST_BYTES, ("layers", 0, "urls"), None)
    raw = mutate(raw, ("layers", 0, "annotations"), None)
    raw = mutate(raw, ("subject",), None)
    raw = mutate(raw, ("annotations",), None)
    manifest = parse_manifest(raw, OCI_MANIFEST)
    assert manifest.layers[0] == Descriptor(OCI_LAYER_GZIP, sha256(H2), 32654)
    assert manifest.subject is None
    assert dict(manifest.annotations) == {}


def test_unknown_fields_are_ignored() -> None:
    raw = mutate(OCI_MANIFEST_BYTES, ("layers", 0, "x-extra"), {"anything": [1, 2]})
    raw = mutate(raw, ("x-extra",), None)
    assert len(parse_manifest(raw, OCI_MANIFEST).layers) == 3


# --- values ---------------------------------------------------------------------------


def test_values_are_hashable_and_immutable() -> None:
    manifest = parse_manifest(OCI_INDEX_BYTES, OCI_INDEX)
    assert hash(manifest) == hash(parse_manifest(OCI_INDEX_BYTES, OCI_INDEX))
    entry = manifest.manifests[2]
    assert entry == Descriptor(
        OCI_MANIFEST,
        sha256(H3),
        1024,
        platform=Platform("amd64", "windows", os_version="10.0.17763.1879", os_features=["win32k"]),
        annotations={"com.example.kind": "windows"},
        artifact_type="application/vnd.example.sbom.v1",
    )
    assert len({entry, entry}) == 1
    with pytest.raises(TypeError):
        entry.annotations["x"] = "y"  # type: ignore[index]
    assert entry.annotations == {"com.example.kind": "windows"}
    assert entry.annotations != {"com.example.kind": "linux"}


def test_manifest_descriptor() -> None:
    manifest = parse_manifest(OCI_INDEX_BYTES, OCI_INDEX)
    assert manifest.descriptor() == Descriptor(
        OCI_INDEX,
        manifest.digest,
        len(OCI_INDEX_BYTES),
        annotations={"com.example.key1": "value1"},
        artifact_type="application/vnd.example.signatures.v1",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("amd64", "linux")),
        ("linux/arm64/v8", Platform("arm64", "linux", "v8")),
        ("windows/amd64", Platform("amd64", "windows")),
        ("linux/arm/v7", Platform("arm", "linux", "v7")),
    ],
)
def test_platform_parse(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text", ["", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/amd 64", "linux//v8"]
)
def test_platform_parse_refuses(text: str) -> None:
    with pytest.raises(LocalProtocolError, match="os/architecture"):
        Platform.parse(text)


def test_platform_parse_refuses_long_text() -> None:
    with pytest.raises(LocalProtocolError):
        Platform.parse("linux/" + "a" * 300)


# --- Accept --------------------------------------------------------------------------

# What containerd sends (remotes/docker/resolver.go): one header, wildcard last.
CONTAINERD_ACCEPT = [
    f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*",
]
# What a distribution-library client sends: one header per type, schema 1 too.
DISTRIBUTION_CLIENT_ACCEPT = [
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
    "application/json",
]


def test_parse_accept_single_header() -> None:
    assert parse_accept(CONTAINERD_ACCEPT) == (
        (DOCKER_MANIFEST, 1.0),
        (DOCKER_MANIFEST_LIST, 1.0),
        (OCI_MANIFEST, 1.0),
        (OCI_INDEX, 1.0),
        ("*/*", 1.0),
    )


def test_parse_accept_multiple_headers() -> None:
    assert [media_range for media_range, _ in parse_accept(DISTRIBUTION_CLIENT_ACCEPT)] == (
        DISTRIBUTION_CLIENT_ACCEPT
    )


def test_parse_accept_weights_parameters_and_case() -> None:
    values = [
        'Text/HTML; level="1, 2;x"; Q=0.5; ext=1, application/*;q=0',
        "a/b ;\tq=0.125 , c/d;q=1.000, e/f;q=0., g/h;q=1., ,,",
        "i/j;charset=utf-8;q=0.9",
    ]
    assert parse_accept(values) == (
        ("text/html", 0.5),
        ("application/*", 0.0),
        ("a/b", 0.125),
        ("c/d", 1.0),
        ("e/f", 0.0),
        ("g/h", 1.0),
        ("i/j", 0.9),
    )


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "json",
        "/",
        "a/",
        "/b",
        "*/json",
        "a/b/c",
        "a b/c",
        "é/b",
        "a/b;q=1.5",
        "a/b;q=2",
        "a/b;q=0.1234",
        "a/b;q=",
        "a/b;q=.5",
        "a/b;q = 0.5",
        "a/b;=x",
        "a/b;x",
        'a/b;x="unterminated',
        "a/b;x=a b",
        "a/b;x=\x00",
        "\x00/\x01",
    ],
)
def test_parse_accept_skips_malformed_elements(garbage: str) -> None:
    assert parse_accept([garbage, "x/y"]) == (("x/y", 1.0),)
    if '"' in garbage:
        # An unterminated quoted string runs to the end of its header value.
        expected: tuple[tuple[str, float], ...] = (("x/y", 1.0),)
    else:
        expected = (("x/y", 1.0), ("z/w", 0.5))
    assert parse_accept([f"x/y, {garbage}, z/w;q=0.5"]) == expected


def test_parse_accept_caps_the_ranges() -> None:
    values = [", ".join(f"a/t{index}" for index in range(MAX_ACCEPT_RANGES + 10))]
    ranges = parse_accept(values)
    assert len(ranges) == MAX_ACCEPT_RANGES
    assert ranges[-1] == (f"a/t{MAX_ACCEPT_RANGES - 1}", 1.0)


@pytest.mark.parametrize(
    ("values", "media_type", "expected"),
    [
        ([OCI_INDEX], OCI_INDEX, True),
        ([OCI_INDEX], OCI_MANIFEST, False),
        ([f"{OCI_INDEX};q=0"], OCI_INDEX, False),
        ([f"{OCI_INDEX};q=0.001"], OCI_INDEX, True),
        (["*/*"], OCI_INDEX, True),
        (["*/*"], "application/vnd.example+json", True),
        (["application/*"], DOCKER_MANIFEST, True),
        (["text/*"], DOCKER_MANIFEST, False),
        (["*/*;q=0"], DOCKER_MANIFEST, False),
        ([f"*/*, {OCI_INDEX};q=0"], OCI_INDEX, False),
        ([f"*/*, {OCI_INDEX};q=0"], OCI_MANIFEST, True),
        ([f"application/*;q=0, {OCI_INDEX}"], OCI_INDEX, True),
        ([f"application/*;q=0, {OCI_INDEX}"], OCI_MANIFEST, False),
        (["application/*;q=0", "*/*"], OCI_MANIFEST, False),
        ([f"{OCI_INDEX};q=0", OCI_INDEX], OCI_INDEX, True),
        ([OCI_INDEX.upper()], f"{OCI_INDEX}; charset=utf-8", True),
        (CONTAINERD_ACCEPT, DOCKER_MANIFEST_LIST, True),
        (DISTRIBUTION_CLIENT_ACCEPT, OCI_INDEX, False),
        (DISTRIBUTION_CLIENT_ACCEPT, DOCKER_MANIFEST_LIST, True),
        (["*/*"], "not a type", False),
    ],
)
def test_accepts(values: list[str], media_type: str, expected: bool) -> None:
    assert accepts(values, media_type) is expected


@pytest.mark.parametrize("values", [[], [""], ["  ", ","], ["garbage", "a/;q=x"]])
def test_no_accept_admits_the_served_manifest_types(values: list[str]) -> None:
    for media_type in MANIFEST_MEDIA_TYPES:
        assert accepts(values, media_type)
    assert not accepts(values, DOCKER_SCHEMA1_SIGNED)
    assert not accepts(values, "application/json")
    assert upstream_accept(values) == DEFAULT_ACCEPT


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            CONTAINERD_ACCEPT,
            f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}, {OCI_MANIFEST}, {OCI_INDEX}",
        ),
        (DISTRIBUTION_CLIENT_ACCEPT, f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}"),
        ([OCI_MANIFEST, OCI_MANIFEST, f"{OCI_MANIFEST};q=0.5"], OCI_MANIFEST),
        (
            [f"{OCI_INDEX};q=0.5, {DOCKER_MANIFEST};q=0.25"],
            f"{OCI_INDEX};q=0.5, {DOCKER_MANIFEST};q=0.25",
        ),
        ([f"{OCI_INDEX};q=0, {OCI_MANIFEST}"], OCI_MANIFEST),
        (["*/*"], DEFAULT_ACCEPT),
        (["application/*"], DEFAULT_ACCEPT),
        (
            [f"{DOCKER_MANIFEST}, */*;q=0.5, {OCI_INDEX};q=0"],
            f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5, {DOCKER_MANIFEST_LIST};q=0.5",
        ),
        (
            [f"*/*, {OCI_MANIFEST}"],
            f"{OCI_INDEX}, {DOCKER_MANIFEST_LIST}, {DOCKER_MANIFEST}, {OCI_MANIFEST}",
        ),
        ([DOCKER_SCHEMA1_SIGNED], DEFAULT_ACCEPT),
        (["application/json"], DEFAULT_ACCEPT),
        ([f"{OCI_INDEX};q=0"], DEFAULT_ACCEPT),
        ([f"{DOCKER_MANIFEST_LIST};charset=utf-8"], DOCKER_MANIFEST_LIST),
    ],
)
def test_upstream_accept(values: list[str], expected: str) -> None:
    assert upstream_accept(values) == expected


# --- property tests ----------------------------------------------------------------------


@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_regcache_errors(raw: bytes) -> None:
    with contextlib.suppress(RegcacheError):
        parse_manifest(raw, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
manifest_keys = st.sampled_from(
    [
        "schemaVersion",
        "mediaType",
        "config",
        "layers",
        "manifests",
        "subject",
        "artifactType",
        "annotations",
        "digest",
        "size",
        "platform",
        "urls",
    ]
)


@settings(max_examples=60)
@given(
    st.dictionaries(manifest_keys, json_values, max_size=8),
    st.sampled_from([None, OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST]),
)
def test_random_json_documents_raise_only_regcache_errors(
    document: dict[str, Any], content_type: str | None
) -> None:
    document.setdefault("schemaVersion", 2)
    with contextlib.suppress(RegcacheError):
        parse_manifest(json.dumps(document).encode(), content_type)


def field_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    paths: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += field_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += field_paths(item, (*prefix, index))
    return paths


@given(st.data(), st.sampled_from([M, IX, D, DL]))
def test_mutated_manifests_raise_only_regcache_errors(data: st.DataObject, raw: bytes) -> None:
    path = data.draw(st.sampled_from(field_paths(json.loads(raw))))
    value = data.draw(json_values | st.just(...))
    content_type = data.draw(st.sampled_from([None, *sorted(MANIFEST_MEDIA_TYPES)]))
    with contextlib.suppress(RegcacheError):
        parse_manifest(mutate(raw, path, value), content_type)


hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
labels = st.from_regex(r"[a-z][a-z0-9.+-]{0,20}/[a-z][a-z0-9.+-]{0,30}", fullmatch=True)
plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
platforms = st.builds(
    Platform,
    architecture=plain_text,
    os=plain_text,
    variant=st.none() | plain_text,
    os_version=st.none() | plain_text,
    os_features=st.lists(plain_text, max_size=2).map(tuple),
)
descriptors = st.builds(
    Descriptor,
    media_type=labels,
    digest=hex64.map(sha256),
    size=st.integers(0, 2**63 - 1),
    platform=st.none() | platforms,
    annotations=st.dictionaries(plain_text, plain_text, max_size=3),
    artifact_type=st.none() | labels,
    urls=st.lists(plain_text, max_size=2).map(tuple),
)


def descriptor_json(descriptor: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mediaType": descriptor.media_type,
        "digest": str(descriptor.digest),
        "size": descriptor.size,
    }
    if descriptor.platform is not None:
        platform = descriptor.platform
        out["platform"] = {"architecture": platform.architecture, "os": platform.os}
        if platform.variant is not None:
            out["platform"]["variant"] = platform.variant
        if platform.os_version is not None:
            out["platform"]["os.version"] = platform.os_version
        if platform.os_features:
            out["platform"]["os.features"] = list(platform.os_features)
    if descriptor.annotations:
        out["annotations"] = dict(descriptor.annotations)
    if descriptor.artifact_type is not None:
        out["artifactType"] = descriptor.artifact_type
    if descriptor.urls:
        out["urls"] = list(descriptor.urls)
    return out


@settings(max_examples=40)
@given(
    st.sampled_from(sorted(MANIFEST_MEDIA_TYPES)),
    descriptors,
    st.lists(descriptors, max_size=4),
    st.none() | descriptors,
    st.booleans(),
    st.sampled_from([None, 1, 4, "\t"]),
    st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
    st.booleans(),
)
def test_generated_manifests_round_trip(
    media_type: str,
    config: Descriptor,
    entries: list[Descriptor],
    subject: Descriptor | None,
    send_content_type: bool,
    indent: int | str | None,
    separators: tuple[str, str],
    sort_keys: bool,
) -> None:
    is_index = media_type in INDEX_MEDIA_TYPES
    is_oci = media_type in (OCI_MANIFEST, OCI_INDEX)
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if is_index:
        document["manifests"] = [descriptor_json(entry) for entry in entries]
    else:
        document["config"] = descriptor_json(config)
        document["layers"] = [descriptor_json(entry) for entry in entries]
    if is_oci and subject is not None:
        document["subject"] = descriptor_json(subject)
    raw = json.dumps(
        document, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=False
    ).encode()
    manifest = parse_manifest(raw, media_type if send_content_type else None)
    assert manifest.raw == raw
    assert manifest.digest == sha256(hashlib.sha256(raw).hexdigest())
    assert manifest.media_type == media_type
    assert manifest.is_index is is_index
    if is_index:
        assert manifest.manifests == tuple(entries)
        assert manifest.blobs() == ()
    else:
        assert manifest.config == config
        assert manifest.layers == tuple(entries)
        assert manifest.blobs() == (config, *entries)
    assert manifest.subject == (subject if is_oci else None)


accept_pieces = st.sampled_from(
    [
        *sorted(MANIFEST_MEDIA_TYPES),
        DOCKER_SCHEMA1_SIGNED,
        "application/json",
        "*/*",
        "application/*",
        "text/*",
    ]
)
weights = st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.001", ";charset=utf-8"])
accept_headers = st.lists(
    st.lists(st.tuples(accept_pieces, weights).map("".join), min_size=1, max_size=4).map(", ".join),
    max_size=3,
)


@given(st.lists(st.text(max_size=60), max_size=4))
def test_random_accept_values_never_raise(values: list[str]) -> None:
    for media_range, quality in parse_accept(values):
        assert media_range == media_range.lower()
        assert "/" in media_range
        assert 0.0 <= quality <= 1.0
    upstream_accept(values)
    accepts(values, OCI_INDEX)


@given(accept_headers)
def test_upstream_accept_asks_for_exactly_what_the_client_admits(values: list[str]) -> None:
    sent = parse_accept([upstream_accept(values)])
    sent_types = [media_range for media_range, _ in sent]
    assert len(sent_types) == len(set(sent_types))
    assert set(sent_types) <= MANIFEST_MEDIA_TYPES
    assert all(quality > 0 for _, quality in sent)
    admitted = {media_type for media_type in MANIFEST_MEDIA_TYPES if accepts(values, media_type)}
    if admitted:
        assert set(sent_types) == admitted
        # What is fetched for this client is reusable for it.
        assert all(accepts(values, media_type) for media_type in sent_types)
    else:
        assert upstream_accept(values) == DEFAULT_ACCEPT


@given(
    st.from_regex(r"[a-z0-9_.-]{1,12}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
    st.none() | st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True),
)
def test_platform_round_trip(os_name: str, architecture: str, variant: str | None) -> None:
    platform = Platform(architecture, os_name, variant)
    assert Platform.parse(str(platform)) == platform


@given(st.text(max_size=40))
def test_platform_parse_raises_only_local_protocol_errors(text: str) -> None:
    with contextlib.suppress(LocalProtocolError):
        Platform.parse(text)
