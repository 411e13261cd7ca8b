"""Image references: repository names, tags, registries and their normal form.

Follows the reference grammar of the CNCF distribution project
(github.com/distribution/reference, ``reference.go``, ``regexp.go``) and its
Docker normalisation (``normalize.go``, ``ParseNormalizedNamed``)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port-number]
    host       := domain-name | "[" IPv6address "]"
    path-component := /[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*/
    tag        := /[\\w][\\w.-]{0,127}/

The OCI distribution spec (section "Pulling manifests") gives the same
``<name>`` and tag expressions. Repository names and tags end up in storage
keys and upstream URLs, so every validator here refuses anything that could
name a different path (``..``, empty components, ``%``, ``\\``, NUL).

:class:`RegistryMap` holds the registries regcache serves under all their
names: keys, aliases (which must fit in one path segment, like a repository
component) and upstream host names.

Two deliberate differences from distribution, both for a reference to have
exactly one normal form: registry hosts are lower-cased (DNS names are case
insensitive), and a first component with upper case letters but no ``.`` or
``:`` is refused instead of being taken as a host name.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from ._digest import ALGORITHM_HEX_LENGTHS, Digest
from ._errors import ConfigError, ErrorCode, LocalProtocolError, RemoteProtocolError

#: Longest repository name (path without registry), from distribution's
#: ``RepositoryNameTotalLengthMax``; longer names could not be pushed anywhere,
#: and the bound keeps storage keys and log lines short.
NAME_TOTAL_LENGTH_MAX: Final = 255

#: Longest tag, from the tag grammar ``[\w][\w.-]{0,127}``.
TAG_MAX: Final = 128

#: Longest registry host with its port: a DNS name is at most 253 characters,
#: an IPv6 literal in brackets plus ``:65535`` is far shorter. Bounds the work
#: done on hostile input before any regular expression runs.
REGISTRY_NAME_MAX: Final = 262

#: Longest reference text accepted by :meth:`Reference.parse`: a maximal
#: registry, repository, tag and sha512 digest with their separators fit;
#: anything longer is refused before it is split or matched.
REFERENCE_TEXT_MAX: Final = (
    REGISTRY_NAME_MAX
    + len("/")
    + NAME_TOTAL_LENGTH_MAX
    + len(":")
    + TAG_MAX
    + len("@sha512:")
    + ALGORITHM_HEX_LENGTHS["sha512"]
)

#: The registry a name without a host belongs to (Docker Hub).
DEFAULT_REGISTRY: Final = "docker.io"

#: Docker Hub's historic "index" host name, normalised to :data:`DEFAULT_REGISTRY`.
LEGACY_DEFAULT_DOMAIN: Final = "index.docker.io"

#: Docker Hub's namespace for official images (``nginx`` is ``library/nginx``).
OFFICIAL_REPO_PREFIX: Final = "library/"

#: The tag a reference gets when it names neither a tag nor a digest.
DEFAULT_TAG: Final = "latest"

#: Host names that are another name of a well-known registry. They are added
#: to a :class:`RegistryMap` when their target is configured and they are not
#: configured themselves: Docker Hub's API and legacy index hosts, and the
#: frozen ``k8s.gcr.io``, whose images are served by ``registry.k8s.io``.
WELL_KNOWN_ALIASES: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        LEGACY_DEFAULT_DOMAIN: DEFAULT_REGISTRY,
        "registry-1.docker.io": DEFAULT_REGISTRY,
        "k8s.gcr.io": "registry.k8s.io",
    }
)

# ``re.ASCII``: Go's ``\w`` and the OCI tag expression are ASCII only; Python's
# would also match letters and digits of every other script.
_PATH_COMPONENT_RE: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_PATH_CHARS_RE: Final = re.compile(r"[a-z0-9._-]*", re.ASCII)
_TAG_RE: Final = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_TAG_CHARS_RE: Final = re.compile(r"[\w.-]*", re.ASCII)
_DOMAIN_COMPONENT: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE: Final = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?",
    re.ASCII,
)
# distribution refuses a bare 64-hex string as a name: it is an image ID.
_IDENTIFIER_RE: Final = re.compile(r"[a-f0-9]{64}", re.ASCII)

# How much of an offending input an error message quotes.
_QUOTE_MAX: Final = 64


def _quote(text: str) -> str:
    """``text`` quoted for an error message, cut short if long."""
    if len(text) > _QUOTE_MAX:
        return repr(text[:_QUOTE_MAX]) + "..."
    return repr(text)


def _name_error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.NAME_INVALID, message)


def _component_problem(component: str) -> str:
    """Why ``component`` is not a valid path component (it is known not to be)."""
    if component == "":
        return "is empty (a leading, trailing or double '/')"
    if component in (".", ".."):
        return "is a '.' or '..' segment, which could name another path"
    if "%" in component:
        return "contains '%': percent-encoding is not allowed in repository names"
    if component.lower() != component and _PATH_COMPONENT_RE.fullmatch(component.lower()):
        return "has upper case letters; repository names are lower case"
    bad = _PATH_CHARS_RE.match(component)
    assert bad is not None  # the pattern matches the empty prefix
    if bad.end() < len(component):
        return f"contains the illegal character {component[bad.end()]!r}"
    if ".." in component:
        return "contains '..'"
    return (
        "must start and end with a lower-case letter or digit, and join them only"
        " with '.', '_', '__' or dashes"
    )


def validate_repository(name: str) -> str:
    """Check a repository name (the path after the registry) and return it.

    Raises ``NAME_INVALID`` saying which component is wrong and why.
    """
    if not name:
        raise _name_error("repository name is empty")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _name_error(
            f"repository name is {len(name)} characters long; the limit is {NAME_TOTAL_LENGTH_MAX}"
        )
    for index, component in enumerate(name.split("/"), start=1):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise _name_error(
                f"repository name {_quote(name)}: component {index} ({_quote(component)})"
                f" {_component_problem(component)}"
            )
    return name


def validate_tag(tag: str) -> str:
    """Check a tag against ``[\\w][\\w.-]{0,127}`` and return it.

    Raises ``MANIFEST_UNKNOWN`` (404). The OCI spec has no code for a bad tag;
    distribution answers a manifest URL with a malformed tag with a plain 404
    (its route does not match), and a manifest under such a tag cannot exist,
    so a 404 with the reason in the message is what clients get here too.
    """
    problem: str | None = None
    if not tag:
        problem = "is empty"
    elif len(tag) > TAG_MAX:
        problem = f"is {len(tag)} characters long; the limit is {TAG_MAX}"
    elif not _TAG_RE.fullmatch(tag):
        bad = _TAG_CHARS_RE.match(tag)
        assert bad is not None  # the pattern matches the empty prefix
        if bad.end() < len(tag):
            problem = f"contains the illegal character {tag[bad.end()]!r}"
        else:
            problem = "must start with a letter, a digit or '_'"
    if problem is not None:
        raise RemoteProtocolError(
            ErrorCode.MANIFEST_UNKNOWN, f"invalid tag {_quote(tag)}: {problem}"
        )
    return tag


def canonical_registry(domain: str) -> str:
    """The normal form of a registry host: lower case, Docker Hub's legacy alias resolved."""
    lowered = domain.lower()
    if lowered == LEGACY_DEFAULT_DOMAIN:
        return DEFAULT_REGISTRY
    return lowered


