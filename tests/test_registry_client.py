"""RegistryClient against scripted loopback registries, token realms and CDNs.

Each scripted server answers from a table of literal HTTP/1.1 responses keyed
by (method, path): byte fixtures shaped after what Docker Hub, ghcr.io,
gcr.io, Artifact Registry and their CDNs send. Every request is recorded in
a journal shared by the servers of a test, so a test can say what went
where, in which order, and with which Authorization.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import pytest
import trio
import trio.testing

from regcache.core import AuthError, Credentials, ErrorCode, RemoteProtocolError, Scope, TokenCache
from regcache.core._auth import REFRESH_MARGIN, TokenKey
from regcache.engine._http import HttpClient, UpstreamConnectError, UpstreamResponse
from regcache.engine._registry import (
    MAX_REDIRECTS,
    RegistryClient,
    TokenAnswer,
    TokenFlights,
    principal_of,
)

# Upper bound on any test, so that a bug fails instead of hanging.
TEST_DEADLINE = 10.0
# Connect and read timeouts of the client: loopback answers at once.
IO_TIMEOUT = 3.0
# Largest body a test reads.
MAX_BODY = 1024 * 1024
# 2026-11-28T00:00:00Z, the clock the token cache sees.
T0 = 1_795_824_000.0

# --- byte fixtures ----------------------------------------------------------------
#
# Hosts are placeholders in header lines only ({registry}, {auth}, {cdn}), so
# filling them in never changes a body and the literal Content-Length holds.

MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
    b'"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"digest":"sha256:5a6d8c0d2b5e8d4d3b1f3e5e1d0c2f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e",'
    b'"size":2295,"platform":{"architecture":"amd64","os":"linux"}}]}'
)
MANIFEST_DIGEST = "sha256:cc303d3dc8094bfbfce03633fd5977d8cd822ca6cd352e75601c673ed80c9c4f"

# Docker Hub: registry-1.docker.io answering a manifest GET.
HUB_MANIFEST_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-length: 290\r\n"
    b"content-type: application/vnd.oci.image.index.v1+json\r\n"
    b"docker-content-digest: "
    b"sha256:cc303d3dc8094bfbfce03633fd5977d8cd822ca6cd352e75601c673ed80c9c4f\r\n"
    b"docker-distribution-api-version: registry/2.0\r\n"
    b'etag: "sha256:cc303d3dc8094bfbfce03633fd5977d8cd822ca6cd352e75601c673ed80c9c4f"\r\n'
    b"date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"strict-transport-security: max-age=31536000\r\n"
    b"ratelimit-limit: 100;w=21600\r\n"
    b"ratelimit-remaining: 76;w=21600\r\n"
    b"docker-ratelimit-source: 192.0.2.1\r\n"
    b"\r\n" + MANIFEST
)
HUB_401 = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"content-type: application/json\r\n"
    b"docker-distribution-api-version: registry/2.0\r\n"
    b'www-authenticate: Bearer realm="http://{auth}/token",service="registry.docker.io",'
    b'scope="repository:library/nginx:pull"\r\n'
    b"date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"content-length: 156\r\n"
    b"strict-transport-security: max-age=31536000\r\n"
    b"\r\n"
    b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":'
    b'[{"Type":"repository","Class":"","Name":"library/nginx","Action":"pull"}]}]}\n'
)
HUB_TOKEN = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhdXRoLmRvY2tlci5pbyJ9.c2lnbmF0dXJl"
# auth.docker.io: both field names, expires_in and issued_at.
HUB_TOKEN_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 246\r\n"
    b"strict-transport-security: max-age=31536000\r\n"
    b"\r\n"
    b'{"token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhdXRoLmRvY2tlci5pbyJ9.c2lnbmF0dXJl",'
    b'"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhdXRoLmRvY2tlci5pbyJ9.c2lnbmF0dXJl",'
    b'"expires_in":300,"issued_at":"2026-11-28T00:00:00Z"}'
)
HUB_TOKEN_401 = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 45\r\n"
    b"strict-transport-security: max-age=31536000\r\n"
    b"\r\n"
    b'{"details":"incorrect username or password"}\n'
)
HUB_429 = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"content-type: application/json\r\n"
    b"docker-distribution-api-version: registry/2.0\r\n"
    b"ratelimit-limit: 100;w=21600\r\n"
    b"ratelimit-remaining: 0;w=21600\r\n"
    b"docker-ratelimit-source: 192.0.2.1\r\n"
    b"date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"content-length: 150\r\n"
    b"\r\n"
    b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your unauthenticated '
    b'pull rate limit. https://www.docker.com/increase-rate-limit"}]}\n'
)

# Answers to HEAD: the same heads, with Content-Length, without a body.
HUB_MANIFEST_HEAD_200 = HUB_MANIFEST_200.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
HUB_401_HEAD = HUB_401.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"

BLOB = b"layer bytes from the CDN\n"
BLOB_DIGEST = "sha256:aec24f1854de08be0303510d9f3466f74744ce19cd5af24625cfdb9021502663"
HUB_BLOB_PATH = f"/v2/library/nginx/blobs/{BLOB_DIGEST}"
CDN_PATH = (
    "/registry-v2/docker/registry/v2/blobs/sha256/ae/"
    "aec24f1854de08be0303510d9f3466f74744ce19cd5af24625cfdb9021502663/data"
)
# registry-1.docker.io sending a blob GET to Cloudflare with a signed URL.
HUB_BLOB_307 = (
    b"HTTP/1.1 307 Temporary Redirect\r\n"
    b"content-type: application/octet-stream\r\n"
    b"docker-distribution-api-version: registry/2.0\r\n"
    b"location: http://{cdn}/registry-v2/docker/registry/v2/blobs/sha256/ae/"
    b"aec24f1854de08be0303510d9f3466f74744ce19cd5af24625cfdb9021502663/data?verify=1795824000-abc\r\n"
    b"date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"content-length: 0\r\n"
    b"strict-transport-security: max-age=31536000\r\n"
    b"\r\n"
)
CDN_BLOB_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 25\r\n"
    b"Connection: keep-alive\r\n"
    b"CF-Ray: 8e7f6a5b4c3d2e1f-FRA\r\n"
    b"Accept-Ranges: bytes\r\n"
    b"Cache-Control: public, max-age=14400\r\n"
    b'ETag: "aec24f1854de08be0303510d9f3466f7"\r\n'
    b"Last-Modified: Fri, 27 Nov 2026 12:00:00 GMT\r\n"
    b"Server: cloudflare\r\n"
    b"\r\n"
    b"layer bytes from the CDN\n"
)
# An expired signed URL: the CDN's 401 (with a challenge of its own) is final.
CDN_401 = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"Content-Type: text/plain\r\n"
    b'WWW-Authenticate: Bearer realm="http://{auth}/token",service="cdn"\r\n'
    b"Content-Length: 15\r\n"
    b"\r\n"
    b"invalid verify\n"
)

# ghcr.io: scope in the challenge, an opaque token without expires_in.
GHCR_TOKEN = "djE6cmVnY2FjaGUvZGVtbzox"  # base64 of v1:regcache/demo:1
GHCR_401 = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"Content-Type: application/json\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b'Www-Authenticate: Bearer realm="http://{auth}/token",service="ghcr.io",'
    b'scope="repository:regcache/demo:pull"\r\n'
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Length: 73\r\n"
    b"X-GitHub-Request-Id: 0A1B:2C3D:4E5F:6A7B:8C9D0E1F\r\n"
    b"\r\n"
    b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}\n'
)
GHCR_TOKEN_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Length: 36\r\n"
    b"X-GitHub-Request-Id: 0A1B:2C3D:4E5F:6A7B:8C9D0E20\r\n"
    b"\r\n"
    b'{"token":"djE6cmVnY2FjaGUvZGVtbzox"}'
)

# gcr.io: realm on the registry's own host, service unquoted.
GCR_TOKEN = "ya29.c.b0AXv0zTPx3fJ-regcache-test"
GCR_401_UNQUOTED = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b'Www-Authenticate: Bearer realm="http://{registry}/v2/token",service=gcr.io,'
    b'scope="repository:regcache-project/app:pull"\r\n'
    b"X-Gcr-Using-Artifact-Registry: true\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Server: Docker Registry\r\n"
    b"Content-Length: 275\r\n"
    b"\r\n"
    b'{"errors":[{"code":"UNAUTHORIZED","message":"You don\'t have the needed permissions to '
    b"perform this operation, and you may have invalid credentials. To authenticate your "
    b"request, follow the steps in: "
    b'https://cloud.google.com/container-registry/docs/advanced-authentication"}]}'
)
# gcr.io once: a 401 with no WWW-Authenticate at all.
GCR_401_NO_CHALLENGE = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b"X-Gcr-Using-Artifact-Registry: true\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Server: Docker Registry\r\n"
    b"Content-Length: 275\r\n"
    b"\r\n"
    b'{"errors":[{"code":"UNAUTHORIZED","message":"You don\'t have the needed permissions to '
    b"perform this operation, and you may have invalid credentials. To authenticate your "
    b"request, follow the steps in: "
    b'https://cloud.google.com/container-registry/docs/advanced-authentication"}]}'
)
# ... while its /v2/ ping carries the challenge.
GCR_PING_401 = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"Content-Type: application/json\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b'Www-Authenticate: Bearer realm="http://{registry}/v2/token",service="gcr.io"\r\n'
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Server: Docker Registry\r\n"
    b"Content-Length: 69\r\n"
    b"\r\n"
    b'{"errors":[{"code":"UNAUTHORIZED","message":"Unauthorized access."}]}'
)
GCR_TOKEN_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Server: Docker Registry\r\n"
    b"Content-Length: 115\r\n"
    b"\r\n"
    b'{"expires_in":43200,"issued_at":"2026-11-28T00:00:00.000000000-08:00",'
    b'"token":"ya29.c.b0AXv0zTPx3fJ-regcache-test"}'
)

# <location>-docker.pkg.dev: realm on the same host, no service parameter.
PKG_DEV_TOKEN = "ya29.c.regcache-pkg-dev-test"
PKG_DEV_401 = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b'Www-Authenticate: Bearer realm="http://{registry}/v2/token"\r\n'
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Length: 270\r\n"
    b"\r\n"
    b'{"errors":[{"code":"UNAUTHORIZED","message":"Unauthenticated request. Unauthenticated '
    b'requests do not have permission \\"artifactregistry.repositories.downloadArtifacts\\" '
    b'on resource \\"projects/regcache-project/locations/us/repositories/images\\" '
    b'(or it may not exist)"}]}'
)
PKG_DEV_TOKEN_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Length: 58\r\n"
    b"\r\n"
    b'{"token":"ya29.c.regcache-pkg-dev-test","expires_in":3600}'
)
PKG_DEV_BLOB_PATH = f"/v2/regcache-project/images/app/blobs/{BLOB_DIGEST}"
DOWNLOAD_PATH = "/artifacts-downloads/namespaces/x/downloads/tok"
# Artifact Registry sends blob downloads to a relative URL on its own host.
PKG_DEV_BLOB_302 = (
    b"HTTP/1.1 302 Found\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b"Location: /artifacts-downloads/namespaces/x/downloads/tok\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
PKG_DEV_DOWNLOAD_200 = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 25\r\n"
    b"X-Goog-Hash: crc32c=AAAAAA==\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"\r\n"
    b"layer bytes from the CDN\n"
)
# Artifact Registry's big header blocks (about 21 KiB seen; 70 KiB here).
BIG_HEADER_VALUE = b"A" * (70 * 1024)
PKG_DEV_MANIFEST_BIG_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/vnd.oci.image.index.v1+json\r\n"
    b"Docker-Content-Digest: "
    b"sha256:cc303d3dc8094bfbfce03633fd5977d8cd822ca6cd352e75601c673ed80c9c4f\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b"X-Goog-Something: " + BIG_HEADER_VALUE + b"\r\n"
    b"Content-Length: 290\r\n"
    b"\r\n" + MANIFEST
)

# A distribution registry with htpasswd: Basic only.
BASIC_401 = (
    b"HTTP/1.1 401 Unauthorized\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Docker-Distribution-Api-Version: registry/2.0\r\n"
    b'Www-Authenticate: Basic realm="x"\r\n'
    b"X-Content-Type-Options: nosniff\r\n"
    b"Date: Sat, 28 Nov 2026 00:00:00 GMT\r\n"
    b"Content-Length: 87\r\n"
    b"\r\n"
    b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}\n'
)

# A load balancer in front of a mirror with nothing behind it.
MIRROR_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-length: 107\r\n"
    b"cache-control: no-cache\r\n"
    b"content-type: text/html\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"<html><body><h1>503 Service Unavailable</h1>\n"
    b"No server is available to handle this request.\n</body></html>\n"
)

LOOP_PATH = f"/v2/regcache/loop/blobs/{BLOB_DIGEST}"
LOOP_302 = (
    b"HTTP/1.1 302 Found\r\n"
    b"Location: /v2/regcache/loop/blobs/"
    b"sha256:aec24f1854de08be0303510d9f3466f74744ce19cd5af24625cfdb9021502663\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 69\r\n"
    b"\r\n"
    b'{"errors":[{"code":"NOT_FOUND","message":"no route in this script"}]}'
)

# Not an HTTP answer: the server closes the connection without a byte.
DROP = b""

FIXTURES = {
    name: value
    for name, value in globals().items()
    if name.isupper() and isinstance(value, bytes) and value.startswith(b"HTTP/1.1 ")
}


# --- the scripted servers ---------------------------------------------------------


@attrs.frozen
class Seen:
    """One request a scripted server received."""

    server: str
    method: str
    target: str
    # Names lower-cased, in the order received.
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def authorization(self) -> str | None:
        values = self.header_values("authorization")
        assert len(values) <= 1, f"{len(values)} Authorization headers on {self.target}"
        return values[0] if values else None


@attrs.frozen
class Authorized:
    """``ok`` to a request carrying exactly ``authorization``, else ``otherwise``."""

    authorization: str
    ok: Answer
    otherwise: Answer


@attrs.frozen
class InTurn:
    """The answers in the order given, the last one repeated."""

    answers: tuple[Answer, ...]


@attrs.frozen(eq=False)
class Gated:
    """``answer`` once ``gate`` is set."""

    gate: trio.Event
    answer: Answer


Answer = bytes | Authorized | InTurn | Gated


def fill(fixture: bytes, **hosts: ScriptedServer) -> bytes:
    """The fixture with ``{name}`` replaced by that server's ``host:port``."""
    for name, server in hosts.items():
        fixture = fixture.replace(b"{%s}" % name.encode(), server.host.encode())
    assert b"{" not in fixture.partition(b"\r\n\r\n")[0], "a host was left unfilled"
    return fixture


