"""The request router: a registry HTTP request in, a typed route out.

Recognises every endpoint of the OCI distribution spec's endpoint table
(section "Endpoints", end-1 to end-14 with the lettered variants 4a/4b/4c,
8a/8b and 12a/12b) plus ``GET /v2/_catalog``, which the spec leaves out but
every registry serves. Read endpoints become :class:`Ping`, :class:`Catalog`,
:class:`BlobRoute`, :class:`ManifestRoute`, :class:`TagsList` and :class:`Referrers`;
every write, upload and delete endpoint becomes one :class:`WriteOperation`
naming its spec endpoint, so a read-only mirror can answer them 405 after the
request was validated like any other.

Which upstream registry a request is for is decided, in order, by containerd's
``?ns=<registry>`` query parameter, a leading path component naming a
configured registry or alias (``/v2/dockerhub/library/nginx/...``,
``/v2/ghcr.io/org/app/...``), the host the client asked for (CONNECT mode),
and finally the default registry. Docker Hub short names are then normalised
(``nginx`` is ``library/nginx``).

Anything that could escape or confuse a path is refused before it reaches a
storage key or an upstream URL: percent-encoding in the path, ``.`` and ``..``
segments, empty segments, upper case in names, control characters, and
over-long targets.

Error codes chosen where the spec names none:

- a path that is no registry endpoint: ``NAME_UNKNOWN`` (404), as a registry
  answers 404 for a path it does not serve;
- a malformed path or name: ``NAME_INVALID`` (400); an over-long target: the
  same code with status 414;
- a malformed tag in a manifest URL: ``MANIFEST_UNKNOWN`` (404), see
  :func:`~regcache.core._reference.validate_tag`;
- a malformed upload session id: ``BLOB_UPLOAD_UNKNOWN`` (404): no upload can
  have that id;
- a malformed query parameter (``n``, ``last``, ``tag``, ``artifactType``):
  ``UNSUPPORTED`` with status 400. distribution answers a bad ``n`` with its
  own ``PAGINATION_NUMBER_INVALID`` (400), which is not an OCI code;
- an unconfigured registry: ``DENIED`` (403), with the configuration key to set.
"""

from __future__ import annotations

import enum
import re
import types
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs

from ._digest import ALGORITHM_HEX_LENGTHS, Digest
from ._errors import ErrorCode, RemoteProtocolError
from ._reference import (
    RegistryMap,
    looks_like_registry,
    normalize_repository,
    validate_registry,
    validate_repository,
    validate_tag,
)

#: Longest request-target accepted. A valid target is far shorter (a 255
#: character name, a sha512 digest and a few query parameters); the bound
#: keeps hostile targets from costing parse time or reaching logs whole.
MAX_TARGET_LENGTH: Final = 8 * 1024

#: Largest page size (``n``) a client may ask of the catalog or tag list, so
#: one request cannot make the cache build an unbounded answer.
MAX_PAGE_SIZE: Final = 10_000

#: Longest upload session id. Registries use UUIDs or short opaque tokens;
#: the bound keeps the id a sane storage key and log field.
MAX_UPLOAD_ID_LENGTH: Final = 256

#: Longest ``artifactType`` filter: a media type is at most 127 + 1 + 127
#: characters (RFC 6838 section 4.2).
MAX_ARTIFACT_TYPE_LENGTH: Final = 255

# Bytes that may appear in the path as they are: RFC 3986 "pchar" without
# "%" (percent-encoding is refused), plus "[" and "]" for an IPv6 registry
# prefix, which is validated as a host on its own.
_PATH_RE: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/\[\]]*", re.ASCII)
# Bytes that may appear in the query: pchar, "/", "?" and percent-escapes.
_QUERY_RE: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*", re.ASCII)
_PERCENT_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
# distribution's upload id pattern ``[a-zA-Z0-9-_.=]+``.
_UPLOAD_ID_RE: Final = re.compile(r"[A-Za-z0-9\-_.=]+", re.ASCII)
_PAGE_SIZE_RE: Final = re.compile(r"[0-9]{1,9}", re.ASCII)
# RFC 6838 section 4.2 restricted-name, type "/" subtype.
_MEDIA_TYPE_RE: Final = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]{0,126}", re.ASCII
)
_READ_METHODS: Final = ("GET", "HEAD")