def looks_like_registry(component: str) -> bool:
    """Whether a name's first component names a registry host, by Docker's rule.

    A component with a ``.`` or a ``:`` (a port, an IPv6 literal), or exactly
    ``localhost``, is a host; anything else is a path on the default registry.
    """
    return "." in component or ":" in component or component == "localhost"


def validate_registry(domain: str) -> str:
    """Check a registry host (``host[:port]``, IPv6 in brackets) and return its canonical form.

    Raises ``NAME_INVALID``.
    """
    if not domain:
        raise _name_error("registry host name is empty")
    if len(domain) > REGISTRY_NAME_MAX:
        raise _name_error(
            f"registry host name is {len(domain)} characters long; the limit is {REGISTRY_NAME_MAX}"
        )
    if not _DOMAIN_RE.fullmatch(domain):
        raise _name_error(
            f"registry {_quote(domain)} is not a host name: expected letters, digits, dashes"
            " and dots, or an IPv6 address in brackets, optionally with ':port'"
        )
    return canonical_registry(domain)


def normalize_repository(registry: str, repository: str) -> str:
    """Docker Hub's familiar short names: on ``docker.io``, ``nginx`` is ``library/nginx``."""
    if canonical_registry(registry) == DEFAULT_REGISTRY and "/" not in repository:
        return OFFICIAL_REPO_PREFIX + repository
    return repository


