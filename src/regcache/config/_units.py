"""The value syntaxes of the configuration: durations, sizes, hosts, URLs.

Pure parsers (text in, value out) and renderers (value in, canonical text out)
for the scalar values of regcache's TOML contract (DESIGN.md, "Configuration").
A parser raises :class:`~regcache.core.ConfigError` with an empty key path and
a reason; the configuration codec fills in the path of the key it was reading.

- Durations are written like Go's ``time.ParseDuration`` (the form
  distribution and containerd configurations use), plus ``d`` for days:
  ``30s``, ``5m``, ``24h``, ``7d``, ``1h30m``, ``250ms``, ``1.5h``; a bare
  number is seconds. Units appear at most once each, largest first.
- Sizes use IEC 80000-13 binary prefixes (``KiB`` = 1024, also ``Ki`` as in
  Kubernetes quantities) and SI decimal prefixes (``kB`` or ``k`` = 1000);
  a bare number is bytes. Fractions are allowed and round down to whole bytes.
- Host names follow RFC 1123 section 2.1 (letters, digits, hyphens; labels of
  at most 63 characters; 253 in all); IP literals follow RFC 3986 section
  3.2.2 (IPv6 in brackets). URLs are RFC 3986 ``http``/``https`` URLs.
- Password hashes are ``pbkdf2-sha256$<iterations>$<salt>$<hash>`` (RFC 8018
  section 5.2 PBKDF2 with HMAC-SHA-256; salt and hash in RFC 4648 section 4
  base64, padding optional). Only the shape is checked here.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from decimal import Decimal, InvalidOperation

from regcache.core._challenge import check_password_hash as core_check_password_hash
from regcache.core._errors import ConfigError

# A configuration value is a short token; capping its length keeps every
# parser here linear and stops a pasted blob from reaching the regexes.
MAX_VALUE_LENGTH = 256

# A century. Longer is a typo, and keeping durations this small keeps
# ``now + duration`` exact to well under a millisecond in a float.
MAX_DURATION_SECONDS = 100 * 365 * 86400

# 2**63 - 1: filesystems and object stores report sizes as signed 64-bit
# integers; anything larger is a typo and could not be accounted.
MAX_SIZE_BYTES = 2**63 - 1

# RFC 1035 section 2.3.4 / RFC 1123 section 2.1 limits on host names.
MAX_HOST_NAME_LENGTH = 253

# Each login costs this many HMAC rounds; far above it, one request would
# stall the server for seconds, which a typo should not be able to cause.

PBKDF2_SCHEME = "pbkdf2-sha256"
PASSWORD_HASH_FORM = f"{PBKDF2_SCHEME}$<iterations>$<salt base64>$<hash base64>"

DURATION_EXPECTED = "expected a duration such as 30s, 5m, 24h"
SIZE_EXPECTED = "expected a size such as 100GiB, 512MiB or 10GB"

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_RE = re.compile(
    rf"(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m(?!s))?"
    rf"(?:(?P<s>{_NUMBER})s)?(?:(?P<ms>{_NUMBER})ms)?"
)
_BARE_NUMBER_RE = re.compile(_NUMBER)
_DURATION_UNITS: dict[str, Decimal] = {
    "d": Decimal(86400),
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}

_SIZE_RE = re.compile(rf"(?P<number>{_NUMBER}) ?(?P<unit>[a-z]*)", re.IGNORECASE | re.ASCII)
_SIZE_PREFIXES = "kmgtpe"
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _prefix in enumerate(_SIZE_PREFIXES, start=1):
    for _suffix in ("", "b"):
        _SIZE_UNITS[_prefix + _suffix] = 1000**_power
        _SIZE_UNITS[_prefix + "i" + _suffix] = 1024**_power
# Rendering prefers binary units, the way the defaults are written.
_BINARY_RENDER_UNITS = [(1024**p, f"{c.upper()}iB") for p, c in enumerate(_SIZE_PREFIXES, 1)]
_DECIMAL_RENDER_UNITS = [(1000**p, f"{c.upper()}B") for p, c in enumerate(_SIZE_PREFIXES, 1)]
_DECIMAL_RENDER_UNITS[0] = (1000, "kB")  # SI writes kilo in lower case

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE | re.ASCII)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (TOML 1.0, "String"), quotes included."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() or 0xD800 <= ord(c) <= 0xDFFF:
            out.append(c)
        elif ord(c) > 0xFFFF:
            out.append(f"\\U{ord(c):08X}")
        else:
            out.append(f"\\u{ord(c):04X}")
    return '"' + "".join(out) + '"'


def quote_key(key: str) -> str:
    """A TOML key as it is written in a dotted path: bare if it can be, else quoted."""
    return key if _BARE_KEY_RE.fullmatch(key) else toml_string(key)


def join_key_path(prefix: str, rest: str) -> str:
    """Join two formatted key paths (``mirror`` + ``users.alice``, ``mirrors`` + ``[0]``)."""
    if not prefix or not rest:
        return prefix or rest
    if rest.startswith("["):
        return prefix + rest
    return f"{prefix}.{rest}"


def describe_value(value: object) -> str:
    """Say what a configuration value was, for "expected X, got Y" reasons."""
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return toml_string(shown)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _check_length(text: str, expected: str) -> None:
    if len(text) > MAX_VALUE_LENGTH:
        raise ConfigError("", f"{expected}, got a value of {len(text)} characters")


def parse_duration(text: str) -> float:
    """Parse a duration (``30s``, ``1h30m``, ``250ms``, ``7d``, ``45``) to seconds."""
    expected = f"{DURATION_EXPECTED}, got {describe_value(text)}"
    _check_length(text, DURATION_EXPECTED)
    stripped = text.strip()
    total: Decimal | None = None
    if _BARE_NUMBER_RE.fullmatch(stripped):
        total = Decimal(stripped)
    else:
        match = _DURATION_RE.fullmatch(stripped)
        if match is not None and any(match.groupdict().values()):
            total = sum(
                (Decimal(v) * _DURATION_UNITS[u] for u, v in match.groupdict().items() if v),
                Decimal(0),
            )
    if total is None:
        raise ConfigError("", expected)
    return duration_from_number(total, original=text)


def duration_from_number(number: int | float | Decimal, *, original: object = None) -> float:
    """Check a number of seconds (from a TOML integer or float) and return it as a float."""
    _check_quantity(
        number, original, DURATION_EXPECTED, MAX_DURATION_SECONDS, "which is over a century"
    )
    return float(number)


def _check_quantity(
    number: int | float | Decimal, original: object, expected: str, maximum: int, too_big: str
) -> None:
    """Refuse booleans, non-finite, negative and too large quantities."""
    shown = describe_value(number if original is None else original)
    try:
        finite = Decimal(number).is_finite()
    except (InvalidOperation, ValueError, TypeError):
        finite = False
    if isinstance(number, bool) or not finite or number < 0:
        raise ConfigError("", f"{expected}, got {shown}")
    if number > maximum:
        raise ConfigError("", f"{expected}, got {shown}, {too_big}")


def render_duration(seconds: float) -> str:
    """Render seconds in the form :func:`parse_duration` reads back exactly.

    Uses hours, minutes, seconds and milliseconds (``1h30m``, ``250ms``,
    ``1.5s``), like Go's ``Duration.String``. Exact for 0 and for every
    duration of a nanosecond or more; below that the text can grow past
    what the parser accepts.
    """
    value = duration_from_number(seconds)
    # repr() is the shortest decimal that reads back as the same float, so
    # the parts below sum (exactly, in Decimal) to a number that does too.
    total = Decimal(repr(value))
    if total == 0:
        return "0s"
    if total < 1 and (total * 1000) == (total * 1000).to_integral_value():
        return f"{int(total * 1000)}ms"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{int(hours)}h")
    if minutes:
        parts.append(f"{int(minutes)}m")
    if secs:
        text = format(secs.normalize(), "f")
        parts.append(f"{text}s")
    return "".join(parts)


def parse_size(text: str) -> int:
    """Parse a size (``100GiB``, ``512MiB``, ``10GB``, ``1.5GiB``, ``1024``) to bytes."""
    expected = f"{SIZE_EXPECTED}, got {describe_value(text)}"
    _check_length(text, SIZE_EXPECTED)
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigError("", expected)
    multiplier = _SIZE_UNITS.get(match["unit"].lower())
    if multiplier is None:
        raise ConfigError("", expected)
    return size_from_number(Decimal(match["number"]) * multiplier, original=text)


def size_from_number(number: int | float | Decimal, *, original: object = None) -> int:
    """Check a number of bytes (from a TOML integer or float) and return whole bytes."""
    _check_quantity(number, original, SIZE_EXPECTED, MAX_SIZE_BYTES, "which is over 8 EiB")
    return int(number)


def render_size(size: int) -> str:
    """Render bytes in the unit that writes them shortest and exactly (``100GiB``, ``10GB``)."""
    size = size_from_number(size)
    candidates = [
        f"{size // multiplier}{name}"
        for multiplier, name in _BINARY_RENDER_UNITS + _DECIMAL_RENDER_UNITS
        if size and size % multiplier == 0
    ]
    # min() keeps the first of equals: binary units, then SI, then bare bytes.
    return min([*candidates, str(size)], key=len)


def check_host(host: str) -> str | None:
    """Why ``host`` is not a host name, IPv4 or bracketed IPv6 literal; None if it is."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host} is not an IPv4 address"
        return None
    if len(host) > MAX_HOST_NAME_LENGTH or not _HOST_NAME_RE.fullmatch(host):
        return f"{describe_value(host)} is not a valid host name"
    return None