@attrs.define(eq=False)
class ScriptedServer:
    """An HTTP/1.1 server answering from ``routes``; it records what it saw."""

    name: str
    journal: list[Seen]
    port: int = 0
    routes: dict[tuple[str, str], Answer] = attrs.Factory(dict)
    seen: list[Seen] = attrs.Factory(list)
    answered: int = 0
    _turns: dict[tuple[str, str], int] = attrs.Factory(dict)
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "") -> str:
        return f"http://{self.host}{path}"

    async def wait_answered(self, count: int) -> None:
        while self.answered < count:
            await self._changed.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                seen = self._record(head)
                answer = await self._pick(
                    self.routes.get((seen.method, seen.path), NOT_FOUND), seen
                )
                if answer == DROP:
                    return
                await stream.send_all(answer)
                self.answered += 1
                self._changed.set()
                self._changed = trio.Event()
                if (
                    b"\r\nconnection: close\r\n"
                    in answer.partition(b"\r\n\r\n")[0].lower() + b"\r\n"
                ):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    def _record(self, head: bytes) -> Seen:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        assert version == "HTTP/1.1"
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        seen = Seen(self.name, method, target, tuple(headers))
        # The client sends no request bodies here.
        assert not seen.header_values("content-length") or seen.header_values("content-length") == [
            "0"
        ]
        self.seen.append(seen)
        self.journal.append(seen)
        return seen

    async def _pick(self, answer: Answer, seen: Seen) -> bytes:
        if isinstance(answer, Gated):
            await answer.gate.wait()
            return await self._pick(answer.answer, seen)
        if isinstance(answer, Authorized):
            chosen = answer.ok if seen.authorization == answer.authorization else answer.otherwise
            return await self._pick(chosen, seen)
        if isinstance(answer, InTurn):
            key = (seen.method, seen.path)
            turn = self._turns.get(key, 0)
            self._turns[key] = turn + 1
            return await self._pick(answer.answers[min(turn, len(answer.answers) - 1)], seen)
        return answer


