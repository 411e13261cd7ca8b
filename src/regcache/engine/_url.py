"""URLs and origins of upstream requests, and the errors of the upstream client.

Origins (RFC 6454) key the connection pool; ``Location`` references are
resolved per RFC 3986 section 5 (RFC 9110 section 10.2.2), which Google
Artifact Registry's relative redirects need; egress proxy URLs are parsed
here too. Messages name hosts and ports only, never userinfo or queries.
"""

from __future__ import annotations

import base64
import ipaddress
import string
import urllib.parse
from typing import ClassVar, Final

import attrs

from regcache.core._errors import ErrorCode, LocalProtocolError, RemoteProtocolError

# Longest text taken over from a foreign exception into a message: peers
# control some of it, and messages end up in logs and error bodies.
MAX_REASON_CHARS: Final = 200


def _truncated(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HOST_CHARS: Final = frozenset(string.ascii_lowercase + string.digits + "-._")
# Printable ASCII but space: kept as is in a request target; anything else
# (controls, space, non-ASCII) is percent-encoded as UTF-8.
_TARGET_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F))


class UpstreamError(RemoteProtocolError):
    """An upstream could not be reached or answered badly; answered with 502."""

    default_status: ClassVar[int] = 502

    def __init__(self, message: str, *, origin: Origin | None = None) -> None:
        self.origin = origin
        super().__init__(ErrorCode.UPSTREAM_ERROR, message, status=self.default_status)


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream: DNS, refused, proxy refusal or TLS handshake."""


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not connect, accept or answer in time; answered with 504."""

    default_status: ClassVar[int] = 504


class UpstreamConnectTimeoutError(UpstreamConnectError, UpstreamTimeoutError):
    """Connecting (TCP, proxy CONNECT and TLS together) took longer than allowed."""


class UpstreamProtocolError(UpstreamError):
    """The upstream broke HTTP/1.1: malformed or oversized response, or closed mid-way."""


@attrs.frozen
class Origin:
    """Scheme, host and port: the unit of connection reuse (RFC 6454 section 4).

    ``host`` is lower-case, without IPv6 brackets.
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Origin:
        """The origin of an ``http`` or ``https`` URL."""
        return parse_url(url)[0]

    @property
    def host_port(self) -> str:
        """``host:port`` with the port always present, IPv6 hosts bracketed."""
        return f"{_bracketed(self.host)}:{self.port}"

    @property
    def authority(self) -> str:
        """The Host header value: the port only when it is not the scheme's default."""
        if self.port == _DEFAULT_PORTS.get(self.scheme):
            return _bracketed(self.host)
        return self.host_port

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_url(url: str) -> tuple[Origin, str]:
    """Split an ``http(s)`` URL into its origin and request target (path and query).

    The target is ``/`` when the path is empty; userinfo and fragment are
    dropped; spaces, controls and non-ASCII in the target are percent-encoded.
    Raises :class:`UpstreamProtocolError` for anything else (URLs mostly come
    from upstream answers: ``Location`` headers and token realms).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        raise UpstreamProtocolError(f"invalid URL: {_truncated(str(exc))}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UpstreamProtocolError(f"unsupported URL scheme {_truncated(scheme)!r}")
    host = _normalise_host(hostname or "")
    if port == 0:
        raise UpstreamProtocolError(f"invalid port 0 in URL for {host}")
    origin = Origin(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    if not target.startswith("/"):
        raise UpstreamProtocolError(f"URL for {origin.host_port} has a relative path")
    return origin, urllib.parse.quote(target, safe=_TARGET_SAFE)


def _normalise_host(host: str) -> str:
    if not host:
        raise UpstreamProtocolError("URL has no host")
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise UpstreamProtocolError(f"invalid IPv6 host {_truncated(host)!r}") from None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UpstreamProtocolError(f"invalid host name {_truncated(host)!r}") from None
    labels = host.split(".")
    if labels[-1] == "":  # a fully qualified name's trailing dot
        labels.pop()
    if (
        not labels
        or not _HOST_CHARS.issuperset(host)
        or any(not 0 < len(label) < 64 for label in labels)
    ):
        raise UpstreamProtocolError(f"invalid host name {_truncated(host)!r}")
    return host


def resolve_location(base_url: str, location: str) -> str:
    """Resolve a ``Location`` header against the URL of the request that got it.

    Handles absolute, path-relative, path-absolute (Google Artifact Registry
    sends ``/artifacts-downloads/...``) and protocol-relative (``//host/x``)
    references, per RFC 3986 section 5.2. The result is checked with
    :func:`parse_url`.
    """
    reference = location.strip()
    if not reference:
        raise UpstreamProtocolError("empty Location header")
    try:
        resolved = urllib.parse.urljoin(base_url, reference)
    except ValueError:
        raise UpstreamProtocolError("invalid Location header") from None
    parse_url(resolved)
    return resolved


@attrs.frozen
class _Proxy:
    """An egress proxy reached with CONNECT."""

    host: str
    port: int
    # The Proxy-Authorization value: a credential, kept out of reprs.
    authorization: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def parse(cls, proxy_url: str) -> _Proxy:
        try:
            parts = urllib.parse.urlsplit(proxy_url)
            scheme, hostname, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            scheme, hostname, port = "", None, None
        if scheme != "http" or not hostname or port == 0:
            # The URL may hold a password: do not echo it.
            raise LocalProtocolError(
                "an egress proxy URL must look like http://[user:pass@]host:port"
            )
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            authorization = f"Basic {token}"
        return cls(hostname, port or 80, authorization)

    @property
    def host_port(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"


_PoolKey = tuple[Origin, _Proxy | None]
