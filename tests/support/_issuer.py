"""A token server for the Docker registry token protocol.

Implements ``GET /token?service=...&scope=...`` of the distribution token
specification (docs/spec/auth/token.md and jwt.md): optional HTTP Basic
credentials, repeatable ``scope`` parameters, and a JWT signed with ES256
(RFC 7515, RFC 7518 section 3.4: the signature is the raw ``r || s`` pair)
whose header carries the signing certificate in ``x5c``, which is what
docker-registry 2.8 verifies against its ``rootcertbundle``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fnmatch
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ._pki import PKI
from ._server import QuietHandler, ServerThread, Startable, TrackingServer, format_host

DEFAULT_SERVICE = "regcache-test-registry"
DEFAULT_ISSUER = "regcache-test-issuer"
DEFAULT_USERS: Mapping[str, str] = {"alice": "alice-password", "bob": "bob-password"}

# Token lifetime in seconds, as Docker Hub hands out.
DEFAULT_LIFETIME = 300

# What anonymous clients may pull: shell patterns on the repository name.
DEFAULT_ANONYMOUS_PULL = ("public/*",)

AclFunction = Callable[[str | None, str, str, Sequence[str]], Sequence[str]]
"""``acl(username or None, type, name, requested actions) -> granted actions``."""


@attrs.frozen
class Scope:
    """One parsed ``type:name:actions`` scope."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """Parse a scope string; None when it has fewer than three parts."""
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            return None
        return cls(kind, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@attrs.frozen
class TokenRequest:
    """What one request to /token asked for (never the password)."""

    service: str | None
    scopes: tuple[str, ...]
    account: str | None
    username: str | None
    """The Basic user name sent, whether or not the password was right."""
    authenticated: bool
    status: int
    granted: tuple[Scope, ...]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, cert_der: bytes) -> str:
    """Return a compact JWS of claims, ES256 with the certificate in ``x5c``."""
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(cert_der).decode("ascii")]}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input + "." + _b64url(signature)


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (header, claims) of a compact JWS without checking the signature."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header: dict[str, Any] = json.loads(_b64url_decode(parts[0]))
    claims: dict[str, Any] = json.loads(_b64url_decode(parts[1]))
    return header, claims


class TokenIssuer(Startable):
    """An HTTPS token server on 127.0.0.1 for the upstream registry.

    Default policy: repositories matching ``anonymous_pull`` patterns are
    pullable anonymously; any valid user gets ``pull``, ``push`` and ``delete`` on every
    repository and ``*`` on ``registry:catalog:*``; anonymous clients get a
    token granting nothing for everything else. Pass ``acl`` to replace it.
    Options can be changed while running by assigning the attributes.
    """

    def __init__(
        self,
        pki: PKI,
        *,
        users: Mapping[str, str] | None = None,
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        lifetime: int = DEFAULT_LIFETIME,
        anonymous_pull: Sequence[str] = DEFAULT_ANONYMOUS_PULL,
        acl: AclFunction | None = None,
        omit_expires_in: bool = False,
        only_access_token: bool = False,
        reject_bad_credentials: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.pki = pki
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.service = service
        self.issuer = issuer
        self.lifetime = lifetime
        self.anonymous_pull = tuple(anonymous_pull)
        self.acl: AclFunction = acl or self.default_acl
        self.omit_expires_in = omit_expires_in
        """Leave ``expires_in`` out of the response (clients assume 60 s)."""
        self.only_access_token = only_access_token
        """Return only ``access_token``, not ``token``."""
        self.reject_bad_credentials = reject_bad_credentials
        """Answer 401 for unknown users or wrong passwords (else: anonymous)."""
        self.fail_status: int | None = None
        """When set, every request is answered with this status."""
        self.host = host
        self._key = pki.signing_key()
        self._cert_der = pki.signing_cert_der()
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server = TrackingServer(
            (host, 0), _IssuerHandler, ssl_context=pki.server_ssl_context(), owner=self
        )
        self._thread = ServerThread(self._server)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and join every thread."""
        self._thread.stop()

    @property
    def port(self) -> int:
        """The listening port."""
        return self._thread.port

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT``."""
        return f"https://{format_host(self.host)}:{self.port}"

    @property
    def realm(self) -> str:
        """The token endpoint: the registry's ``auth.token.realm``."""
        return self.url + "/token"

    # -- observations --------------------------------------------------------

    def requests(self) -> list[TokenRequest]:
        """Every request answered so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests reached /token."""
        with self._lock:
            return len(self._requests)

    def reset(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # -- policy and minting --------------------------------------------------

    def default_acl(
        self, username: str | None, kind: str, name: str, actions: Sequence[str]
    ) -> Sequence[str]:
        """The default policy described in the class docstring."""
        if kind == "repository":
            if username is not None:
                allowed = {"pull", "push", "delete", "*"}
            elif any(fnmatch.fnmatchcase(name, p) for p in self.anonymous_pull):
                allowed = {"pull"}
            else:
                allowed = set()
        elif kind == "registry" and name == "catalog" and username is not None:
            allowed = {"*"}
        else:
            allowed = set()
        return [a for a in actions if a in allowed]

    def grant(self, username: str | None, scopes: Sequence[str]) -> tuple[Scope, ...]:
        """Apply the ACL to the requested scopes (space-separated lists allowed)."""
        granted: list[Scope] = []
        for text in scopes:
            for word in text.split():
                scope = Scope.parse(word)
                if scope is None:
                    continue
                actions = tuple(self.acl(username, scope.type, scope.name, scope.actions))
                granted.append(Scope(scope.type, scope.name, actions))
        return tuple(granted)

    def mint(
        self,
        subject: str,
        access: Sequence[Scope],
        *,
        audience: str | None = None,
        lifetime: int | None = None,
        now: float | None = None,
    ) -> str:
        """Return a signed token that the upstream registry accepts."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.service,
            "exp": issued + (self.lifetime if lifetime is None else lifetime),
            "nbf": issued - 5,
            "iat": issued,
            "jti": secrets.token_hex(16),
            "access": [
                {"type": s.type, "name": s.name, "actions": list(s.actions)} for s in access
            ],
        }
        return sign_jwt(claims, self._key, self._cert_der)

    def _answer(self, query: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        service = params.get("service", [None])[0]
        account = params.get("account", [None])[0]
        scopes = tuple(params.get("scope", []))
        username: str | None = None
        authenticated = False
        if authorization is not None:
            username, password = _parse_basic(authorization)
            authenticated = username is not None and self.users.get(username) == password
        status = 200
        granted: tuple[Scope, ...] = ()
        body: dict[str, Any]
        if self.fail_status is not None:
            status = self.fail_status
            body = {"errors": [{"code": "UNAVAILABLE", "message": "injected failure"}]}
        elif authorization is not None and not authenticated and self.reject_bad_credentials:
            status = 401
            body = {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        else:
            user = username if authenticated else None
            granted = self.grant(user, scopes)
            token = self.mint(user or "", granted, audience=service)
            body = {}
            if not self.only_access_token:
                body["token"] = token
            body["access_token"] = token
            if not self.omit_expires_in:
                body["expires_in"] = self.lifetime
            body["issued_at"] = (
                datetime.datetime.now(datetime.UTC)
                .replace(microsecond=0)
                .isoformat()
                .replace("+00:00", "Z")
            )
        self._record(
            TokenRequest(
                service=service,
                scopes=scopes,
                account=account,
                username=username,
                authenticated=authenticated,
                status=status,
                granted=granted,
            )
        )
        return status, body


def _parse_basic(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    username, sep, password = decoded.partition(":")
    if not sep:
        return username, None
    return username, password


class _IssuerHandler(QuietHandler):
    server: TrackingServer

    def do_GET(self) -> None:
        issuer: TokenIssuer = self.server.owner
        path, _, query = self.path.partition("?")
        if path != "/token":
            self.send_body(404, b'{"errors":[]}', "application/json")
            return
        status, body = issuer._answer(query, self.headers.get("Authorization"))
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="regcache-test-issuer"'
        self.send_body(status, json.dumps(body).encode(), "application/json", **headers)