@asynccontextmanager
async def scripted(*names: str) -> AsyncIterator[tuple[ScriptedServer, ...]]:
    """Scripted servers on 127.0.0.1, one per name, sharing one journal."""
    journal: list[Seen] = []
    servers = tuple(ScriptedServer(name, journal) for name in names)
    async with trio.open_nursery() as nursery:
        for server in servers:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            server.port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, server.handle, listeners)
        yield servers
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def dead_port() -> AsyncIterator[int]:
    """A loopback port bound but not listening: connections are refused."""
    sock = trio.socket.socket()
    try:
        await sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def trail(journal: Sequence[Seen]) -> list[tuple[str, str, str, str | None]]:
    """(server, method, path, Authorization) of each request."""
    return [(s.server, s.method, s.path, s.authorization) for s in journal]


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --- the client -------------------------------------------------------------------


@attrs.define
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def registry_client(
    *base_urls: str,
    credentials: Credentials | None = None,
    clock: Callable[[], float] | None = None,
    token_flights: TokenFlights | None = None,
) -> AsyncIterator[RegistryClient]:
    client = RegistryClient(
        "upstream.test",
        base_urls,
        http=HttpClient(connect_timeout=IO_TIMEOUT, read_timeout=IO_TIMEOUT),
        credentials=credentials,
        principal=principal_of(credentials, b"k" * 32),
        tokens=TokenCache(),
        token_flights=token_flights if token_flights is not None else TokenFlights(),
        clock=clock if clock is not None else FakeClock(),
    )
    try:
        yield client
    finally:
        await client.aclose()