class WriteKind(enum.Enum):
    """A write, upload or delete endpoint of the OCI distribution spec, by its ID."""

    #: ``POST /v2/<name>/blobs/uploads/``: open an upload session.
    END_4A_UPLOAD_START = "end-4a"
    #: ``POST /v2/<name>/blobs/uploads/?digest=<digest>``: monolithic upload.
    END_4B_UPLOAD_MONOLITHIC = "end-4b"
    #: ``POST /v2/<name>/blobs/uploads/?digest-algorithm=<algorithm>``.
    END_4C_UPLOAD_START_ALGORITHM = "end-4c"
    #: ``PATCH /v2/<name>/blobs/uploads/<reference>``: upload a chunk.
    END_5_UPLOAD_CHUNK = "end-5"
    #: ``PUT /v2/<name>/blobs/uploads/<reference>?digest=<digest>``: close the upload.
    END_6_UPLOAD_COMPLETE = "end-6"
    #: ``PUT /v2/<name>/manifests/<reference>``: push a manifest.
    END_7_MANIFEST_PUT = "end-7"
    #: ``DELETE /v2/<name>/manifests/<reference>``.
    END_9_MANIFEST_DELETE = "end-9"
    #: ``DELETE /v2/<name>/blobs/<digest>``.
    END_10_BLOB_DELETE = "end-10"
    #: ``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<other_name>``.
    END_11_MOUNT = "end-11"
    #: ``GET /v2/<name>/blobs/uploads/<reference>``: upload status.
    END_13_UPLOAD_STATUS = "end-13"
    #: ``DELETE /v2/<name>/blobs/uploads/<reference>``: cancel the upload.
    END_14_UPLOAD_CANCEL = "end-14"


@attrs.frozen
class Ping:
    """``GET /v2/`` (end-1): the API version check. ``HEAD`` is accepted too."""


@attrs.frozen
class Catalog:
    """``GET /v2/_catalog``: the repositories of ``registry``, ``n`` at a time after ``last``."""

    registry: str
    n: int | None = None
    last: str | None = None
    #: True when containerd's ``?ns=`` chose the registry, so the answer
    #: echoes it in ``OCI-Namespace``.
    namespace_from_ns: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class BlobRoute:
    """``GET``/``HEAD /v2/<name>/blobs/<digest>`` (end-2)."""

    registry: str
    repository: str
    digest: Digest
    head: bool = False
    namespace_from_ns: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class ManifestRoute:
    """``GET``/``HEAD /v2/<name>/manifests/<reference>`` (end-3).

    ``reference`` is a :class:`Digest` when the URL names a digest, else the
    validated tag.
    """

    registry: str
    repository: str
    reference: str | Digest
    head: bool = False
    namespace_from_ns: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class TagsList:
    """``GET /v2/<name>/tags/list`` (end-8a), paginated by ``n`` and ``last`` (end-8b)."""

    registry: str
    repository: str
    n: int | None = None
    last: str | None = None
    namespace_from_ns: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class Referrers:
    """``GET /v2/<name>/referrers/<digest>`` (end-12a), optionally filtered (end-12b)."""

    registry: str
    repository: str
    digest: Digest
    artifact_type: str | None = None
    namespace_from_ns: bool = attrs.field(default=False, kw_only=True)


