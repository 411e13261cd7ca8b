"""The configuration model: regcache's TOML contract as frozen attrs classes.

One class per TOML table of DESIGN.md, "Configuration (user-facing contract)";
the attribute names are the key names users write, so they are the contract.
Each field carries a one-line ``help`` in its metadata (rendered into the
commented TOML that documents the defaults) and, where the value has a text
syntax of its own, a ``kind`` (duration, size, listen address) that tells the
codec which parser reads it.

Validation lives here, on the classes, so a configuration built in code is
checked the same way as one read from a file. Validators raise
:class:`~regcache.core.ConfigError` with the key path relative to the class
(``users.alice``); the codec prefixes the path of the table (``mirror.``).
This module does not import cattrs: text-to-value decoding is in ``_load``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from regcache.core._errors import ConfigError
from regcache.core._reference import DEFAULT_REGISTRY, RegistryMap

from ._units import (
    check_host,
    check_host_pattern,
    check_password_hash,
    check_registry_name,
    check_url,
    describe_value,
    join_key_path,
    quote_key,
    redact_url,
    split_host_port,
    url_host,
)

# Field metadata keys (namespaced so other attrs tooling cannot collide).
HELP = "regcache.help"
KIND = "regcache.kind"
KIND_DURATION = "duration"
KIND_SIZE = "size"
KIND_LISTEN = "listen"
# Which values are secrets, so that a printed configuration can hide them.
HIDE = "regcache.hide"
HIDE_VALUE = "value"
HIDE_URL_USERINFO = "url-userinfo"
HIDE_MAP_VALUES = "map-values"

LOG_LEVELS = ("debug", "info", "warning", "error")

# The listeners' default host, as DESIGN.md promises: a proxy for a cluster
# is reached from other machines.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104

GiB = 1024**3

REGISTRY_URL_MUST_BE = "an https or http URL"
PROXY_URL_MUST_BE = "an http or https proxy URL such as http://proxy.example:3128"


def _meta(help_text: str, kind: str = "", *, hide: str = "") -> dict[str, str]:
    meta = {HELP: help_text}
    if kind:
        meta[KIND] = kind
    if hide:
        meta[HIDE] = hide
    return meta


def _lower(value: str) -> str:
    return value.lower()


def _lower_all(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(value.lower() for value in values)


def _frozen_str_map(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _redacted(value: str) -> str:
    return "'***'" if value else "''"


def _redacted_users(users: Mapping[str, str]) -> str:
    return repr(dict.fromkeys(users, "***"))


def _redacted_url(url: str) -> str:
    return repr(redact_url(url))


def _check_path(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if "\x00" in value:
        raise ConfigError(attribute.name, "a path must not contain a NUL character")


def _check_non_empty_path(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ConfigError(attribute.name, "must not be empty")
    _check_path(instance, attribute, value)


def _check_log_level(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in LOG_LEVELS:
        raise ConfigError(
            attribute.name, f"expected one of {', '.join(LOG_LEVELS)}, got {describe_value(value)}"
        )


def _check_positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(attribute.name, f"must be more than zero, got {value!r}")


def _check_not_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ConfigError(attribute.name, f"must not be negative, got {value!r}")


def _field_check(check: Callable[[str], object]) -> Callable[[object, Any, str], None]:
    """An attrs validator running ``check`` on a value; its error names the key."""

    def validate(_: object, attribute: attrs.Attribute[str], value: str) -> None:
        try:
            check(value)
        except ConfigError as exc:
            raise ConfigError(attribute.name, exc.reason) from None

    return validate


def _each_check(
    check: Callable[[str], object],
) -> Callable[[object, Any, tuple[str, ...]], None]:
    """An attrs validator running ``check`` on every item; errors name the index."""

    def validate(
        _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
    ) -> None:
        for index, item in enumerate(value):
            try:
                check(item)
            except ConfigError as exc:
                raise ConfigError(f"{attribute.name}[{index}]", exc.reason) from None

    return validate


def _registry_url(url: str) -> None:
    check_url(url, allow_credentials=False, allow_path=True, what=REGISTRY_URL_MUST_BE)


def _proxy_url(url: str) -> None:
    if url:
        check_url(url, allow_credentials=True, allow_path=False, what=PROXY_URL_MUST_BE)


_check_registry_url = _field_check(_registry_url)
_check_mirror_urls = _each_check(_registry_url)
_check_proxy_url = _field_check(_proxy_url)
_check_names = _each_check(check_registry_name)
_check_registry_name = _field_check(check_registry_name)
_check_host_patterns = _each_check(check_host_pattern)


def _check_users(
    _: object, attribute: attrs.Attribute[Mapping[str, str]], value: Mapping[str, str]
) -> None:
    for name, password_hash in value.items():
        path = join_key_path(attribute.name, quote_key(name))
        # RFC 7617 section 2: the user-id of Basic credentials cannot hold a colon.
        if not name or ":" in name or not name.isprintable():
            raise ConfigError(path, "a user name must be non-empty, printable and without ':'")
        try:
            check_password_hash(password_hash)
        except ConfigError as exc:
            raise ConfigError(path, exc.reason) from None


def _check_listen_host(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        return
    reason = check_host(f"[{value}]" if ":" in value else value)
    if reason is not None:
        raise ConfigError(attribute.name, reason)


def _check_port(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(attribute.name, f"port {value!r} is not in 0..65535")


LISTEN_EXPECTED = "expected a listen address such as 0.0.0.0:5000, :5000 or [::]:5000"


@attrs.frozen
class ListenAddress:
    """A TCP address to listen on. ``host`` is "" for every interface; IPv6 without brackets."""

    host: str = attrs.field(validator=_check_listen_host)
    port: int = attrs.field(validator=_check_port)

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse ``0.0.0.0:5000``, ``:5000``, ``[::]:5000``, ``localhost:0``.

        Raises ConfigError with an empty key path.
        """
        if text.startswith(":") and text[1:].isdigit():
            text = f"{ALL_INTERFACES}{text}"
            all_interfaces = True
        else:
            all_interfaces = False
        try:
            host, port = split_host_port(text, min_port=0)
        except ConfigError as exc:
            raise ConfigError("", f"{LISTEN_EXPECTED}: {exc.reason}") from None
        if port is None:
            raise ConfigError("", f"{LISTEN_EXPECTED}, got {describe_value(text)} (no port)")
        if all_interfaces:
            host = ""
        return cls(host.strip("[]").lower(), port)

    def overlaps(self, other: ListenAddress) -> bool:
        """Whether binding both would clash: the same fixed port on a shared interface.

        Port 0 picks a free port, so it never clashes. A wildcard host ("",
        0.0.0.0, ::) shares its port with every address of the machine.
        """
        if self.port == 0 or self.port != other.port:
            return False
        wildcards = ("", "0.0.0.0", "::")  # noqa: S104
        return self.host == other.host or self.host in wildcards or other.host in wildcards

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@attrs.frozen
class MirrorConfig:
    """``[mirror]``: the registry mirror front end (``/v2/`` over HTTP)."""

    listen: ListenAddress | None = attrs.field(
        default=ListenAddress(ALL_INTERFACES, 5000),
        metadata=_meta('address of the mirror front end; "" disables it', KIND_LISTEN),
    )
    default_registry: str = attrs.field(
        default="docker.io",
        converter=_lower,
        validator=_check_registry_name,
        metadata=_meta("registry for names that say none (a configured name or alias)"),
    )
    allow_unknown_registries: bool = attrs.field(
        default=False,
        metadata=_meta("whether ns= may name a registry that is not configured"),
    )
    users: Mapping[str, str] = attrs.field(
        factory=dict,
        converter=_frozen_str_map,
        validator=_check_users,
        repr=_redacted_users,
        metadata=_meta(
            "name = password hash: Basic auth for mirror clients (none: open)",
            hide=HIDE_MAP_VALUES,
        ),
    )


