"""Manifest media types, the manifest value model, manifest parsing and ``Accept`` negotiation.

Media types follow the OCI image spec (``media-types.md``, ``manifest.md``,
``image-index.md``, ``descriptor.md``, v1.1) and Docker's "Image Manifest
Version 2, Schema 2" (image manifest and manifest list). Docker schema 1 is
named only so it can be recognised and refused.

``Accept`` parsing follows RFC 9110 section 12.5.1 (media ranges, ``q``
weights from section 12.4.2, wildcards, the most specific range wins). What a
registry does with it is negotiation by tag: the same tag names an index for
a client that admits one and a single manifest for a client that does not.

Manifest bytes are decoded strictly and kept exactly as received: the digest
is over those bytes and they are never re-serialised. Every refusal is a
``MANIFEST_INVALID`` whose message starts with the offending field's path
(``layers[2].digest: ...``). The decoding is written out by hand rather than
with cattrs: manifests need strict types (cattrs would turn ``"5"`` or
``true`` into a size) and a field path in every message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs

from ._digest import Digest
from ._errors import DigestMismatchError, ErrorCode, LocalProtocolError, RemoteProtocolError
from ._frozen import FrozenStrMap

# --- media types -----------------------------------------------------------

#: OCI image manifest (``manifest.md``).
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
#: OCI image index (``image-index.md``).
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
#: OCI image configuration (``config.md``).
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
#: The OCI empty descriptor's type: ``{}``, used as the config of artifacts.
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
#: OCI layers (``layer.md``).
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
#: Docker image manifest, schema 2.
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
#: Docker manifest list ("fat manifest").
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
#: Docker container configuration.
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
#: Docker layers; "foreign" layers carry ``urls`` and are never pushed.
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#: Docker plugin configuration.
DOCKER_PLUGIN_CONFIG: Final = "application/vnd.docker.plugin.v1+json"
#: Docker schema 1, unsigned and signed (JWS). Recognised only to be refused.
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: Single-image manifests: a config and layers.
IMAGE_MANIFEST_MEDIA_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: Indexes: a list of manifests, usually one per platform.
INDEX_MEDIA_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: Every manifest type regcache parses, caches and serves.
MANIFEST_MEDIA_TYPES: Final = IMAGE_MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES
#: Docker schema 1 types, refused everywhere.
SCHEMA1_MEDIA_TYPES: Final = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# Upstream order of preference when the client states none. Registries ignore
# the order and pick the tag's own type if it is listed, so this only matters
# to a registry that honours it; the index types come first so that a
# multi-platform tag is never flattened to one platform.
_DEFAULT_TYPES: Final = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

#: The ``Accept`` value sent upstream for a client that sent none: the four
#: manifest types regcache serves. Asked by tag with no ``Accept`` (or only
#: wildcards), distribution 2.8 converts a Docker schema 2 manifest or list to
#: schema 1 (a 400 where its schema 1 signing is off) and answers 404 for OCI
#: content, and Docker Hub has been seen answering schema 1 the same way.
#: regcache refuses schema 1, so it always names every modern type and never
#: lets an upstream fall back to it.
DEFAULT_ACCEPT: Final = ", ".join(_DEFAULT_TYPES)

# Media ranges considered per request. Real clients send five or six; a list
# far longer than that is junk or abuse, and this bounds the work per request.
MAX_ACCEPT_RANGES: Final = 64

# RFC 9110 section 5.6.2: token characters.
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 9110 section 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
_QVALUE_RE: Final = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
# RFC 9110 section 5.6.4: quoted-string, with qdtext and quoted-pair.
_QUOTED_RE: Final = re.compile(
    r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"\Z'
)


def normalize_media_type(value: str) -> str:
    """The bare, lower-case ``type/subtype`` of a ``Content-Type``-style value.

    Parameters (``; charset=utf-8``) are dropped: registries send them on
    manifests now and then, and no manifest type defines any. Returns ``""``
    when ``value`` is not a ``type/subtype`` pair of tokens.
    """
    bare = value.partition(";")[0].strip(" \t").lower()
    kind, sep, subtype = bare.partition("/")
    if not sep or not _TOKEN_RE.match(kind) or not _TOKEN_RE.match(subtype):
        return ""
    return bare


def is_manifest_media_type(media_type: str) -> bool:
    """Whether ``media_type`` (parameters allowed) is a manifest type regcache serves."""
    return normalize_media_type(media_type) in MANIFEST_MEDIA_TYPES


# --- Accept ----------------------------------------------------------------


def _split_outside_quotes(text: str, separator: str) -> Iterator[str]:
    """Split on ``separator`` except inside quoted strings (RFC 9110 5.6.4)."""
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            yield text[start:index]
            start = index + 1
    yield text[start:]


def _parse_media_range(element: str) -> tuple[str, float] | None:
    """One ``media-range [ weight ]`` element, or ``None`` if it is malformed."""
    media_range, *parameters = _split_outside_quotes(element, ";")
    media_range = media_range.strip(" \t").lower()
    kind, sep, subtype = media_range.partition("/")
    if not sep or not _TOKEN_RE.match(kind) or not _TOKEN_RE.match(subtype):
        return None
    if kind == "*" and subtype != "*":
        return None  # "*/json" is not a media range.
    quality = 1.0
    for parameter in parameters:
        parameter = parameter.strip(" \t")
        if not parameter:
            continue  # RFC 9110 5.6.6 allows empty parameters ("a/b;;q=1").
        name, sep, value = parameter.partition("=")
        if not sep or not _TOKEN_RE.match(name):
            return None
        if name.lower() == "q":
            if not _QVALUE_RE.match(value):
                return None
            quality = float(value)
            # What follows the weight are accept-extensions, which no
            # manifest negotiation uses.
            break
        if not _TOKEN_RE.match(value) and not _QUOTED_RE.match(value):
            return None
    return media_range, quality


def parse_accept(values: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """Parse ``Accept`` header values into ``(media_range, quality)`` pairs.

    ``values`` holds every ``Accept`` field of a request (clients send
    several, or one comma-separated list, or both). Media ranges come back
    lower-cased without their parameters, in the order sent; ``quality`` is
    the ``q`` weight (1.0 when absent). A malformed element is skipped, never
    raised: one bad entry must not cost a client the others. At most
    :data:`MAX_ACCEPT_RANGES` ranges are returned.
    """
    ranges: list[tuple[str, float]] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            if len(ranges) >= MAX_ACCEPT_RANGES:
                return tuple(ranges)
            if not element.strip(" \t"):
                continue  # RFC 9110 5.6.1: empty list elements are ignored.
            parsed = _parse_media_range(element)
            if parsed is not None:
                ranges.append(parsed)
    return tuple(ranges)


def _quality(ranges: Sequence[tuple[str, float]], media_type: str) -> float | None:
    """The weight the most specific matching range gives ``media_type``, if any.

    RFC 9110 12.5.1: the most specific range has precedence. When one range
    appears more than once with different weights the highest is taken, so a
    duplicate header cannot make a client refuse what it also asked for.
    """
    kind = media_type.partition("/")[0]
    best_rank = -1
    best_quality: float | None = None
    for media_range, quality in ranges:
        if media_range == media_type:
            rank = 2
        elif media_range == f"{kind}/*":
            rank = 1
        elif media_range == "*/*":
            rank = 0
        else:
            continue
        if rank > best_rank:
            best_rank, best_quality = rank, quality
        elif rank == best_rank and best_quality is not None and quality > best_quality:
            best_quality = quality
    return best_quality


def accepts(accept_values: Sequence[str], media_type: str) -> bool:
    """Whether a client sending these ``Accept`` values admits ``media_type``.

    RFC 9110 12.5.1 matching: exact types, ``application/*`` and ``*/*``,
    the most specific range decides, ``q=0`` means "not acceptable".

    A request with no (usable) ``Accept`` admits exactly the four manifest
    types regcache serves, the types of :data:`DEFAULT_ACCEPT`. distribution
    2.8 instead reads a missing ``Accept`` as a schema 1 client: by tag it
    converts a Docker manifest or list to schema 1, by digest it serves
    Docker types as stored, and OCI content gets a 404 either way (it also
    ignores wildcards and ``q``). regcache never holds schema 1, so it cannot
    give that answer. It asks upstream with
    :func:`upstream_accept`, which sends :data:`DEFAULT_ACCEPT` for such a
    client, and this rule admits exactly what that request can return: the
    answer cached for one such client is reused for the next, and never for
    a client whose ``Accept`` does not admit its type.
    """
    normalized = normalize_media_type(media_type)
    if not normalized:
        return False
    ranges = parse_accept(accept_values)
    if not ranges:
        return normalized in MANIFEST_MEDIA_TYPES
    quality = _quality(ranges, normalized)
    return quality is not None and quality > 0


def _format_range(media_type: str, quality: float) -> str:
    if quality >= 1:
        return media_type
    # At most three decimals (RFC 9110 12.4.2); trailing zeros trimmed.
    return f"{media_type};q={f'{quality:.3f}'.rstrip('0').rstrip('.')}"


def upstream_accept(accept_values: Sequence[str]) -> str:
    """The single ``Accept`` value to send upstream for a client's manifest request.

    It lists the manifest types regcache serves that the client admits, in
    the client's order, each once, with the client's weight when below 1. A
    wildcard the client sent stands, at its place in the list, for every
    such type it admits (a range with ``q=0`` still excludes its type):
    registries ignore wildcards (distribution 2.8 treats ``*/*`` like no
    ``Accept`` at all) and weights (it counts ``q=0`` as accepted), so only
    explicit, admitted types may be sent. Schema 1 and other types are
    dropped, so an upstream never falls back to schema 1.

    A client that sent no ``Accept``, or nothing regcache can serve, gets
    :data:`DEFAULT_ACCEPT`; the caller checks the answer with :func:`accepts`.
    """
    ranges = parse_accept(accept_values)
    if not ranges:
        return DEFAULT_ACCEPT
    named = {media_range for media_range, _ in ranges}
    chosen: dict[str, float] = {}
    for media_range, _ in ranges:
        if media_range in MANIFEST_MEDIA_TYPES:
            candidates: Iterable[str] = (media_range,)
        elif media_range in ("*/*", "application/*"):
            # A type the client also names goes at the place it names it.
            candidates = [media_type for media_type in _DEFAULT_TYPES if media_type not in named]
        else:
            continue
        for media_type in candidates:
            quality = _quality(ranges, media_type)
            if media_type not in chosen and quality is not None and quality > 0:
                chosen[media_type] = quality
    if not chosen:
        return DEFAULT_ACCEPT
    return ", ".join(_format_range(media_type, q) for media_type, q in chosen.items())


# --- values ----------------------------------------------------------------


_NO_ANNOTATIONS: Final = FrozenStrMap()


def _freeze_map(value: Mapping[str, str]) -> FrozenStrMap:
    if isinstance(value, FrozenStrMap):
        return value
    return FrozenStrMap(value) if value else _NO_ANNOTATIONS


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


# containerd's platform specifier syntax (platforms.Parse): components of
# letters, digits, "_", "." and "-".
_PLATFORM_PART_RE: Final = re.compile(r"[A-Za-z0-9_.\-]+\Z")
# A platform string comes from configuration or a query; no real one is long.
MAX_PLATFORM_LENGTH: Final = 256


@attrs.frozen
class Platform:
    """The platform an index entry targets (OCI ``image-index.md``, ``platform``)."""

    architecture: str
    os: str
    variant: str | None = None
    #: ``os.version``: e.g. a Windows build, ``10.0.17763.1879``.
    os_version: str | None = None
    #: ``os.features``: mandatory OS features, e.g. ``win32k``.
    os_features: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/architecture[/variant]``, e.g. ``linux/arm64/v8``.

        Raise :class:`LocalProtocolError` if malformed; a caller reading the
        string from configuration re-raises it as a ``ConfigError``.
        """
        parts = text.split("/")
        if (
            len(text) > MAX_PLATFORM_LENGTH
            or len(parts) not in (2, 3)
            or not all(_PLATFORM_PART_RE.match(part) for part in parts)
        ):
            raise LocalProtocolError(
                f"platform {text[:80]!r} is not os/architecture[/variant]"
                " (letters, digits, '_', '.', '-')"
            )
        return cls(
            architecture=parts[1], os=parts[0], variant=parts[2] if len(parts) == 3 else None
        )

    def __str__(self) -> str:
        if self.variant:
            return f"{self.os}/{self.architecture}/{self.variant}"
        return f"{self.os}/{self.architecture}"


@attrs.frozen
class Descriptor:
    """A content descriptor (OCI ``descriptor.md``): what a manifest points at."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = attrs.field(default=_NO_ANNOTATIONS, converter=_freeze_map)
    artifact_type: str | None = None
    #: Where else the content may be fetched (Docker foreign layers).
    urls: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


@attrs.frozen
class Manifest:
    """A parsed manifest or index, with the exact bytes it was parsed from.

    ``raw`` is kept as received and never re-serialised: the digest is over
    these bytes, and signatures and clients depend on them. Built by
    :func:`parse_manifest`.
    """

    media_type: str
    raw: bytes = attrs.field(repr=False)
    digest: Digest
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    #: The manifest this one refers to (OCI 1.1 referrers).
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = attrs.field(default=_NO_ANNOTATIONS, converter=_freeze_map)

    @property
    def is_index(self) -> bool:
        """Whether this is an index (OCI image index or Docker manifest list)."""
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def size(self) -> int:
        """The length of ``raw`` in bytes."""
        return len(self.raw)

    def blobs(self) -> tuple[Descriptor, ...]:
        """The blobs this manifest needs: its config, then its layers (none for an index)."""
        if self.config is None:
            return self.layers
        return (self.config, *self.layers)

    def descriptor(self) -> Descriptor:
        """A descriptor of this manifest itself, as an index or referrers list holds it."""
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=len(self.raw),
            annotations=self.annotations,
            artifact_type=self.artifact_type,
        )


# --- decoding --------------------------------------------------------------

#: Largest manifest accepted, in bytes. distribution refuses manifest bodies
#: over 4 MiB (``maxManifestBodySize`` in registry/handlers/manifests.go), so
#: no registry built on it holds a larger one; the limit bounds the memory a
#: manifest takes while held and parsed, and the time spent parsing it.
MAX_MANIFEST_SIZE: Final = 4 * 1024 * 1024

# Sizes are int64 in every spec (descriptor.md: "size int64").
_MAX_DESCRIPTOR_SIZE: Final = 2**63 - 1

# Descriptor media types and artifact types are only checked for what could
# do harm (control characters, spaces, absurd length): Go clients accept any
# string there, and refusing an image every client can pull directly would be
# worse than carrying an odd label. RFC 6838 caps a type at 127 + 1 + 127.
_LABEL_RE: Final = re.compile(r"[\x21-\x7e]{1,255}\Z")

_SCHEMA1_REASON: Final = (
    "Docker schema 1 manifests are not supported; schema 1 is deprecated and gone"
    " from distribution 3, and a signed one is served with its signatures while its"
    " digest is taken without them, so its bytes cannot be verified against their"
    " digest and cached. Push the image again with a current client to get a"
    " schema 2 or OCI manifest"
)


def _refuse(path: str, reason: str) -> NoReturn:
    message = f"{path}: {reason}" if path else reason
    raise RemoteProtocolError(ErrorCode.MANIFEST_INVALID, message)


def _refuse_schema1(where: str) -> NoReturn:
    raise RemoteProtocolError(ErrorCode.MANIFEST_INVALID, f"{where}: {_SCHEMA1_REASON}")


def _show(value: Any) -> str:
    """A short rendering of a JSON value for an error message."""
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- JSON ------------------------------------------------------------------


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins (Go and Python keep the
    # last, others the first), so such a document can mean different things
    # to regcache and to each client. A cache must not pass that along.
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                _refuse("", f"manifest has a duplicate key {_show(key)} in one JSON object")
            seen.add(key)
    return document


def _reject_constant(name: str) -> NoReturn:
    _refuse("", f"manifest is not valid JSON: {name} is not a JSON value")


def _decode_json(raw: bytes) -> Any:
    try:
        # RFC 8259 section 8.1: JSON exchanged between systems is UTF-8;
        # json.loads would otherwise guess UTF-16 or UTF-32 from the bytes.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse("", f"manifest is not UTF-8 (invalid byte at offset {exc.start})")
    try:
        return json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _refuse("", f"manifest is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})")
    except RecursionError:
        _refuse("", "manifest is not valid JSON: nested too deeply")
    except ValueError as exc:
        # An integer too long to convert, among others.
        _refuse("", f"manifest is not valid JSON: {str(exc)[:80]}")


# --- fields ----------------------------------------------------------------


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _refuse(path, f"must be a string, not {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate escape ("\ud800"): Go clients read it as U+FFFD,
        # so it would mean something else to them than to regcache.
        _refuse(path, "contains an unpaired surrogate escape")
    return value


def _optional_string(document: Mapping[str, Any], key: str, path: str) -> str | None:
    value = document.get(key)
    return None if value is None else _string(value, path)


def _label(value: Any, path: str) -> str:
    text = _string(value, path)
    if not _LABEL_RE.match(text):
        _refuse(path, f"{_show(text)} is not a media type")
    return text


def _string_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        _refuse(path, f"must be an array of strings, not {_type_name(value)}")
    return tuple(_string(item, f"{path}[{index}]") for index, item in enumerate(value))


def _string_map(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        _refuse(path, f"must be an object of strings, not {_type_name(value)}")
    return {
        _string(key, path): _string(item, f"{path}[{_show(key)}]") for key, item in value.items()
    }


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _refuse(path, f"must be an object, not {_type_name(value)}")
    return value


def _size(value: Any, path: str) -> int:
    if value is None:
        _refuse(path, "is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(path, f"must be an integer, not {_type_name(value)}")
    if not 0 <= value <= _MAX_DESCRIPTOR_SIZE:
        _refuse(path, f"{_show(value)} is not a size (0 to 2^63-1)")
    return value


def _digest(value: Any, path: str) -> Digest:
    if value is None:
        _refuse(path, "is missing")
    try:
        return Digest.parse(_string(value, path))
    except RemoteProtocolError as exc:
        if exc.code is ErrorCode.MANIFEST_INVALID:
            raise
        _refuse(path, exc.message)


def _platform(value: Any, path: str) -> Platform:
    fields = _object(value, path)
    for key in ("architecture", "os"):
        if fields.get(key) is None:
            _refuse(f"{path}.{key}", "is missing")
    features = fields.get("os.features")
    return Platform(
        architecture=_string(fields["architecture"], f"{path}.architecture"),
        os=_string(fields["os"], f"{path}.os"),
        variant=_optional_string(fields, "variant", f"{path}.variant"),
        os_version=_optional_string(fields, "os.version", f"{path}.os.version"),
        os_features=() if features is None else _string_list(features, f"{path}.os.features"),
    )


def _descriptor(value: Any, path: str) -> Descriptor:
    """Decode one descriptor (OCI ``descriptor.md``; Docker's has a subset)."""
    fields = _object(value, path)
    media_type = fields.get("mediaType")
    if media_type is None:
        _refuse(f"{path}.mediaType", "is missing")
    platform = fields.get("platform")
    annotations = fields.get("annotations")
    urls = fields.get("urls")
    artifact_type = fields.get("artifactType")
    data = fields.get("data")
    if data is not None:
        # Embedded content is not used, but a wrong type is still a broken descriptor.
        _string(data, f"{path}.data")
    return Descriptor(
        media_type=_label(media_type, f"{path}.mediaType"),
        digest=_digest(fields.get("digest"), f"{path}.digest"),
        size=_size(fields.get("size"), f"{path}.size"),
        platform=None if platform is None else _platform(platform, f"{path}.platform"),
        annotations={} if annotations is None else _string_map(annotations, f"{path}.annotations"),
        artifact_type=None
        if artifact_type is None
        else _label(artifact_type, f"{path}.artifactType"),
        urls=() if urls is None else _string_list(urls, f"{path}.urls"),
    )


def _descriptor_list(document: Mapping[str, Any], key: str) -> tuple[Descriptor, ...]:
    value = document.get(key)
    if value is None:
        _refuse(key, "is missing")
    if not isinstance(value, list):
        _refuse(key, f"must be an array, not {_type_name(value)}")
    return tuple(_descriptor(item, f"{key}[{index}]") for index, item in enumerate(value))


# --- the document ----------------------------------------------------------


def _media_type(header_type: str, document: Mapping[str, Any]) -> str:
    """Decide what the document is, from ``Content-Type`` and ``mediaType``."""
    body_type = document.get("mediaType")
    if body_type is not None:
        _string(body_type, "mediaType")
    if header_type in MANIFEST_MEDIA_TYPES:
        if body_type is not None and body_type != header_type:
            _refuse(
                "mediaType",
                f"{_show(body_type)} disagrees with the Content-Type {header_type!r}",
            )
        media_type = header_type
    elif body_type is not None:
        if body_type not in MANIFEST_MEDIA_TYPES:
            _refuse("mediaType", f"{_show(body_type)} is not a supported manifest media type")
        media_type = body_type
    elif document.get("manifests") is not None:
        # OCI 1.0 made mediaType optional and some producers leave it out;
        # the shape says which it is, as containerd decides too.
        media_type = OCI_INDEX
    elif document.get("config") is not None:
        media_type = OCI_MANIFEST
    else:
        _refuse("mediaType", "is missing, and neither Content-Type nor the fields tell the type")
    if media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST) and body_type is None:
        # Docker's schema 2 requires it, and distribution refuses without it.
        _refuse("mediaType", f"is missing; it is required in a {media_type}")
    return media_type


def parse_manifest(
    raw: bytes, content_type: str | None, *, expected_digest: Digest | None = None
) -> Manifest:
    """Parse and validate manifest bytes received with ``content_type``.

    The digest is computed over ``raw`` exactly (sha256, or the algorithm of
    ``expected_digest``); a mismatch with ``expected_digest`` raises
    :class:`DigestMismatchError`. The media type is the ``Content-Type``
    (parameters dropped) when it names a supported manifest type, else the
    document's ``mediaType``; if both are present and differ, the manifest
    is refused. Docker schema 1, by type or by ``schemaVersion: 1``, is
    refused with the reason.

    Also refused, as ``MANIFEST_INVALID`` naming the field: more than
    :data:`MAX_MANIFEST_SIZE` bytes, bytes that are not UTF-8 JSON, duplicate
    keys, a ``schemaVersion`` other than 2, missing or mistyped fields, bad
    digests or sizes, and a manifest that also has ``manifests`` or an index
    that also has ``config`` or ``layers`` (CVE-2021-41190: a document that
    reads as either must not be taken for one of them).
    """
    if len(raw) > MAX_MANIFEST_SIZE:
        _refuse("", f"manifest is {len(raw)} bytes, more than the {MAX_MANIFEST_SIZE} byte limit")
    digest = Digest.of_bytes(raw, expected_digest.algorithm if expected_digest else "sha256")
    if expected_digest is not None and digest != expected_digest:
        raise DigestMismatchError(str(expected_digest), str(digest))

    header_type = normalize_media_type(content_type) if content_type else ""
    if header_type in SCHEMA1_MEDIA_TYPES:
        _refuse_schema1(f"Content-Type {header_type!r}")
    document = _decode_json(raw)
    if not isinstance(document, dict):
        _refuse("", f"manifest must be a JSON object, not {_type_name(document)}")

    schema_version = document.get("schemaVersion")
    body_type = document.get("mediaType")
    if isinstance(body_type, str) and body_type in SCHEMA1_MEDIA_TYPES:
        _refuse_schema1(f"mediaType {body_type!r}")
    if type(schema_version) is int and schema_version == 1:
        _refuse_schema1("schemaVersion 1")
    if schema_version is None:
        _refuse("schemaVersion", "is missing")
    if isinstance(schema_version, bool) or not isinstance(schema_version, int):
        _refuse("schemaVersion", f"must be an integer, not {_type_name(schema_version)}")
    if schema_version != 2:
        _refuse("schemaVersion", f"must be 2, not {_show(schema_version)}")

    media_type = _media_type(header_type, document)
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    if media_type in INDEX_MEDIA_TYPES:
        for key in ("config", "layers"):
            if document.get(key) is not None:
                _refuse(key, f"must not be present in an index ({media_type})")
        manifests = _descriptor_list(document, "manifests")
    else:
        if document.get("manifests") is not None:
            _refuse("manifests", f"must not be present in an image manifest ({media_type})")
        if document.get("config") is None:
            _refuse("config", "is missing")
        config = _descriptor(document["config"], "config")
        layers = _descriptor_list(document, "layers")

    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = {}
    if media_type in (OCI_MANIFEST, OCI_INDEX):
        # Docker's schema 2 defines none of these; there they are unknown
        # fields, which a reader ignores.
        if document.get("subject") is not None:
            subject = _descriptor(document["subject"], "subject")
        if document.get("artifactType") is not None:
            artifact_type = _label(document["artifactType"], "artifactType")
        if document.get("annotations") is not None:
            annotations = _string_map(document["annotations"], "annotations")

    return Manifest(
        media_type=media_type,
        raw=raw,
        digest=digest,
        config=config,
        layers=layers,
        manifests=manifests,
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )
