"""HTTP authentication: challenges, Basic credentials and password hashes.

Parses ``WWW-Authenticate`` field values into challenges following RFC 9110
section 11 (formerly RFC 7235 section 4.1)::

    WWW-Authenticate = #challenge
    challenge   = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param  = token BWS "=" BWS ( token / quoted-string )
    token68     = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="

Challenges and their parameters share the comma as separator, so a list
element starts a new challenge when it does not read as ``name=value``.
Quoted strings take backslash escapes (RFC 9110 section 5.6.4). Schemes and
parameter names are case-insensitive and are lower-cased here.

Also here: which challenge to answer and the one remembered per registry;
the Basic scheme (RFC 7617) for both sides; ``Credentials`` that never show
their password, read from a Docker ``config.json`` (``auths`` only); and the
PBKDF2 password hashes that regcache's own users are configured with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from ._errors import ConfigError, ErrorCode, LocalProtocolError, RemoteProtocolError
from ._frozen import FrozenStrMap

#: The most characters of ``WWW-Authenticate`` (all values together) that are
#: parsed. Real challenges are under 300 characters; every scope in one ends up
#: in a token URL, a cache key and a relayed header, so an upstream must not be
#: able to make those arbitrarily large.
MAX_CHALLENGE_LENGTH: Final = 8 * 1024

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# A token68 is recognised only when it is the whole of its list element;
# otherwise ``realm=`` would be read as one.
_TOKEN68_ELEMENT_RE: Final = re.compile(r"([A-Za-z0-9\-._~+/]+=*)[ \t]*(?:,|\Z)")
# Does the list element at this position read as an auth-param (``name =``)?
_PARAM_START_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+[ \t]*=")
# An unquoted value, more lenient than RFC 9110's ``token``: any visible
# character but the separators. An unquoted URL realm is harmless to accept,
# and refusing it would fail a pull for a cosmetic reason.
_BARE_VALUE_RE: Final = re.compile(r"[^\x00-\x20\x7f,\"\\]+")
# RFC 9110 section 5.6.4: qdtext and quoted-pair, with everything but
# control characters (HTAB excepted) allowed, obs-text included.
_QUOTED_RE: Final = re.compile(r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*)"')
_ESCAPE_RE: Final = re.compile(r"\\(.)", re.DOTALL)
# Both always match, possibly nothing.
_OWS_RE: Final = re.compile(r"[ \t]*")
_EMPTY_ELEMENTS_RE: Final = re.compile(r"[ \t,]*")
# Control characters other than HTAB may appear nowhere in a field value.
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_WHITESPACE: Final = " \t"

# How schemes are spelled when a challenge is rendered again: the parsed form
# is lower case, but some clients compare the scheme case-sensitively.
_SCHEME_SPELLING: Final = {
    "basic": "Basic",
    "bearer": "Bearer",
    "digest": "Digest",
    "negotiate": "Negotiate",
}


def _lower_token(value: str) -> str:
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise LocalProtocolError(f"{value!r} is not an HTTP token")
    return value.lower()


def _freeze_params(params: Mapping[str, str]) -> Mapping[str, str]:
    frozen: dict[str, str] = {}
    for name, value in params.items():
        key = _lower_token(name)
        if key in frozen:
            raise LocalProtocolError(f"challenge parameter {key!r} is given twice")
        if not isinstance(value, str) or _CONTROL_RE.search(value):
            raise LocalProtocolError(f"challenge parameter {key!r} has a control character")
        frozen[key] = value
    return FrozenStrMap(frozen)


def _check_token68(instance: object, attribute: object, value: str | None) -> None:
    if value is not None and not _TOKEN68_RE.fullmatch(value):
        raise LocalProtocolError(f"{value!r} is not a token68")


@attrs.frozen
class Challenge:
    """One authentication challenge from a ``WWW-Authenticate`` header.

    ``scheme`` and the parameter names are lower-cased; values are unquoted.
    A challenge has either parameters or a ``token68``, never both.
    """

    scheme: str = attrs.field(converter=_lower_token)
    params: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_params)
    token68: str | None = attrs.field(default=None, validator=_check_token68)

    def __attrs_post_init__(self) -> None:
        if self.params and self.token68 is not None:
            raise LocalProtocolError("a challenge has parameters or a token68, not both")

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter: for Bearer, the token endpoint's URL."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` parameter: the audience a token is requested for."""
        return self.params.get("service")

    def render(self) -> str:
        """This challenge as a ``WWW-Authenticate`` value (every value quoted)."""
        scheme = _SCHEME_SPELLING.get(self.scheme, self.scheme)
        if self.token68 is not None:
            return f"{scheme} {self.token68}"
        if not self.params:
            return scheme
        rendered = ",".join(f"{name}={_quote(value)}" for name, value in self.params.items())
        return f"{scheme} {rendered}"

    def __str__(self) -> str:
        return self.render()


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class _Malformed(Exception):
    def __init__(self, position: int, expected: str) -> None:
        super().__init__(f"at offset {position}: expected {expected}")


def _match_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    return match.end() if match is not None else pos


class _ChallengeReader:
    """A cursor over one field value; each method consumes one production."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_whitespace(self) -> bool:
        end = _match_end(_OWS_RE, self.text, self.pos)
        skipped = end > self.pos
        self.pos = end
        return skipped

    def skip_empty_elements(self) -> None:
        # RFC 9110 section 5.6.1: a recipient accepts empty list elements.
        self.pos = _match_end(_EMPTY_ELEMENTS_RE, self.text, self.pos)

    def token(self, what: str) -> str:
        match = _TOKEN_RE.match(self.text, self.pos)
        if match is None:
            raise _Malformed(self.pos, what)
        self.pos = match.end()
        return match.group()

    def quoted_string(self) -> str:
        match = _QUOTED_RE.match(self.text, self.pos)
        if match is None:
            raise _Malformed(self.pos, "a quoted string, closed, without control characters")
        self.pos = match.end()
        return _ESCAPE_RE.sub(r"\1", match.group(1))

    def value(self) -> str:
        if self.peek() == '"':
            return self.quoted_string()
        match = _BARE_VALUE_RE.match(self.text, self.pos)
        if match is None:
            raise _Malformed(self.pos, "a parameter value")
        self.pos = match.end()
        return match.group()

    def challenge(self) -> Challenge:
        scheme = self.token("an auth-scheme")
        spaced = self.skip_whitespace()
        if self.at_end() or self.peek() == ",":
            return Challenge(scheme)
        if not spaced:
            raise _Malformed(self.pos, "a space after the auth-scheme")
        token68 = _TOKEN68_ELEMENT_RE.match(self.text, self.pos)
        if token68 is not None:
            self.pos = token68.end(1)
            return Challenge(scheme, token68=token68.group(1))
        params: dict[str, str] = {}
        while True:
            name = self.token("a parameter name").lower()
            self.skip_whitespace()
            if self.peek() != "=":
                raise _Malformed(self.pos, "'='")
            self.pos += 1
            self.skip_whitespace()
            value = self.value()
            if name not in params:
                params[name] = value
            elif name == "scope":
                # The token spec makes scope a space-separated list; a
                # repeated scope parameter means the same thing, so keep all.
                params[name] = f"{params[name]} {value}"
            else:
                # Which realm would be the right one to send credentials to?
                raise _Malformed(self.pos, f"parameter {name!r} only once")
            self.skip_whitespace()
            if self.at_end():
                return Challenge(scheme, params)
            if self.peek() != ",":
                raise _Malformed(self.pos, "',' between parameters")
            self.skip_empty_elements()
            if self.at_end() or not _PARAM_START_RE.match(self.text, self.pos):
                return Challenge(scheme, params)


def _parse_one_value(text: str) -> tuple[list[Challenge], str | None]:
    """Parse one field value: the challenges read whole, and the first error."""
    reader = _ChallengeReader(text)
    challenges: list[Challenge] = []
    try:
        reader.skip_empty_elements()
        while not reader.at_end():
            challenges.append(reader.challenge())
            reader.skip_empty_elements()
    except _Malformed as error:
        return challenges, str(error)
    return challenges, None


def parse_www_authenticate(values: Iterable[str | bytes] | str | bytes) -> tuple[Challenge, ...]:
    """Parse ``WWW-Authenticate`` field values into their challenges, in order.

    ``values`` holds the values of every ``WWW-Authenticate`` field of one
    response (a single ``str`` or ``bytes`` is one value); bytes are decoded
    as ISO-8859-1, as HTTP field values are octets. Each value may carry
    several comma-separated challenges.

    Broken challenges are skipped, not fatal: a challenge in which a syntax
    error occurs is dropped together with the rest of its field value (after
    an error there is no reliable point at which the next challenge starts),
    while challenges read whole before it, and other field values, are kept.
    Only when nothing at all could be read from non-empty input is
    ``RemoteProtocolError`` (``UPSTREAM_ERROR``) raised; it is also raised
    when the values are longer than ``MAX_CHALLENGE_LENGTH``. Empty input
    gives an empty tuple.
    """
    if isinstance(values, str | bytes):
        values = (values,)
    texts = [v.decode("latin-1") if isinstance(v, bytes) else v for v in values]
    if sum(len(text) for text in texts) > MAX_CHALLENGE_LENGTH:
        raise RemoteProtocolError(
            ErrorCode.UPSTREAM_ERROR,
            f"WWW-Authenticate is longer than {MAX_CHALLENGE_LENGTH} characters",
        )
    challenges: list[Challenge] = []
    first_error: str | None = None
    for text in texts:
        found, error = _parse_one_value(text)
        challenges.extend(found)
        if error is not None and first_error is None:
            first_error = error
    if not challenges and first_error is not None:
        raise RemoteProtocolError(
            ErrorCode.UPSTREAM_ERROR, f"malformed WWW-Authenticate {first_error}"
        )
    return tuple(challenges)


def select_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge regcache answers: Bearer with a realm first, else Basic."""
    basic: Challenge | None = None
    for challenge in challenges:
        if challenge.scheme == "bearer" and challenge.realm:
            return challenge
        if challenge.scheme == "basic" and basic is None:
            basic = challenge
    return basic


@attrs.define
class RegistryAuthState:
    """What is known about one upstream registry's authentication.

    ``challenge`` is the last usable challenge seen, on the ``/v2/`` ping or
    on any 401; a later 401 that comes without ``WWW-Authenticate`` reuses
    it. ``name`` is only used in messages.
    """

    name: str = ""
    challenge: Challenge | None = None

    def remember(self, challenge: Challenge) -> None:
        """Record ``challenge`` as this registry's current one."""
        self.challenge = challenge

    def observe(self, status: int, www_authenticate: Iterable[str | bytes]) -> None:
        """Record the challenge of any response, the ``/v2/`` ping's above all.

        Only a 401 carrying a usable challenge changes anything; unreadable
        headers are ignored here (the request they came with reports them).
        """
        if status != 401:
            return
        try:
            challenge = select_challenge(parse_www_authenticate(www_authenticate))
        except RemoteProtocolError:
            return
        if challenge is not None:
            self.challenge = challenge


# ---------------------------------------------------------------------------
# Credentials and the Basic scheme (RFC 7617)


def _check_username(instance: object, attribute: object, value: str) -> None:
    if not isinstance(value, str) or ":" in value:
        # RFC 7617 section 2: the user-id cannot contain a colon, or the
        # "user:password" pair could not be split again.
        raise LocalProtocolError("a username must be a string without ':'")


def _check_password(instance: object, attribute: object, value: str) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError("a password must be a string")


@attrs.frozen
class Credentials:
    """A username and password. Neither ``repr`` nor ``str`` shows the password.

    The password may hold anything, including colons, spaces and newlines
    (Google's ``_json_key`` user takes a whole service-account JSON document).
    """

    username: str = attrs.field(validator=_check_username)
    password: str = attrs.field(repr=False, validator=_check_password)

    @property
    def identity(self) -> str:
        """A stable fingerprint of username and password, to key caches with.

        It lets two credentials be told apart without keeping the password in
        a key; it is not a password hash for storage, and is never logged.
        """
        digest = hashlib.sha256()
        for part in (self.username, self.password):
            encoded = part.encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
        return digest.hexdigest()


def basic_authorization(credentials: Credentials) -> str:
    """The ``Authorization`` value for Basic: ``Basic base64(user:password)``.

    The pair is encoded as UTF-8 (RFC 7617 section 2.1, ``charset="UTF-8"``).
    """
    pair = f"{credentials.username}:{credentials.password}".encode("utf-8", "surrogatepass")
    return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_basic_authorization(header_value: str | bytes) -> Credentials | None:
    """Read Basic credentials from an ``Authorization`` value, server side.

    Returns ``None`` when the value uses another scheme or is malformed (bad
    base64, not UTF-8, no colon): the caller answers 401 either way.
    """
    if isinstance(header_value, bytes):
        header_value = header_value.decode("latin-1")
    scheme, _, encoded = header_value.strip(_WHITESPACE).partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        pair = base64.b64decode(encoded.strip(_WHITESPACE), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, colon, password = pair.partition(":")
    if not colon:
        return None
    return Credentials(username, password)


# ---------------------------------------------------------------------------
# Password hashes for regcache's own users

#: Iterations for new hashes: OWASP's 2023 recommendation for PBKDF2-SHA256.
#: A verification costs a fraction of a second, so servers should remember a
#: successful check rather than repeat it on every request.
DEFAULT_PBKDF2_ITERATIONS: Final = 600_000
#: The most iterations a stored hash may ask for: a typo in the configuration
#: must not turn every login into minutes of CPU.
MAX_PBKDF2_ITERATIONS: Final = 10_000_000
#: The shortest salt accepted for a new hash; shorter salts make precomputed
#: tables practical.
MIN_SALT_LENGTH: Final = 16

_HASH_SCHEME: Final = "pbkdf2-sha256"
_HASH_LENGTH: Final = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(
    password: str, *, salt: bytes, iterations: int = DEFAULT_PBKDF2_ITERATIONS
) -> str:
    """Hash a password as ``pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>``.

    The salt is passed in (``os.urandom(16)`` is the usual source) so that
    this stays a pure function.
    """
    if len(salt) < MIN_SALT_LENGTH:
        raise LocalProtocolError(f"a salt must have at least {MIN_SALT_LENGTH} bytes")
    if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
        raise LocalProtocolError(f"iterations must be between 1 and {MAX_PBKDF2_ITERATIONS}")
    derived = hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8", "surrogatepass"), salt, iterations
    )
    return f"{_HASH_SCHEME}${iterations}${_b64(salt)}${_b64(derived)}"