async def fetch(
    client: RegistryClient,
    path: str,
    repository: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
) -> tuple[UpstreamResponse, bytes]:
    """``path`` for a pull of ``repository``; the response (closed) and its body."""
    response = await client.request(method, path, scopes=[Scope.pull(repository)], headers=headers)
    async with response:
        body = await response.read_all(MAX_BODY)
    return response, body


# --- the fixtures themselves ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_is_one_well_formed_response(name: str) -> None:
    host = ScriptedServer("x", [], port=65535)
    fixture = FIXTURES[name]
    if b"{" in fixture.partition(b"\r\n\r\n")[0]:
        fixture = fill(fixture, registry=host, auth=host, cdn=host)
    method = "HEAD" if name.endswith("_HEAD") or "_HEAD_" in name else "GET"
    protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=128 * 1024)
    protocol.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    protocol.send(h11.EndOfMessage())
    protocol.receive_data(fixture)
    events: list[object] = []
    while (event := protocol.next_event()) is not h11.NEED_DATA:
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    assert isinstance(events[0], h11.Response)
    assert isinstance(events[-1], h11.EndOfMessage)
    assert protocol.trailing_data == (b"", False)


def test_manifest_fixture_digest_matches_its_body() -> None:
    from regcache.core import Digest

    assert str(Digest.of_bytes(MANIFEST)) == MANIFEST_DIGEST
    assert str(Digest.of_bytes(BLOB)) == BLOB_DIGEST


# --- the token dance --------------------------------------------------------------


@attrs.frozen
class Style:
    """How one registry does the dance, for one manifest GET."""

    id: str
    repository: str
    challenge: bytes
    token_answer: bytes
    token: str
    token_path: str
    realm_on_registry: bool
    token_query: dict[str, list[str]]
    # Seconds the token is good for, as the cache counts them.
    lifetime: float

    @property
    def path(self) -> str:
        return f"/v2/{self.repository}/manifests/latest"


STYLES = [
    Style(
        "docker-hub",
        "library/nginx",
        HUB_401,
        HUB_TOKEN_200,
        HUB_TOKEN,
        "/token",
        realm_on_registry=False,
        token_query={"service": ["registry.docker.io"], "scope": ["repository:library/nginx:pull"]},
        lifetime=300,
    ),
    Style(
        "ghcr",
        "regcache/demo",
        GHCR_401,
        GHCR_TOKEN_200,
        GHCR_TOKEN,
        "/token",
        realm_on_registry=False,
        token_query={"service": ["ghcr.io"], "scope": ["repository:regcache/demo:pull"]},
        lifetime=60,  # no expires_in: the token spec's default
    ),
    Style(
        "gcr-unquoted-service",
        "regcache-project/app",
        GCR_401_UNQUOTED,
        GCR_TOKEN_200,
        GCR_TOKEN,
        "/v2/token",
        realm_on_registry=True,
        token_query={"service": ["gcr.io"], "scope": ["repository:regcache-project/app:pull"]},
        lifetime=43200,
    ),
    Style(
        "pkg-dev-no-service",
        "regcache-project/images/app",
        PKG_DEV_401,
        PKG_DEV_TOKEN_200,
        PKG_DEV_TOKEN,
        "/v2/token",
        realm_on_registry=True,
        token_query={"scope": ["repository:regcache-project/images/app:pull"]},
        lifetime=3600,
    ),
]


@pytest.mark.parametrize("style", STYLES, ids=[s.id for s in STYLES])
async def test_token_dance_then_cached_token_until_it_expires(style: Style) -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth") as (registry, auth):
            realm = registry if style.realm_on_registry else auth
            bearer = f"Bearer {style.token}"
            registry.routes[("GET", style.path)] = Authorized(
                bearer, HUB_MANIFEST_200, fill(style.challenge, auth=auth, registry=registry)
            )
            realm.routes[("GET", style.token_path)] = style.token_answer
            clock = FakeClock()
            accept = ("Accept", "application/vnd.oci.image.index.v1+json")
            async with registry_client(registry.url(), clock=clock) as client:
                response, body = await fetch(client, style.path, style.repository, headers=[accept])
                assert response.status == 200
                assert body == MANIFEST
                assert response.header("docker-content-digest") == MANIFEST_DIGEST
                assert trail(registry.journal) == [
                    ("registry", "GET", style.path, None),
                    (realm.name, "GET", style.token_path, None),
                    ("registry", "GET", style.path, bearer),
                ]
                token_request = registry.journal[1]
                assert token_request.query == style.token_query
                assert token_request.header_values("host") == [realm.host]
                # The caller's headers go on every registry request, the
                # registry's on none of the token requests.
                manifest_requests = [s for s in registry.journal if s.path == style.path]
                assert all(s.header_values("accept") == [accept[1]] for s in manifest_requests)
                assert token_request.header_values("accept") == []

                # Same scope again: the cached token, at once.
                await fetch(client, style.path, style.repository)
                clock.now = T0 + style.lifetime - REFRESH_MARGIN - 1
                await fetch(client, style.path, style.repository)
                assert trail(registry.journal[3:]) == [("registry", "GET", style.path, bearer)] * 2

                # Close to expiry: a fresh token.
                clock.now = T0 + style.lifetime - REFRESH_MARGIN + 1
                response, body = await fetch(client, style.path, style.repository)
                assert (response.status, body) == (200, MANIFEST)
                assert trail(registry.journal[5:]) == [
                    ("registry", "GET", style.path, None),
                    (realm.name, "GET", style.token_path, None),
                    ("registry", "GET", style.path, bearer),
                ]


async def test_head_goes_through_the_dance_too() -> None:
    path = "/v2/library/nginx/manifests/latest"
    bearer = f"Bearer {HUB_TOKEN}"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth") as (registry, auth):
            registry.routes[("HEAD", path)] = Authorized(
                bearer, HUB_MANIFEST_HEAD_200, fill(HUB_401_HEAD, auth=auth)
            )
            auth.routes[("GET", "/token")] = HUB_TOKEN_200
            async with registry_client(registry.url()) as client:
                for _ in range(2):
                    response, body = await fetch(client, path, "library/nginx", method="HEAD")
                    assert (response.status, body) == (200, b"")
                    assert response.content_length == len(MANIFEST)
                    assert response.header("docker-content-digest") == MANIFEST_DIGEST
            assert trail(registry.journal) == [
                ("registry", "HEAD", path, None),
                ("auth", "GET", "/token", None),
                ("registry", "HEAD", path, bearer),
                ("registry", "HEAD", path, bearer),
            ]


async def test_another_scope_needs_another_token() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth") as (registry, auth):
            bearer = f"Bearer {HUB_TOKEN}"
            for repository in ("library/nginx", "library/redis"):
                # Docker Hub names the repository asked for in its challenge.
                challenge = HUB_401.replace(b"library/nginx", repository.encode())
                registry.routes[("GET", f"/v2/{repository}/manifests/latest")] = Authorized(
                    bearer, HUB_MANIFEST_200, fill(challenge, auth=auth)
                )
            auth.routes[("GET", "/token")] = HUB_TOKEN_200
            async with registry_client(registry.url()) as client:
                await fetch(client, "/v2/library/nginx/manifests/latest", "library/nginx")
                response, _ = await fetch(
                    client, "/v2/library/redis/manifests/latest", "library/redis"
                )
            assert response.status == 200
            scopes = [s.query["scope"] for s in auth.seen]
            # The token for nginx is no good for redis.
            assert scopes == [["repository:library/nginx:pull"], ["repository:library/redis:pull"]]


async def test_gcr_401_without_challenge_is_answered_after_a_v2_ping() -> None:
    path = "/v2/regcache-project/app/manifests/latest"
    bearer = f"Bearer {GCR_TOKEN}"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", path)] = Authorized(
                bearer, HUB_MANIFEST_200, GCR_401_NO_CHALLENGE
            )
            registry.routes[("GET", "/v2/")] = fill(GCR_PING_401, registry=registry)
            registry.routes[("GET", "/v2/token")] = GCR_TOKEN_200
            async with registry_client(registry.url()) as client:
                response, body = await fetch(client, path, "regcache-project/app")
                assert (response.status, body) == (200, MANIFEST)
                seen = trail(registry.journal)
                assert seen[:2] == [
                    ("registry", "GET", path, None),
                    ("registry", "GET", "/v2/", None),
                ]
                assert seen[-2:] == [
                    ("registry", "GET", "/v2/token", None),
                    ("registry", "GET", path, bearer),
                ]
                tokens = [s for s in registry.seen if s.path == "/v2/token"]
                assert len(tokens) == 1
                assert tokens[0].query == {
                    "service": ["gcr.io"],
                    "scope": ["repository:regcache-project/app:pull"],
                }
                assert all(s.authorization in (None, bearer) for s in registry.seen)

                # The challenge is known now: no second ping, the cached token.
                before = len(registry.journal)
                await fetch(client, path, "regcache-project/app")
                assert trail(registry.journal[before:]) == [("registry", "GET", path, bearer)]