@attrs.frozen
class Reference:
    """A normalised image reference: registry, repository, and a tag or digest or both.

    Build one with :meth:`parse`. At least one of ``tag`` and ``digest`` is set.
    """

    registry: str
    repository: str
    tag: str | None
    digest: Digest | None

    def __attrs_post_init__(self) -> None:
        if self.tag is None and self.digest is None:
            raise LocalProtocolError("a Reference needs a tag, a digest or both")

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise a reference the way ``docker pull`` does.

        ``nginx`` becomes ``docker.io/library/nginx:latest``; ``index.docker.io``
        becomes ``docker.io``; ``name:tag@digest`` keeps both; the tag
        ``latest`` is added only when neither a tag nor a digest is given.
        Raises ``NAME_INVALID``, ``DIGEST_INVALID`` or ``MANIFEST_UNKNOWN`` (bad
        tag) with a message naming the part that is wrong.
        """
        if not text:
            raise _name_error("image reference is empty")
        if len(text) > REFERENCE_TEXT_MAX:
            raise _name_error(
                f"image reference is {len(text)} characters long; the limit is {REFERENCE_TEXT_MAX}"
            )
        if _IDENTIFIER_RE.fullmatch(text):
            raise _name_error(
                f"image reference {_quote(text)} is a 64-character hex image ID, not a name"
            )

        name_and_tag, at, digest_text = text.partition("@")
        digest: Digest | None = None
        if at:
            try:
                digest = Digest.parse(digest_text)
            except RemoteProtocolError as exc:
                raise RemoteProtocolError(
                    ErrorCode.DIGEST_INVALID,
                    f"image reference {_quote(text)}: the digest after '@' is invalid:"
                    f" {exc.message}",
                ) from None

        domain, remainder = _split_domain(name_and_tag)
        repository, colon, tag_text = remainder.partition(":")
        tag: str | None = None
        if colon:
            try:
                tag = validate_tag(tag_text)
            except RemoteProtocolError as exc:
                raise RemoteProtocolError(
                    exc.code, f"image reference {_quote(text)}: {exc.message}"
                ) from None

        registry = validate_registry(domain)
        if not repository:
            raise _name_error(f"image reference {_quote(text)} has no repository name")
        try:
            repository = validate_repository(normalize_repository(registry, repository))
        except RemoteProtocolError as exc:
            raise _name_error(f"image reference {_quote(text)}: {exc.message}") from None

        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes in ``/v2/<name>/manifests/<reference>``: the digest if any, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        assert self.tag is not None  # __attrs_post_init__ guarantees one of them
        return self.tag

    def familiar(self) -> str:
        """Docker's short form: ``nginx:latest`` for ``docker.io/library/nginx:latest``."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository
            remainder = name.removeprefix(OFFICIAL_REPO_PREFIX)
            if remainder != name and "/" not in remainder:
                name = remainder
        return name + self._suffix()

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag is not None else ""
        if self.digest is not None:
            suffix += f"@{self.digest}"
        return suffix

    def __str__(self) -> str:
        return self.name + self._suffix()


def _split_domain(name: str) -> tuple[str, str]:
    """Split ``name[:tag]`` into registry host and the rest, as ``splitDockerDomain`` does."""
    first, slash, rest = name.partition("/")
    if not slash:
        # A single component is always a Docker Hub name, even "localhost:5000"
        # (which is "library/localhost" tagged "5000"), as in distribution.
        return DEFAULT_REGISTRY, name
    if looks_like_registry(first):
        return first, rest
    if first.lower() != first:
        raise _name_error(
            f"image reference {_quote(name)}: {_quote(first)} has upper case letters;"
            " repository names are lower case, and a registry host name needs a '.' or"
            " a ':port' (or must be 'localhost')"
        )
    return DEFAULT_REGISTRY, name