@attrs.frozen
class ProxyConfig:
    """``[proxy]``: the CONNECT front end, which intercepts registry hosts with TLS."""

    listen: ListenAddress | None = attrs.field(
        default=ListenAddress(ALL_INTERFACES, 3128),
        metadata=_meta('address of the CONNECT proxy; "" disables it', KIND_LISTEN),
    )
    tunnel: tuple[str, ...] = attrs.field(
        default=(),
        converter=_lower_all,
        validator=_check_host_patterns,
        metadata=_meta(
            "host patterns (host, *.example.com, optional :port) passed through uninspected"
        ),
    )
    ca_cert: str = attrs.field(
        default="",
        validator=_check_path,
        metadata=_meta('CA certificate for interception ("": made in data_dir/ca)'),
    )
    ca_key: str = attrs.field(
        default="",
        validator=_check_path,
        metadata=_meta("private key of ca_cert"),
    )
    users: Mapping[str, str] = attrs.field(
        factory=dict,
        converter=_frozen_str_map,
        validator=_check_users,
        repr=_redacted_users,
        metadata=_meta(
            "name = password hash: Proxy-Authorization users (none: open)",
            hide=HIDE_MAP_VALUES,
        ),
    )

    def __attrs_post_init__(self) -> None:
        if bool(self.ca_cert) != bool(self.ca_key):
            missing = "ca_key" if self.ca_cert else "ca_cert"
            other = "ca_cert" if self.ca_cert else "ca_key"
            raise ConfigError(missing, f"must be set together with {other}")