async def test_401_without_challenge_and_a_ping_without_one_is_an_auth_error() -> None:
    path = "/v2/regcache-project/app/manifests/latest"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", path)] = GCR_401_NO_CHALLENGE
            registry.routes[("GET", "/v2/")] = GCR_401_NO_CHALLENGE
            async with registry_client(registry.url()) as client:
                with pytest.raises(AuthError) as caught:
                    await fetch(client, path, "regcache-project/app")
            assert "without a challenge" in caught.value.message
            # One ping only, however the dance goes.
            assert [s.path for s in registry.seen].count("/v2/") == 1


# --- credentials ------------------------------------------------------------------

JSON_KEY = Credentials("_json_key", '{"type": "service_account", "private_key": "a:b c"}')


async def test_credentials_go_to_the_token_endpoint_as_basic() -> None:
    path = "/v2/regcache-project/app/manifests/latest"
    bearer = f"Bearer {GCR_TOKEN}"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", path)] = Authorized(
                bearer, HUB_MANIFEST_200, fill(GCR_401_UNQUOTED, registry=registry)
            )
            registry.routes[("GET", "/v2/token")] = GCR_TOKEN_200
            async with registry_client(registry.url(), credentials=JSON_KEY) as client:
                response, _ = await fetch(client, path, "regcache-project/app")
            assert response.status == 200
            assert [s.path for s in registry.seen] == [path, "/v2/token", path]
            token_request = registry.seen[1]
            authorization = token_request.authorization
            assert authorization is not None
            scheme, _, encoded = authorization.partition(" ")
            assert scheme == "Basic"
            assert base64.b64decode(encoded, validate=True).decode() == (
                '_json_key:{"type": "service_account", "private_key": "a:b c"}'
            )
            assert token_request.query["account"] == ["_json_key"]
            # The registry itself never sees the password.
            assert [registry.seen[0].authorization, registry.seen[2].authorization] == [
                None,
                bearer,
            ]


async def test_token_endpoint_401_is_an_auth_error_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="regcache")
    password = "s3cr3t-Pa55:word"
    credentials = Credentials("regcache", password)
    path = "/v2/library/nginx/manifests/latest"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth") as (registry, auth):
            registry.routes[("GET", path)] = fill(HUB_401, auth=auth)
            auth.routes[("GET", "/token")] = HUB_TOKEN_401
            async with registry_client(registry.url(), credentials=credentials) as client:
                with pytest.raises(AuthError) as caught:
                    await fetch(client, path, "library/nginx")
            # The password was sent, to the token endpoint only.
            assert [s.authorization for s in auth.seen] == [basic("regcache", password)]
            assert [s.authorization for s in registry.seen] == [None]
    error = caught.value
    assert "token endpoint" in error.message
    secrets = (password, basic("regcache", password).split()[1])
    shown = [error.message, str(error), repr(error), repr(error.headers), caplog.text]
    assert not [text for text in shown for secret in secrets if secret in text]


async def test_basic_only_registry_gets_basic_on_the_retry() -> None:
    path = "/v2/regcache/demo/manifests/latest"
    credentials = Credentials("regcache", "pa ss:word")
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", path)] = Authorized(
                basic("regcache", "pa ss:word"), HUB_MANIFEST_200, BASIC_401
            )
            async with registry_client(registry.url(), credentials=credentials) as client:
                response, body = await fetch(client, path, "regcache/demo")
                assert (response.status, body) == (200, MANIFEST)
                assert trail(registry.journal) == [
                    ("registry", "GET", path, None),
                    ("registry", "GET", path, basic("regcache", "pa ss:word")),
                ]
                # Basic is remembered: straight away the next time.
                await fetch(client, path, "regcache/demo")
                assert trail(registry.journal[2:]) == [
                    ("registry", "GET", path, basic("regcache", "pa ss:word"))
                ]


async def test_basic_only_registry_without_credentials_is_an_auth_error() -> None:
    path = "/v2/regcache/demo/manifests/latest"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", path)] = BASIC_401
            async with registry_client(registry.url()) as client:
                with pytest.raises(AuthError) as caught:
                    await fetch(client, path, "regcache/demo")
            assert caught.value.code is ErrorCode.UNAUTHORIZED
            assert len(registry.seen) == 1


# --- redirects --------------------------------------------------------------------