def _decode_hash(encoded: str) -> tuple[int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != _HASH_SCHEME:
        raise ConfigError("", f"a password hash must look like {_HASH_SCHEME}$<n>$<salt>$<hash>")
    iterations_text, salt_text, hash_text = parts[1:]
    if not iterations_text.isascii() or not iterations_text.isdigit():
        raise ConfigError("", "the password hash's iteration count is not a number")
    iterations = int(iterations_text)
    if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
        raise ConfigError(
            "", f"the password hash's iteration count is not within 1..{MAX_PBKDF2_ITERATIONS}"
        )
    try:
        salt = base64.b64decode(salt_text, validate=True)
        derived = base64.b64decode(hash_text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("", "the password hash's salt or hash is not base64") from None
    if not salt or len(derived) != _HASH_LENGTH:
        raise ConfigError("", "the password hash has an empty salt or a hash of the wrong size")
    return iterations, salt, derived


def check_password_hash(encoded: str, *, key_path: str = "") -> None:
    """Raise ``ConfigError`` naming ``key_path`` unless ``encoded`` is a usable hash."""
    try:
        _decode_hash(encoded)
    except ConfigError as error:
        raise ConfigError(key_path, error.reason) from None


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a hash made by ``hash_password``.

    The comparison takes constant time. A malformed ``encoded`` is a broken
    configuration, not a wrong password, and raises ``ConfigError``.
    """
    iterations, salt, expected = _decode_hash(encoded)
    derived = hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8", "surrogatepass"), salt, iterations
    )
    return hmac.compare_digest(derived, expected)


# ---------------------------------------------------------------------------
# ~/.docker/config.json

_DOCKER_HUB_KEYS: Final = frozenset(
    {"index.docker.io", "registry-1.docker.io", "docker.io", "registry.hub.docker.com"}
)


def normalize_auth_key(key: str) -> str:
    """The registry a ``config.json`` ``auths`` key stands for.

    The scheme and any path are dropped and the host lower-cased; Docker
    Hub's names (``https://index.docker.io/v1/``, ``registry-1.docker.io``)
    become ``docker.io``.
    """
    host = key.strip()
    scheme, sep, rest = host.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        host = rest
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB_KEYS else host


def _quoted(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def _entry_credentials(entry: Mapping[str, Any], path: str) -> Credentials | None:
    auth = entry.get("auth")
    if auth is not None and not isinstance(auth, str):
        raise ConfigError(f"{path}.auth", "must be a string")
    if auth:
        try:
            pair = base64.b64decode(auth.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ConfigError(f"{path}.auth", "is not base64 of UTF-8 text") from None
        username, colon, password = pair.partition(":")
        if not colon or not username:
            raise ConfigError(f"{path}.auth", "does not decode to username:password")
        return Credentials(username, password)
    fields: dict[str, str] = {}
    for field in ("username", "password"):
        value = entry.get(field)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}.{field}", "must be a string")
        fields[field] = value or ""
    username, password = fields["username"], fields["password"]
    if not username:
        if password:
            raise ConfigError(f"{path}.username", "is missing while a password is set")
        # An empty entry is what a credential store leaves behind, and an
        # identity token alone needs the OAuth flow, which is not supported.
        return None
    if ":" in username:
        raise ConfigError(f"{path}.username", "cannot contain ':'")
    return Credentials(username, password)


def load_docker_config(data: bytes) -> Mapping[str, Credentials]:
    """Credentials from a Docker ``config.json``, by normalised registry host.

    Reads ``auths`` entries with ``auth`` (base64 of ``user:password``; the
    password may contain ``:``) or ``username``/``password``; ``auth`` wins
    when both are present. Keys are normalised by ``normalize_auth_key``;
    when two keys name the same registry the first one in the file wins.
    ``credsStore`` and ``credHelpers`` name external programs, which a
    sans-IO loader cannot run: they are ignored without error, as are
    entries holding no credentials. Raises ``ConfigError`` with the key path
    (``auths."ghcr.io".auth``) for anything malformed.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise ConfigError("", "the Docker config is not JSON") from None
    if not isinstance(document, dict):
        raise ConfigError("", "the Docker config is not a JSON object")
    auths = document.get("auths")
    if auths is None:
        return MappingProxyType({})
    if not isinstance(auths, dict):
        raise ConfigError("auths", "must be an object")
    found: dict[str, Credentials] = {}
    for key, entry in auths.items():
        path = f"auths.{_quoted(key)}"
        if not isinstance(entry, dict):
            raise ConfigError(path, "must be an object")
        credentials = _entry_credentials(entry, path)
        host = normalize_auth_key(key)
        if not host:
            raise ConfigError(path, "does not name a registry")
        if credentials is not None:
            found.setdefault(host, credentials)
    return MappingProxyType(found)