@attrs.frozen
class UpstreamConfig:
    """``[upstream]``: how regcache reaches every upstream registry.

    ``timeout`` and ``connect_timeout`` are in seconds.
    """

    proxy: str = attrs.field(
        default="",
        validator=_check_proxy_url,
        repr=_redacted_url,
        metadata=_meta(
            'egress proxy for the upstream leg, http://[user:pass@]host:port ("": none)',
            hide=HIDE_URL_USERINFO,
        ),
    )
    ca_file: str = attrs.field(
        default="",
        validator=_check_path,
        metadata=_meta("extra CA bundle trusted for every upstream"),
    )
    timeout: float = attrs.field(
        default=30.0,
        validator=_check_positive,
        metadata=_meta("longest wait for bytes from an upstream", KIND_DURATION),
    )
    connect_timeout: float = attrs.field(
        default=10.0,
        validator=_check_positive,
        metadata=_meta("longest wait for a connection to an upstream", KIND_DURATION),
    )


@attrs.frozen
class CacheConfig:
    """``[cache]``: how much is kept and how long tags and answers are trusted.

    ``max_size`` is in bytes; ``tag_ttl``, ``stale_if_error`` and ``access_ttl``
    are in seconds.
    """

    max_size: int = attrs.field(
        default=100 * GiB,
        validator=_check_positive,
        metadata=_meta(
            "how much the store may hold before least-recently-used blobs go", KIND_SIZE
        ),
    )
    tag_ttl: float = attrs.field(
        default=300.0,
        validator=_check_not_negative,
        metadata=_meta(
            "how long a cached tag is used before it is revalidated with HEAD", KIND_DURATION
        ),
    )
    stale_if_error: float = attrs.field(
        default=86400.0,
        validator=_check_not_negative,
        metadata=_meta(
            "how long a stale tag is still served while its upstream fails", KIND_DURATION
        ),
    )
    access_ttl: float = attrs.field(
        default=600.0,
        validator=_check_not_negative,
        metadata=_meta(
            "how long an upstream's confirmation of a client's access to cached content is kept",
            KIND_DURATION,
        ),
    )


def _strip_slash(url: str) -> str:
    return url.rstrip("/") if url.count("/") > 2 else url


@attrs.frozen
class RegistryConfig:
    """``[registries."<name>"]``: one upstream registry. Secrets stay out of repr."""

    url: str = attrs.field(
        converter=_strip_slash,
        validator=_check_registry_url,
        metadata=_meta("base URL of the registry; /v2/ is under it"),
    )
    aliases: tuple[str, ...] = attrs.field(
        default=(),
        converter=_lower_all,
        validator=_check_names,
        metadata=_meta("other names clients use for it (ns=, first path component, host)"),
    )
    username: str = attrs.field(default="", metadata=_meta('user for the upstream ("": anonymous)'))
    password: str = attrs.field(
        default="",
        repr=_redacted,
        metadata=_meta("password or token for username", hide=HIDE_VALUE),
    )
    password_file: str = attrs.field(
        default="",
        validator=_check_path,
        metadata=_meta("file holding the password (instead of password)"),
    )
    ca_file: str = attrs.field(
        default="", validator=_check_path, metadata=_meta("extra CA for this upstream")
    )
    mirrors: tuple[str, ...] = attrs.field(
        default=(),
        validator=_check_mirror_urls,
        metadata=_meta("upstream URLs tried before url, in order"),
    )
    proxy: str = attrs.field(
        default="",
        validator=_check_proxy_url,
        repr=_redacted_url,
        metadata=_meta(
            'egress proxy for this registry only ("": upstream.proxy)', hide=HIDE_URL_USERINFO
        ),
    )
    enabled: bool = attrs.field(
        default=True, metadata=_meta("false removes this registry (also a built-in one)")
    )

    def __attrs_post_init__(self) -> None:
        if self.password and self.password_file:
            raise ConfigError("password_file", "password and password_file are mutually exclusive")
        if self.username and not (self.password or self.password_file):
            raise ConfigError("username", "needs password or password_file")
        if not self.username and (self.password or self.password_file):
            which = "password" if self.password else "password_file"
            raise ConfigError(which, "needs username")