async def test_redirect_to_a_cdn_goes_without_the_registry_authorization() -> None:
    bearer = f"Bearer {HUB_TOKEN}"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth", "cdn") as (registry, auth, cdn):
            registry.routes[("GET", HUB_BLOB_PATH)] = Authorized(
                bearer, fill(HUB_BLOB_307, cdn=cdn), fill(HUB_401, auth=auth)
            )
            auth.routes[("GET", "/token")] = HUB_TOKEN_200
            cdn.routes[("GET", CDN_PATH)] = CDN_BLOB_200
            async with registry_client(registry.url()) as client:
                response, body = await fetch(client, HUB_BLOB_PATH, "library/nginx")
            assert response.status == 200
            assert body == BLOB
            assert response.header("server") == "cloudflare"
            assert trail(registry.journal) == [
                ("registry", "GET", HUB_BLOB_PATH, None),
                ("auth", "GET", "/token", None),
                ("registry", "GET", HUB_BLOB_PATH, bearer),
                ("cdn", "GET", CDN_PATH, None),
            ]
            (cdn_request,) = cdn.seen
            assert cdn_request.query == {"verify": ["1795824000-abc"]}
            assert cdn_request.header_values("host") == [cdn.host]


async def test_a_cdn_401_is_the_answer_not_a_challenge() -> None:
    # An open registry (like mcr.microsoft.com) whose CDN refuses the URL.
    path = f"/v2/regcache/demo/blobs/{BLOB_DIGEST}"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth", "cdn") as (registry, auth, cdn):
            registry.routes[("GET", path)] = fill(HUB_BLOB_307, cdn=cdn)
            cdn.routes[("GET", CDN_PATH)] = fill(CDN_401, auth=auth)
            async with registry_client(registry.url()) as client:
                response, body = await fetch(client, path, "regcache/demo")
            assert (response.status, body) == (401, b"invalid verify\n")
            assert trail(registry.journal) == [
                ("registry", "GET", path, None),
                ("cdn", "GET", CDN_PATH, None),
            ]
            assert auth.seen == []


async def test_relative_location_is_resolved_on_the_registry_and_keeps_authorization() -> None:
    bearer = f"Bearer {PKG_DEV_TOKEN}"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", PKG_DEV_BLOB_PATH)] = Authorized(
                bearer, PKG_DEV_BLOB_302, fill(PKG_DEV_401, registry=registry)
            )
            registry.routes[("GET", "/v2/token")] = PKG_DEV_TOKEN_200
            registry.routes[("GET", DOWNLOAD_PATH)] = PKG_DEV_DOWNLOAD_200
            async with registry_client(registry.url()) as client:
                response, body = await fetch(
                    client, PKG_DEV_BLOB_PATH, "regcache-project/images/app"
                )
            assert (response.status, body) == (200, BLOB)
            assert trail(registry.journal) == [
                ("registry", "GET", PKG_DEV_BLOB_PATH, None),
                ("registry", "GET", "/v2/token", None),
                ("registry", "GET", PKG_DEV_BLOB_PATH, bearer),
                ("registry", "GET", DOWNLOAD_PATH, bearer),
            ]
            assert registry.seen[-1].header_values("host") == [registry.host]


async def test_a_redirect_loop_is_stopped() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", LOOP_PATH)] = LOOP_302
            async with registry_client(registry.url()) as client:
                with pytest.raises(RemoteProtocolError) as caught:
                    await fetch(client, LOOP_PATH, "regcache/loop")
            assert caught.value.code is ErrorCode.UPSTREAM_ERROR
            assert "redirects" in caught.value.message
            assert [s.path for s in registry.seen] == [LOOP_PATH] * (MAX_REDIRECTS + 1)


# --- mirrors ----------------------------------------------------------------------

MIRROR_PATH = "/v2/library/nginx/manifests/latest"


def upstream_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "regcache.upstream" and r.levelno == logging.WARNING
    ]


async def test_mirrors_are_tried_in_order_past_dead_and_failing_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with dead_port() as port, scripted("mirror", "real") as (mirror, real):
            dead = f"http://127.0.0.1:{port}"
            mirror.routes[("GET", MIRROR_PATH)] = MIRROR_503
            real.routes[("GET", MIRROR_PATH)] = HUB_MANIFEST_200
            async with registry_client(dead, mirror.url(), real.url()) as client:
                response, body = await fetch(client, MIRROR_PATH, "library/nginx")
            assert (response.status, body) == (200, MANIFEST)
            assert trail(real.journal) == [
                ("mirror", "GET", MIRROR_PATH, None),
                ("real", "GET", MIRROR_PATH, None),
            ]
    warnings = upstream_warnings(caplog)
    assert len(warnings) == 2
    assert dead in warnings[0] and "unreachable" in warnings[0]
    assert mirror.url() in warnings[1] and "503" in warnings[1]


async def test_a_rate_limited_mirror_is_passed_over() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("mirror", "real") as (mirror, real):
            mirror.routes[("GET", MIRROR_PATH)] = HUB_429
            real.routes[("GET", MIRROR_PATH)] = HUB_MANIFEST_200
            async with registry_client(mirror.url(), real.url()) as client:
                response, body = await fetch(client, MIRROR_PATH, "library/nginx")
            assert (response.status, body) == (200, MANIFEST)
            assert [s.server for s in real.journal] == ["mirror", "real"]


async def test_the_last_upstream_5xx_is_returned_as_it_is() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("mirror", "real") as (mirror, real):
            mirror.routes[("GET", MIRROR_PATH)] = HUB_429
            real.routes[("GET", MIRROR_PATH)] = MIRROR_503
            async with registry_client(mirror.url(), real.url()) as client:
                response, body = await fetch(client, MIRROR_PATH, "library/nginx")
            assert response.status == 503
            assert body.startswith(b"<html><body><h1>503 Service Unavailable</h1>")
            assert [s.server for s in real.journal] == ["mirror", "real"]