def split_host_port(text: str, *, min_port: int = 1) -> tuple[str, int | None]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; check both halves.

    The host keeps its brackets. Raises ConfigError (empty key path).
    """
    _check_length(text, "expected a host")
    if text.startswith("["):
        end = text.find("]")
        host, rest = (text[: end + 1], text[end + 1 :]) if end != -1 else (text, "")
        if rest and not rest.startswith(":"):
            raise ConfigError("", f"{describe_value(text)} is not a host or host:port")
        port_text: str | None = rest[1:] if rest else None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, None
    reason = check_host(host)
    if reason is not None:
        raise ConfigError("", reason)
    if port_text is None:
        return host, None
    if not _PORT_RE.fullmatch(port_text) or not min_port <= int(port_text) <= 65535:
        raise ConfigError("", f"port {describe_value(port_text)} is not in {min_port}..65535")
    return host, int(port_text)


def check_registry_name(name: str) -> None:
    """Check a registry name or alias: a host name with an optional port (``localhost:5000``)."""
    if not name:
        raise ConfigError("", "a registry name must not be empty")
    split_host_port(name)


def check_host_pattern(pattern: str) -> None:
    """Check a tunnel host pattern: ``host``, ``*.example.com``, optionally with ``:port``."""
    host_port = pattern[2:] if pattern.startswith("*.") else pattern
    if not host_port:
        raise ConfigError("", "a host pattern must not be empty")
    host, _ = split_host_port(host_port)
    if pattern.startswith("*.") and not _HOST_NAME_RE.fullmatch(host):
        raise ConfigError("", f"a wildcard needs a host name after *., got {describe_value(host)}")


def _normal_host(host: str) -> str:
    host = host.lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def host_pattern_matches(pattern: str, host: str, port: int) -> bool:
    """Whether a CONNECT target ``host``:``port`` matches a tunnel host pattern.

    ``*.example.com`` matches every name below example.com (at any depth) but
    not example.com itself; a pattern without a port matches every port.
    Host names compare case-insensitively, IP literals by address.
    """
    wildcard = pattern.startswith("*.")
    try:
        pattern_host, pattern_port = split_host_port(pattern[2:] if wildcard else pattern)
    except ConfigError:
        return False
    if pattern_port is not None and pattern_port != port:
        return False
    wanted = _normal_host(pattern_host)
    actual = _normal_host(host)
    if wildcard:
        return actual.endswith("." + wanted)
    return actual == wanted


def check_url(url: str, *, allow_credentials: bool, allow_path: bool, what: str) -> None:
    """Check an http or https URL; the reason always starts with "must be ``what``"."""
    if (
        not url.isascii()
        or any(c.isspace() or not c.isprintable() for c in url)
        or len(url) > MAX_VALUE_LENGTH * 8
    ):
        raise ConfigError("", f"must be {what}")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise ConfigError("", f"must be {what}") from None
    if parts.scheme not in _DEFAULT_PORTS or not url.lower().startswith(parts.scheme + "://"):
        raise ConfigError("", f"must be {what}")
    _, at, host_port = parts.netloc.rpartition("@")
    if not host_port:
        raise ConfigError("", f"must be {what}")
    try:
        split_host_port(host_port)
    except ConfigError as exc:
        raise ConfigError("", f"must be {what}: {exc.reason}") from None
    if at and not allow_credentials:
        raise ConfigError(
            "", f"must be {what} without credentials (set username and password instead)"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError("", f"must be {what} without a query or fragment")
    if not allow_path and parts.path not in ("", "/"):
        raise ConfigError("", f"must be {what} without a path")


def url_host(url: str) -> str:
    """The ``host[:port]`` a URL names, lower-cased, without the scheme's default port."""
    parts = urllib.parse.urlsplit(url)
    host, port = split_host_port(parts.netloc.rpartition("@")[2])
    host = host.lower()
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme.lower()):
        return host
    return f"{host}:{port}"


def redact_url(url: str) -> str:
    """The URL with any password in it replaced by ``***``, for logs and reprs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    credentials, at, host = authority.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def check_password_hash(text: str) -> None:
    """Check a ``pbkdf2-sha256$<iterations>$<salt>$<hash>`` password hash.

    The core's decoder is the one authority on the format (the same code
    verifies passwords later); the reason never repeats the value.
    """
    core_check_password_hash(text)