def _freeze_names(names: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType({k.lower(): v.lower() for k, v in names.items()})


@attrs.frozen
class RegistryMap:
    """Which upstream registry each name a client may use stands for.

    ``names`` maps every configured registry's own name, each of its aliases
    and its upstream hosts (lower case) to the registry's key, e.g.
    ``{"docker.io": "docker.io", "dockerhub": "docker.io",
    "registry-1.docker.io": "docker.io"}``. Build it with :meth:`build`.
    """

    default_registry: str
    names: Mapping[str, str] = attrs.field(converter=_freeze_names, hash=False)
    allow_unknown_registries: bool = False

    @classmethod
    def build(
        cls,
        registries: Mapping[str, Iterable[str]],
        *,
        default_registry: str = DEFAULT_REGISTRY,
        allow_unknown_registries: bool = False,
        upstream_hosts: Mapping[str, Iterable[str]] | None = None,
    ) -> RegistryMap:
        """Build the map from each registry key and its other names (aliases, upstream hosts).

        ``upstream_hosts`` are names too, kept apart only so that an error
        about one names the registry's ``url`` key rather than its aliases.

        Also maps :data:`WELL_KNOWN_ALIASES` of configured registries. Raises
        :class:`ConfigError` naming the key for a registry key that is not a
        host name, an alias that cannot be a path segment or is ``library``
        (Docker Hub's official namespace, which must keep working unprefixed),
        a name claimed by two registries, or an unconfigured default.
        """
        names: dict[str, str] = {}

        def claim(name: str, key: str, key_path: str) -> None:
            owner = names.setdefault(name, key)
            if owner != key:
                raise ConfigError(
                    key_path, f"{name!r} already names the registry {owner!r}, not {key!r}"
                )

        for raw_key, other_names in registries.items():
            key_path = f'registries."{raw_key}"'
            try:
                key = validate_registry(raw_key)
            except RemoteProtocolError as exc:
                raise ConfigError(key_path, exc.message) from None
            claim(key, key, key_path)
            for raw_name in other_names:
                name = raw_name.lower()
                if not (_PATH_COMPONENT_RE.fullmatch(name) or _is_host(name)):
                    raise ConfigError(
                        f"{key_path}.aliases",
                        f"{raw_name!r} is neither a host name nor a single path segment"
                        " (lower-case letters, digits, '.', '_', '-')",
                    )
                if name + "/" == OFFICIAL_REPO_PREFIX:
                    raise ConfigError(
                        f"{key_path}.aliases",
                        f"{raw_name!r} is Docker Hub's official namespace and cannot be an alias",
                    )
                claim(name, key, f"{key_path}.aliases")
            for host in (upstream_hosts or {}).get(raw_key, ()):
                claim(host.lower(), key, f"{key_path}.url")
        for alias, target in WELL_KNOWN_ALIASES.items():
            if target in names.values() and alias not in names:
                names[alias] = target

        default = names.get(default_registry.lower())
        if default is None:
            if not allow_unknown_registries:
                raise ConfigError(
                    "mirror.default_registry",
                    f"{default_registry!r} is not a configured registry; add a"
                    f' [registries."{default_registry}"] table or choose a configured one',
                )
            try:
                default = validate_registry(default_registry)
            except RemoteProtocolError as exc:
                raise ConfigError("mirror.default_registry", exc.message) from None
        return cls(default, names, allow_unknown_registries)

    @property
    def registries(self) -> frozenset[str]:
        """The keys of the configured registries."""
        return frozenset(self.names.values())

    def lookup(self, name: str) -> str | None:
        """The registry key ``name`` (a registry, alias or upstream host) stands for, if any."""
        return self.names.get(name.lower())


def _is_host(name: str) -> bool:
    if not looks_like_registry(name):
        return False
    try:
        validate_registry(name)
    except RemoteProtocolError:
        return False
    return True