async def test_the_last_upstream_unreachable_is_raised() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with dead_port() as port, registry_client(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(UpstreamConnectError):
                await fetch(client, MIRROR_PATH, "library/nginx")


async def test_a_mirror_that_drops_the_connection_is_passed_over() -> None:
    # A mirror that accepts and closes without answering (a restarting
    # backend behind a load balancer) is as good as unreachable: nothing has
    # reached a client yet, and the next upstream can answer.
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("mirror", "real") as (mirror, real):
            mirror.routes[("GET", MIRROR_PATH)] = DROP
            real.routes[("GET", MIRROR_PATH)] = HUB_MANIFEST_200
            async with registry_client(mirror.url(), real.url()) as client:
                response, body = await fetch(client, MIRROR_PATH, "library/nginx")
            assert (response.status, body) == (200, MANIFEST)
            assert [s.server for s in real.journal] == ["mirror", "real"]


# --- one token request for many ---------------------------------------------------


class UnsharedFlights(TokenFlights):
    """No sharing at all: shows what the shared flights save."""

    async def fetch(self, key: TokenKey, run: Callable[[], Awaitable[TokenAnswer]]) -> TokenAnswer:
        return await run()


async def open_gate_when_settled(server: ScriptedServer, answered: int, gate: trio.Event) -> None:
    """Set ``gate`` once ``server`` has answered and every task waits on something."""
    await server.wait_answered(answered)
    # The cushion lets answers in flight on loopback arrive and be acted on.
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    gate.set()


@pytest.mark.parametrize(
    ("flights", "token_requests"),
    [(TokenFlights, 1), (UnsharedFlights, 10)],
    ids=["shared", "unshared"],
)
async def test_concurrent_requests_share_one_token_request(
    flights: type[TokenFlights], token_requests: int
) -> None:
    bearer = f"Bearer {HUB_TOKEN}"
    path = "/v2/library/nginx/manifests/latest"
    gate = trio.Event()
    results: list[tuple[int, bytes]] = []
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth") as (registry, auth):
            registry.routes[("GET", path)] = Authorized(
                bearer, HUB_MANIFEST_200, fill(HUB_401, auth=auth)
            )
            # The token is held back until all ten have had their 401.
            auth.routes[("GET", "/token")] = Gated(gate, HUB_TOKEN_200)
            async with registry_client(registry.url(), token_flights=flights()) as client:

                async def one() -> None:
                    response, body = await fetch(client, path, "library/nginx")
                    results.append((response.status, body))

                async with trio.open_nursery() as nursery:
                    for _ in range(10):
                        nursery.start_soon(one)
                    nursery.start_soon(open_gate_when_settled, registry, 10, gate)
            assert results == [(200, MANIFEST)] * 10
            assert len(auth.seen) == token_requests
            assert sorted(trail(registry.seen), key=str) == sorted(
                [("registry", "GET", path, None)] * 10 + [("registry", "GET", path, bearer)] * 10,
                key=str,
            )


async def test_a_failed_token_request_is_retried_once_for_all_waiting() -> None:
    # The first token request dies with its connection; the requests that
    # waited on it must not each fetch their own, and all of them succeed.
    bearer = f"Bearer {HUB_TOKEN}"
    path = "/v2/library/nginx/manifests/latest"
    gate = trio.Event()
    results: list[tuple[int, bytes]] = []
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth") as (registry, auth):
            registry.routes[("GET", path)] = Authorized(
                bearer, HUB_MANIFEST_200, fill(HUB_401, auth=auth)
            )
            auth.routes[("GET", "/token")] = InTurn((Gated(gate, DROP), HUB_TOKEN_200))
            async with registry_client(registry.url()) as client:

                async def one() -> None:
                    response, body = await fetch(client, path, "library/nginx")
                    results.append((response.status, body))

                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(one)
                    nursery.start_soon(open_gate_when_settled, registry, 3, gate)
            assert results == [(200, MANIFEST)] * 3
            # The dropped one, and one more for everyone.
            assert len(auth.seen) == 2


async def test_a_token_refusal_is_shared_by_all_waiting() -> None:
    path = "/v2/library/nginx/manifests/latest"
    gate = trio.Event()
    errors: list[AuthError] = []
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry", "auth") as (registry, auth):
            registry.routes[("GET", path)] = fill(HUB_401, auth=auth)
            auth.routes[("GET", "/token")] = Gated(gate, HUB_TOKEN_401)
            async with registry_client(registry.url()) as client:

                async def one() -> None:
                    with pytest.raises(AuthError) as caught:
                        await fetch(client, path, "library/nginx")
                    errors.append(caught.value)

                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(one)
                    nursery.start_soon(open_gate_when_settled, registry, 4, gate)
            assert len(errors) == 4
            assert len(auth.seen) == 1


# --- big answers ------------------------------------------------------------------


async def test_a_70_kib_header_block_is_accepted() -> None:
    path = "/v2/regcache-project/images/app/manifests/latest"
    with trio.fail_after(TEST_DEADLINE):
        async with scripted("registry") as (registry,):
            registry.routes[("GET", path)] = PKG_DEV_MANIFEST_BIG_HEADERS
            async with registry_client(registry.url()) as client:
                response, body = await fetch(client, path, "regcache-project/images/app")
            assert (response.status, body) == (200, MANIFEST)
            assert response.header("x-goog-something") == BIG_HEADER_VALUE.decode()