@attrs.frozen
class WriteOperation:
    """A validated write, upload or delete request; ``kind`` names the spec endpoint.

    ``digest`` is the blob digest of end-4b, end-6, end-10 and end-11;
    ``reference`` the manifest tag or digest of end-7 and end-9; ``upload_id``
    the session of end-5, end-6, end-13 and end-14; ``mount_from`` the source
    repository of end-11; ``digest_algorithm`` the algorithm of end-4c;
    ``tags`` the extra ``?tag=`` values of a manifest push.
    """

    kind: WriteKind
    registry: str
    repository: str
    digest: Digest | None = None
    reference: str | Digest | None = None
    upload_id: str | None = None
    mount_from: str | None = None
    digest_algorithm: str | None = None
    tags: tuple[str, ...] = ()
    namespace_from_ns: bool = attrs.field(default=False, kw_only=True)

    def refusal(self) -> RemoteProtocolError:
        """The ``UNSUPPORTED`` (405) error a read-only cache answers this request with."""
        return RemoteProtocolError(
            ErrorCode.UNSUPPORTED,
            f"{self.kind.value} is a write operation; this registry is a read-only cache",
        )


#: Every route :func:`parse_route` returns.
Route: TypeAlias = (
    Ping | Catalog | BlobRoute | ManifestRoute | TagsList | Referrers | WriteOperation
)


def _invalid(message: str, code: ErrorCode = ErrorCode.NAME_INVALID) -> RemoteProtocolError:
    return RemoteProtocolError(code, message)


def _query_invalid(message: str) -> RemoteProtocolError:
    # See the module docstring: no OCI code fits a bad query parameter.
    return RemoteProtocolError(ErrorCode.UNSUPPORTED, message, status=400)


def _method_not_allowed(
    method: str, endpoint: str, allowed: tuple[str, ...]
) -> RemoteProtocolError:
    return RemoteProtocolError(
        ErrorCode.UNSUPPORTED,
        f"method {method[:16]!r} is not allowed on {endpoint}; allowed: {', '.join(allowed)}",
        headers=(("Allow", ", ".join(allowed)),),
    )


def _not_configured(what: str, registry: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        ErrorCode.DENIED,
        f'{what} {registry!r} is not configured: add a [registries."{registry}"] table'
        " to the configuration, or set mirror.allow_unknown_registries = true",
    )


# --------------------------------------------------------------------------
# Query strings