def _https(host: str, *aliases: str) -> RegistryConfig:
    return RegistryConfig(url=f"https://{host}", aliases=aliases)


DEFAULT_REGISTRIES: Mapping[str, RegistryConfig] = MappingProxyType(
    {
        "docker.io": RegistryConfig(
            url="https://registry-1.docker.io",
            aliases=("dockerhub", "index.docker.io", "registry-1.docker.io"),
        ),
        "registry.k8s.io": _https("registry.k8s.io", "k8s.gcr.io"),
        "gcr.io": _https("gcr.io"),
        "quay.io": _https("quay.io"),
        "ghcr.io": _https("ghcr.io"),
        "mcr.microsoft.com": _https("mcr.microsoft.com"),
        "public.ecr.aws": _https("public.ecr.aws"),
    }
)
"""The registries configured, anonymously, when the configuration names none."""


def _enabled_registries(value: Mapping[str, RegistryConfig]) -> Mapping[str, RegistryConfig]:
    # ``enabled = false`` is how a user removes a built-in registry.
    return MappingProxyType({name: reg for name, reg in value.items() if reg.enabled})


def _check_registry_names(
    _: object,
    attribute: attrs.Attribute[Mapping[str, RegistryConfig]],
    value: Mapping[str, RegistryConfig],
) -> None:
    for name in value:
        path = join_key_path(attribute.name, quote_key(name))
        if name != name.lower():
            raise ConfigError(path, "registry names are lower case")
        try:
            check_registry_name(name)
        except ConfigError as exc:
            raise ConfigError(path, exc.reason) from None


@attrs.frozen
class Config:
    """The whole configuration: one TOML file plus ``REGCACHE_`` environment overrides."""

    data_dir: str = attrs.field(
        default="./regcache-data",
        validator=_check_non_empty_path,
        metadata=_meta("directory of the store, the CA and other state"),
    )
    log_level: str = attrs.field(
        default="info",
        converter=_lower,
        validator=_check_log_level,
        metadata=_meta("debug, info, warning or error"),
    )
    mirror: MirrorConfig = attrs.field(factory=MirrorConfig)
    proxy: ProxyConfig = attrs.field(factory=ProxyConfig)
    upstream: UpstreamConfig = attrs.field(factory=UpstreamConfig)
    cache: CacheConfig = attrs.field(factory=CacheConfig)
    registries: Mapping[str, RegistryConfig] = attrs.field(
        default=DEFAULT_REGISTRIES,
        converter=_enabled_registries,
        validator=_check_registry_names,
        metadata=_meta("upstream registries by canonical name"),
    )

    def __attrs_post_init__(self) -> None:
        names = registry_name_map(self)
        if self.mirror.default_registry not in names:
            raise ConfigError(
                "mirror.default_registry",
                f"{describe_value(self.mirror.default_registry)} is not a configured registry"
                f" or alias (configured: {', '.join(self.registries) or 'none'})",
            )
        mirror, proxy = self.mirror.listen, self.proxy.listen
        if mirror is not None and proxy is not None and mirror.overlaps(proxy):
            raise ConfigError("proxy.listen", f"{proxy} overlaps mirror.listen ({mirror})")


def registry_name_map(config: Config) -> dict[str, str]:
    """Every name a client may use for a registry -> that registry's canonical name.

    The names are each registry's own name, its aliases, the ``host[:port]``
    of its url, and the well-known aliases of configured registries
    (``index.docker.io``, ``k8s.gcr.io``). The router's
    :class:`~regcache.core.RegistryMap` is the one authority on these rules;
    its ConfigError names the key for a name claimed twice, an alias that is
    no path segment, or ``library`` (Docker Hub's own namespace).
    """
    registry_map = RegistryMap.build(
        {canonical: registry.aliases for canonical, registry in config.registries.items()},
        default_registry=next(iter(config.registries), DEFAULT_REGISTRY),
        upstream_hosts={
            canonical: (url_host(registry.url),)
            for canonical, registry in config.registries.items()
        },
    )
    return dict(registry_map.names)


def field_help(cls: type[Any], name: str) -> str:
    """The one-line help of a configuration key."""
    help_text: str = attrs.fields_dict(cls)[name].metadata.get(HELP, "")
    return help_text
