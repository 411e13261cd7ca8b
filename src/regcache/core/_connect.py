"""What a CONNECT proxy does with each tunnel request.

RFC 9110 §9.3.6: ``CONNECT host:port``. regcache is never an open proxy: a
target that is a configured registry (by name, alias or upstream host) is
intercepted, TLS terminated with a minted leaf and served from the cache; a
target the operator listed in ``[proxy] tunnel`` is passed through as bytes;
anything else is refused with a message that says how to allow it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import attrs

from ._errors import ErrorCode, RemoteProtocolError
from ._reference import RegistryMap

#: A CONNECT target longer than this is no host:port.
MAX_CONNECT_TARGET = 300

#: The default ports: a registry configured as ``https://host`` (or
#: ``http://host``) is ``host:443`` (``host:80``) to a proxy client.
HTTPS_PORT = 443
HTTP_PORT = 80


@attrs.frozen
class Intercept:
    """Terminate TLS for ``host`` and serve ``registry`` from the cache."""

    registry: str
    host: str
    port: int


@attrs.frozen
class Login:
    """Terminate TLS for a token realm host of ``registry`` and answer logins there.

    Clients reach an upstream's token realm (``auth.docker.io``) when they
    learned it before they used the proxy; regcache answers for the registry,
    so it answers its realm too, with tokens the registry host accepts.
    """

    registry: str
    host: str
    port: int


@attrs.frozen
class Tunnel:
    """Pass the bytes through to ``host``:``port`` uninspected."""

    host: str
    port: int


@attrs.frozen
class Refuse:
    """Refuse the CONNECT (403) with ``reason``."""

    host: str
    port: int
    reason: str


ConnectDecision = Intercept | Login | Tunnel | Refuse

#: Token realm hosts of well-known registries that live on another host than
#: the registry's API (/work/shared/REGISTRIES.md §5); more are learned from
#: the challenges the upstreams send.
WELL_KNOWN_TOKEN_HOSTS = {"auth.docker.io": "docker.io", "gitlab.com": "registry.gitlab.com"}


def parse_connect_target(target: str) -> tuple[str, int]:
    """Split a CONNECT request-target (authority form) into host and port.

    IPv6 literals come in brackets (``[::1]:443``) and are returned without
    them. Raises a 400 error for anything that is not ``host:port``.
    """
    if len(target) > MAX_CONNECT_TARGET or not target:
        raise _bad_target(target)
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise _bad_target(target)
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad_target(target) from None
    else:
        host, sep, port_text = target.rpartition(":")
        if not sep or not host or ":" in host:
            raise _bad_target(target)
    # isdigit() admits other scripts' digits and superscripts; ports are ASCII.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise _bad_target(target)
    if any(char.isspace() or char in "/@?#%\\" for char in host):
        raise _bad_target(target)
    return host.lower().rstrip("."), int(port_text)


def _bad_target(target: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        ErrorCode.UNKNOWN,
        f"CONNECT target {target[:80]!r} is not host:port",
        status=400,
    )


def classify_connect(
    host: str,
    port: int,
    registry_map: RegistryMap,
    *,
    tunnel_allowed: bool,
    token_hosts: Mapping[str, str] | None = None,
) -> ConnectDecision:
    """Decide what to do with ``CONNECT host:port``.

    ``tunnel_allowed`` says whether the target matches a ``[proxy] tunnel``
    pattern (matching lives with the configuration). Registries win over
    tunnels: a registry listed in both is still cached. ``token_hosts`` maps
    token realm hosts (``host`` for port 443, else ``host:port``) to the
    configured registry they serve; :data:`WELL_KNOWN_TOKEN_HOSTS` are
    included for the registries that are configured.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    registry = registry_map.lookup(authority)
    if registry is None and port in (HTTPS_PORT, HTTP_PORT):
        registry = registry_map.lookup(host)
    if registry is not None:
        return Intercept(registry, host, port)
    logins = {
        name: target
        for name, target in WELL_KNOWN_TOKEN_HOSTS.items()
        if target in registry_map.registries
    }
    logins.update(token_hosts or {})
    login_registry = logins.get(authority) or (logins.get(host) if port == HTTPS_PORT else None)
    if login_registry is not None:
        return Login(login_registry, host, port)
    if tunnel_allowed:
        return Tunnel(host, port)
    return Refuse(
        host,
        port,
        f"regcache intercepts only configured registries and does not tunnel {authority}.\n"
        f'To cache it, configure it as a registry:  [registries."{host}"] url = "https://{authority}"\n'
        f'To pass it through uninspected, add it to [proxy] tunnel:  tunnel = ["{host}"]\n',
    )