def _percent_decode(text: str, key: str) -> str:
    """Decode one query key or value as Go's ``url.ParseQuery`` does, but strictly."""
    if "%" not in text and "+" not in text:
        return text
    if _PERCENT_RE.search(text):
        raise _query_invalid(f"query parameter {key[:32]!r} has a malformed percent-escape")
    raw = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%":
            raw.append(int(text[index + 1 : index + 3], 16))
            index += 3
            continue
        raw += b" " if char == "+" else char.encode("ascii")
        index += 1
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _query_invalid(f"query parameter {key[:32]!r} is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise _query_invalid(f"query parameter {key[:32]!r} contains a control character")
    return decoded


@attrs.frozen
class _Query:
    params: Mapping[str, tuple[str, ...]]

    @classmethod
    def parse(cls, query: str) -> _Query:
        params: dict[str, list[str]] = {}
        for piece in query.split("&"):
            if not piece:
                continue
            raw_key, _, raw_value = piece.partition("=")
            key = _percent_decode(raw_key, raw_key)
            params.setdefault(key, []).append(_percent_decode(raw_value, key))
        return cls({k: tuple(v) for k, v in params.items()})

    def get(self, key: str) -> str | None:
        values = self.params.get(key)
        if values is None:
            return None
        if len(values) > 1:
            raise _query_invalid(f"query parameter {key!r} is given {len(values)} times")
        return values[0]

    def page_size(self) -> int | None:
        text = self.get("n")
        if text is None:
            return None
        if not _PAGE_SIZE_RE.fullmatch(text):
            raise _query_invalid(f"query parameter n={text[:32]!r} is not a non-negative integer")
        size = int(text)
        if size > MAX_PAGE_SIZE:
            raise _query_invalid(f"query parameter n={size} is above the limit of {MAX_PAGE_SIZE}")
        return size

    def digest(self, key: str, endpoint: str, *, required: bool) -> Digest | None:
        text = self.get(key)
        if text is None:
            if required:
                raise _invalid(f"{endpoint} needs a ?{key}=<digest>", ErrorCode.DIGEST_INVALID)
            return None
        try:
            return Digest.parse(text)
        except RemoteProtocolError as exc:
            raise _invalid(
                f"query parameter {key}: {exc.message}", ErrorCode.DIGEST_INVALID
            ) from None


# --------------------------------------------------------------------------
# Paths


def _split_target(target: str) -> tuple[str, str]:
    """Check the request-target's bytes and split it into path and query."""
    if len(target) > MAX_TARGET_LENGTH:
        raise RemoteProtocolError(
            ErrorCode.NAME_INVALID,
            f"request target is {len(target)} characters long; the limit is {MAX_TARGET_LENGTH}",
            status=414,
        )
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        raise _invalid("request target must be a path starting with '/v2/'", ErrorCode.NAME_UNKNOWN)
    if "%" in path:
        raise _invalid(
            "percent-encoding is not allowed in the path: registry names, tags and digests"
            " never need it"
        )
    bad = _PATH_RE.match(path)
    assert bad is not None  # the pattern matches the empty prefix
    if bad.end() < len(path):
        raise _invalid(f"the path contains the illegal character {path[bad.end()]!r}")
    bad = _QUERY_RE.match(query)
    assert bad is not None
    if bad.end() < len(query):
        raise _query_invalid(f"the query contains the illegal character {query[bad.end()]!r}")
    return path, query


def _split_path(path: str) -> list[str] | None:
    """The segments after ``/v2/``; ``None`` for the version check itself."""
    if path in ("/v2", "/v2/"):
        return None
    if not path.startswith("/v2/"):
        raise _invalid(
            f"{path[:64]!r} is not a registry API path: they all start with '/v2/'",
            ErrorCode.NAME_UNKNOWN,
        )
    segments = path[len("/v2/") :].split("/")
    for segment in segments:
        if segment in (".", ".."):
            raise _invalid("the path contains a '.' or '..' segment")
    if "" in segments[:-1]:
        raise _invalid("the path contains an empty segment (a double slash)")
    if segments[-1] == "" and segments[-3:-1] != ["blobs", "uploads"]:
        raise _invalid("the path ends with a slash")
    return segments


class _Endpoint(enum.Enum):
    CATALOG = "/v2/_catalog"
    BLOB = "/v2/<name>/blobs/<digest>"
    MANIFEST = "/v2/<name>/manifests/<reference>"
    TAGS = "/v2/<name>/tags/list"
    REFERRERS = "/v2/<name>/referrers/<digest>"
    UPLOADS = "/v2/<name>/blobs/uploads/"
    UPLOAD = "/v2/<name>/blobs/uploads/<reference>"


_ALLOWED_METHODS: Final[Mapping[_Endpoint, tuple[str, ...]]] = types.MappingProxyType(
    {
        _Endpoint.CATALOG: ("GET",),
        _Endpoint.BLOB: ("GET", "HEAD", "DELETE"),
        _Endpoint.MANIFEST: ("GET", "HEAD", "PUT", "DELETE"),
        _Endpoint.TAGS: ("GET",),
        _Endpoint.REFERRERS: ("GET",),
        _Endpoint.UPLOADS: ("POST",),
        _Endpoint.UPLOAD: ("GET", "PATCH", "PUT", "DELETE"),
    }
)


def _match_endpoint(segments: list[str]) -> tuple[_Endpoint, list[str], str]:
    """Find the endpoint from the end of the path: (endpoint, name segments, last segment).

    Matching from the end lets repository names contain ``blobs``,
    ``manifests`` or ``tags`` components, as distribution's routes do.
    """
    count = len(segments)
    if count >= 3 and segments[-3:-1] == ["blobs", "uploads"]:
        endpoint = _Endpoint.UPLOADS if segments[-1] == "" else _Endpoint.UPLOAD
        return endpoint, segments[:-3], segments[-1]
    if count >= 2:
        marker, last = segments[-2], segments[-1]
        if marker == "blobs" and last == "uploads":
            # distribution redirects the slash-less form; accepting it is simpler.
            return _Endpoint.UPLOADS, segments[:-2], ""
        if marker == "blobs":
            return _Endpoint.BLOB, segments[:-2], last
        if marker == "manifests":
            return _Endpoint.MANIFEST, segments[:-2], last
        if marker == "tags" and last == "list":
            return _Endpoint.TAGS, segments[:-2], last
        if marker == "referrers":
            return _Endpoint.REFERRERS, segments[:-2], last
    if segments[-1] == "_catalog" and count <= 2:
        return _Endpoint.CATALOG, segments[:-1], ""
    raise _invalid(
        f"/v2/{'/'.join(segments)[:64]} is not a registry API endpoint", ErrorCode.NAME_UNKNOWN
    )


# --------------------------------------------------------------------------
# Choosing the registry


@attrs.frozen
class _Target:
    registry: str
    repository: str
    from_ns: bool


def _registry_for(name: str, what: str, registry_map: RegistryMap) -> str:
    """The registry ``name`` (from ``ns=``, a prefix or the client's host) stands for."""
    key = registry_map.lookup(name)
    if key is not None:
        return key
    try:
        registry = validate_registry(name)
    except RemoteProtocolError as exc:
        raise _invalid(f"{what}: {exc.message}") from None
    key = registry_map.lookup(registry)
    if key is not None:
        return key
    if not registry_map.allow_unknown_registries:
        raise _not_configured(what, registry)
    return registry


def _ns_registry(query: _Query, registry_map: RegistryMap) -> str | None:
    """Rule 1: the registry containerd names in ``?ns=``."""
    ns = query.get("ns")
    if ns is None:
        return None
    if not ns:
        raise _invalid("query parameter ns= is empty; it names the upstream registry")
    return _registry_for(ns, "registry from ns=", registry_map)


def _prefix_registry(first: str, registry_map: RegistryMap) -> str | None:
    """Rule 2: the registry a leading path segment names, or ``None`` if it names none."""
    if first.lower() != first:
        if looks_like_registry(first):
            raise _invalid(f"registry prefix {first[:64]!r} must be lower case")
        return None
    key = registry_map.lookup(first)
    if key is None and looks_like_registry(first):
        key = _registry_for(first, "registry prefix", registry_map)
    return key


def _fallback_registry(host: str | None, registry_map: RegistryMap) -> str:
    """Rules 3 and 4: the host the client asked for, else the default registry."""
    if host is None:
        return registry_map.default_registry
    # CONNECT targets carry the port, and an intercepted connection is always
    # TLS: "ghcr.io:443" is "ghcr.io", one registry and one cache.
    key = registry_map.lookup(host)
    if key is not None:
        return key
    return _registry_for(host.removesuffix(":443"), "registry host", registry_map)


def _target(
    name_segments: list[str],
    query: _Query,
    registry_map: RegistryMap,
    host: str | None,
    registry_prefixes: bool,
) -> _Target:
    """Choose the registry by the routing rules in order, then validate the repository."""
    if not name_segments:
        raise _invalid("the path names no repository")
    registry = _ns_registry(query, registry_map)
    from_ns = registry is not None
    if registry is None and registry_prefixes and len(name_segments) >= 2:
        # A single segment is always a repository, as a one-component name is
        # always on Docker Hub in distribution's reference grammar.
        registry = _prefix_registry(name_segments[0], registry_map)
        if registry is not None:
            name_segments = name_segments[1:]
    if registry is None:
        registry = _fallback_registry(host, registry_map)
    # Validated before normalising too, so the message quotes the client's name.
    repository = validate_repository("/".join(name_segments))
    return _Target(
        registry, validate_repository(normalize_repository(registry, repository)), from_ns
    )


def _catalog(
    prefix: list[str],
    query: _Query,
    registry_map: RegistryMap,
    host: str | None,
    registry_prefixes: bool,
) -> Catalog:
    registry = _ns_registry(query, registry_map)
    from_ns = registry is not None
    if prefix:
        key = _prefix_registry(prefix[0], registry_map) if registry_prefixes else None
        if key is None or from_ns:
            raise _invalid(
                f"/v2/{prefix[0][:64]}/_catalog: only a configured registry or alias may prefix"
                " _catalog, and not together with ns="
            )
        registry = key
    if registry is None:
        registry = _fallback_registry(host, registry_map)
    last = query.get("last")
    if last is not None:
        try:
            validate_repository(last)
        except RemoteProtocolError as exc:
            raise _query_invalid(f"query parameter last: {exc.message}") from None
    return Catalog(registry, query.page_size(), last, namespace_from_ns=from_ns)


# --------------------------------------------------------------------------
# Building routes


def _manifest_reference(text: str) -> str | Digest:
    # A tag cannot contain ':', so a ':' means the client meant a digest.
    if ":" in text:
        return Digest.parse(text)
    return validate_tag(text)


def _upload_id(text: str) -> str:
    if len(text) > MAX_UPLOAD_ID_LENGTH or not _UPLOAD_ID_RE.fullmatch(text):
        raise _invalid(
            f"upload session id {text[:64]!r} is malformed: expected at most"
            f" {MAX_UPLOAD_ID_LENGTH} letters, digits, '-', '_', '.' or '='",
            ErrorCode.BLOB_UPLOAD_UNKNOWN,
        )
    return text


def _query_tag(key: str, value: str) -> str:
    try:
        return validate_tag(value)
    except RemoteProtocolError as exc:
        raise _query_invalid(f"query parameter {key}: {exc.message}") from None


def _tags_list(where: _Target, query: _Query) -> TagsList:
    last = query.get("last")
    if last is not None:
        _query_tag("last", last)
    return TagsList(
        where.registry, where.repository, query.page_size(), last, namespace_from_ns=where.from_ns
    )


def _referrers(where: _Target, digest_text: str, query: _Query) -> Referrers:
    digest = Digest.parse(digest_text)
    artifact_type = query.get("artifactType")
    if artifact_type is not None and (
        len(artifact_type) > MAX_ARTIFACT_TYPE_LENGTH or not _MEDIA_TYPE_RE.fullmatch(artifact_type)
    ):
        raise _query_invalid(
            f"query parameter artifactType={artifact_type[:64]!r} is not a media type"
        )
    return Referrers(
        where.registry, where.repository, digest, artifact_type, namespace_from_ns=where.from_ns
    )


def _write(kind: WriteKind, where: _Target, **fields: Any) -> WriteOperation:
    return WriteOperation(
        kind, where.registry, where.repository, namespace_from_ns=where.from_ns, **fields
    )


def _upload_start(where: _Target, query: _Query) -> WriteOperation:
    endpoint = "POST /v2/<name>/blobs/uploads/"
    mount = query.digest("mount", endpoint, required=False)
    if mount is not None:
        source = query.get("from")
        if source is not None:
            try:
                validate_repository(source)
            except RemoteProtocolError as exc:
                raise _invalid(f"query parameter from: {exc.message}") from None
            source = normalize_repository(where.registry, source)
        return _write(WriteKind.END_11_MOUNT, where, digest=mount, mount_from=source)
    digest = query.digest("digest", endpoint, required=False)
    if digest is not None:
        return _write(WriteKind.END_4B_UPLOAD_MONOLITHIC, where, digest=digest)
    algorithm = query.get("digest-algorithm")
    if algorithm is None:
        return _write(WriteKind.END_4A_UPLOAD_START, where)
    if algorithm not in ALGORITHM_HEX_LENGTHS:
        raise _invalid(
            f"digest-algorithm={algorithm[:32]!r} is not supported (only"
            f" {', '.join(sorted(ALGORITHM_HEX_LENGTHS))})",
            ErrorCode.DIGEST_INVALID,
        )
    return _write(WriteKind.END_4C_UPLOAD_START_ALGORITHM, where, digest_algorithm=algorithm)


def _upload_session(method: str, where: _Target, upload_text: str, query: _Query) -> WriteOperation:
    upload_id = _upload_id(upload_text)
    if method == "PUT":
        endpoint = "PUT /v2/<name>/blobs/uploads/<reference>"
        digest = query.digest("digest", endpoint, required=True)
        return _write(WriteKind.END_6_UPLOAD_COMPLETE, where, digest=digest, upload_id=upload_id)
    return _write(_UPLOAD_KINDS[method], where, upload_id=upload_id)


_UPLOAD_KINDS: Final[Mapping[str, WriteKind]] = types.MappingProxyType(
    {
        "GET": WriteKind.END_13_UPLOAD_STATUS,
        "PATCH": WriteKind.END_5_UPLOAD_CHUNK,
        "DELETE": WriteKind.END_14_UPLOAD_CANCEL,
    }
)


def parse_route(
    method: str,
    target: str,
    registry_map: RegistryMap,
    *,
    host: str | None = None,
    registry_prefixes: bool | None = None,
) -> Route:
    """Turn a registry request (method and request-target) into a typed route.

    ``target`` is the HTTP request-target: the path and an optional query.
    ``host`` is the registry host the client asked for in CONNECT mode.
    ``registry_prefixes`` enables routing by a leading path segment (rule 2
    of the module docstring); by default it is on for the mirror (no
    ``host``) and off in CONNECT mode, where the path is the intercepted
    registry's own and a first segment such as GitLab's ``my.group`` must not
    be taken for a registry.

    Raises :class:`RemoteProtocolError` carrying the OCI code and status to
    answer with.
    """
    if registry_prefixes is None:
        registry_prefixes = host is None
    path, raw_query = _split_target(target)
    segments = _split_path(path)
    query = _Query.parse(raw_query)
    if segments is None:
        if method not in _READ_METHODS:
            raise _method_not_allowed(method, "/v2/", _READ_METHODS)
        return Ping()

    endpoint, name_segments, last = _match_endpoint(segments)
    allowed = _ALLOWED_METHODS[endpoint]
    if method not in allowed:
        raise _method_not_allowed(method, endpoint.value, allowed)
    if endpoint is _Endpoint.CATALOG:
        return _catalog(name_segments, query, registry_map, host, registry_prefixes)

    where = _target(name_segments, query, registry_map, host, registry_prefixes)
    head = method == "HEAD"
    if endpoint is _Endpoint.BLOB:
        digest = Digest.parse(last)
        if method == "DELETE":
            return _write(WriteKind.END_10_BLOB_DELETE, where, digest=digest)
        return BlobRoute(
            where.registry, where.repository, digest, head, namespace_from_ns=where.from_ns
        )
    if endpoint is _Endpoint.MANIFEST:
        reference = _manifest_reference(last)
        if method == "PUT":
            tags = tuple(_query_tag("tag", tag) for tag in query.params.get("tag", ()))
            return _write(WriteKind.END_7_MANIFEST_PUT, where, reference=reference, tags=tags)
        if method == "DELETE":
            return _write(WriteKind.END_9_MANIFEST_DELETE, where, reference=reference)
        return ManifestRoute(
            where.registry, where.repository, reference, head, namespace_from_ns=where.from_ns
        )
    if endpoint is _Endpoint.TAGS:
        return _tags_list(where, query)
    if endpoint is _Endpoint.REFERRERS:
        return _referrers(where, last, query)
    if endpoint is _Endpoint.UPLOADS:
        return _upload_start(where, query)
    return _upload_session(method, where, last, query)
