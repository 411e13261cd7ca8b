"""A small blocking registry client for setting up and checking test data.

Speaks the distribution HTTP API (OCI distribution-spec: pull, push and
content management) over http.client, including the token dance of the
Docker token specification: on a 401 with a Bearer challenge it asks the realm
for a token (with Basic credentials when it has them), caches it per scope,
and retries once. Blob uploads stream from the blob's file.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    ImageIndex,
    ImageManifest,
)

# Bodies are streamed from and to files in pieces of this size.
_IO_CHUNK = 1 << 20

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@attrs.frozen
class Response:
    """A buffered response."""

    status: int
    headers: Mapping[str, str]
    """Header names in lower case (repeated headers joined with ``, ``)."""
    body: bytes

    def json(self) -> object:
        """The body parsed as JSON."""
        return json.loads(self.body)


@attrs.frozen
class PushedImage:
    """A single-platform image pushed to a registry."""

    repository: str
    tag: str | None
    manifest: ImageManifest

    @property
    def digest(self) -> str:
        """The manifest digest."""
        return self.manifest.digest

    @property
    def raw(self) -> bytes:
        """The manifest bytes."""
        return self.manifest.raw

    @property
    def media_type(self) -> str:
        """The manifest media type."""
        return self.manifest.media_type

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Config and layers."""
        return self.manifest.blobs

    @property
    def reference(self) -> str:
        """``repository:tag`` (or ``repository@digest`` when untagged)."""
        return f"{self.repository}:{self.tag}" if self.tag else self.digest_reference

    @property
    def digest_reference(self) -> str:
        """``repository@sha256:...``."""
        return f"{self.repository}@{self.digest}"


@attrs.frozen
class PushedIndex:
    """A multi-platform image pushed to a registry."""

    repository: str
    tag: str | None
    index: ImageIndex

    @property
    def digest(self) -> str:
        """The index digest."""
        return self.index.digest

    @property
    def raw(self) -> bytes:
        """The index bytes."""
        return self.index.raw

    @property
    def media_type(self) -> str:
        """The index media type."""
        return self.index.media_type

    @property
    def manifests(self) -> tuple[PushedImage, ...]:
        """The per-platform images, pushed by digest."""
        return tuple(PushedImage(self.repository, None, m) for m in self.index.manifests)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Every blob of every platform."""
        return self.index.blobs

    @property
    def reference(self) -> str:
        """``repository:tag`` (or ``repository@digest`` when untagged)."""
        return f"{self.repository}:{self.tag}" if self.tag else self.digest_reference

    @property
    def digest_reference(self) -> str:
        """``repository@sha256:...``."""
        return f"{self.repository}@{self.digest}"


class RegistryError(Exception):
    """A registry answered with an unexpected status."""

    def __init__(self, action: str, response: Response) -> None:
        super().__init__(f"{action}: HTTP {response.status}: {response.body[:500]!r}")
        self.response = response


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split a ``WWW-Authenticate`` value into scheme and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class RegistryClient:
    """A blocking client for one registry (``https://`` or ``http://`` base URL)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or parsed.hostname is None:
            raise ValueError(f"not a registry URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.timeout = timeout
        self.username = username
        self.password = password
        self._ssl_context = ssl.create_default_context(
            cafile=str(ca_file) if ca_file is not None else None
        )
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}

    # -- transport -----------------------------------------------------------

    def _connect(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname or self.host
        target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        if parsed.scheme == "https":
            port = parsed.port or 443
            return (
                http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._ssl_context
                ),
                target,
            )
        return http.client.HTTPConnection(host, parsed.port or 80, timeout=self.timeout), target

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | Path | None,
        *,
        offset: int = 0,
        length: int | None = None,
    ) -> Response:
        connection, target = self._connect(url)
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            all_headers = dict(headers)
            if isinstance(body, bytes):
                all_headers["Content-Length"] = str(len(body))
            elif isinstance(body, Path):
                size = body.stat().st_size - offset if length is None else length
                all_headers["Content-Length"] = str(size)
            elif method in ("POST", "PUT", "PATCH"):
                all_headers["Content-Length"] = "0"
            for name, value in all_headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            if isinstance(body, bytes):
                connection.send(body)
            elif isinstance(body, Path):
                remaining = int(all_headers["Content-Length"])
                with body.open("rb") as source:
                    source.seek(offset)
                    while remaining > 0:
                        chunk = source.read(min(_IO_CHUNK, remaining))
                        if not chunk:
                            raise OSError(f"{body} is shorter than expected")
                        connection.send(chunk)
                        remaining -= len(chunk)
            response = connection.getresponse()
            data = response.read()
            merged: dict[str, str] = {}
            for name, value in response.getheaders():
                key = name.lower()
                merged[key] = f"{merged[key]}, {value}" if key in merged else value
            return Response(response.status, merged, data)
        finally:
            connection.close()

    def _basic(self) -> str | None:
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def fetch_token(self, realm: str, service: str | None, scope: str | None) -> str:
        """Ask realm for a token (with Basic credentials when configured)."""
        query: list[tuple[str, str]] = []
        if service is not None:
            query.append(("service", service))
        if scope:
            query.extend(("scope", s) for s in scope.split())
        if self.username:
            query.append(("account", self.username))
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {}
        basic = self._basic()
        if basic:
            headers["Authorization"] = basic
        response = self._send("GET", url, headers, None)
        if response.status != 200:
            raise RegistryError(f"token from {realm}", response)
        document = response.json()
        assert isinstance(document, dict)
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str):
            raise RegistryError(f"token from {realm} (no token)", response)
        return token

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Path | None = None,
        scope: str | None = None,
    ) -> Response:
        """Send one request, doing the token dance on a Bearer 401 once."""
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        base_headers = dict(headers or {})
        base_headers.setdefault("User-Agent", "regcache-test-client")
        key = scope or ""
        with self._lock:
            token = self._tokens.get(key)
        sent = dict(base_headers)
        if token:
            sent["Authorization"] = "Bearer " + token
        response = self._send(method, url, sent, body)
        if response.status != 401:
            return response
        scheme, params = parse_challenge(response.headers.get("www-authenticate", ""))
        if scheme == "bearer" and "realm" in params:
            wanted = " ".join(s for s in (scope, params.get("scope")) if s) or None
            token = self.fetch_token(params["realm"], params.get("service"), wanted)
            with self._lock:
                self._tokens[key] = token
            sent["Authorization"] = "Bearer " + token
        elif scheme == "basic" and self._basic():
            sent["Authorization"] = self._basic() or ""
        else:
            return response
        return self._send(method, url, sent, body)

    # -- reading -------------------------------------------------------------

    def ping(self) -> Response:
        """``GET /v2/`` without credentials."""
        return self._send("GET", self.base_url + "/v2/", {}, None)

    def get_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...] | None = None
    ) -> Response:
        """``GET /v2/<repository>/manifests/<reference>``."""
        types = accept or (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
        return self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(types)},
            scope=f"repository:{repository}:pull",
        )

    def get_blob(self, repository: str, digest: str) -> Response:
        """``GET /v2/<repository>/blobs/<digest>`` (buffered)."""
        return self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether ``HEAD /v2/<repository>/blobs/<digest>`` says 200."""
        response = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )
        return response.status == 200

    def tags(self, repository: str) -> list[str]:
        """``GET /v2/<repository>/tags/list``."""
        response = self.request(
            "GET", f"/v2/{repository}/tags/list", scope=f"repository:{repository}:pull"
        )
        if response.status != 200:
            raise RegistryError(f"tags of {repository}", response)
        document = response.json()
        assert isinstance(document, dict)
        return list(document.get("tags") or [])

    # -- writing -------------------------------------------------------------

    def push_blob(self, repository: str, blob: Blob, *, chunk_size: int | None = None) -> None:
        """Upload blob unless present: monolithic, or chunked PATCHes if chunk_size."""
        scope = f"repository:{repository}:pull,push"
        head = self.request("HEAD", f"/v2/{repository}/blobs/{blob.digest}", scope=scope)
        if head.status == 200:
            return
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope)
        if started.status != 202:
            raise RegistryError(f"start upload to {repository}", started)
        location = self._absolute(started.headers["location"])
        if chunk_size is not None:
            offset = 0
            while offset < blob.size:
                length = min(chunk_size, blob.size - offset)
                patched = self._send_with_token(
                    "PATCH",
                    location,
                    {
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + length - 1}",
                    },
                    blob.path,
                    scope=scope,
                    offset=offset,
                    length=length,
                )
                if patched.status != 202:
                    raise RegistryError(f"upload chunk of {blob.digest}", patched)
                location = self._absolute(patched.headers["location"])
                offset += length
            final = self._send_with_token(
                "PUT", _with_digest(location, blob.digest), {}, None, scope=scope
            )
        else:
            final = self._send_with_token(
                "PUT",
                _with_digest(location, blob.digest),
                {"Content-Type": "application/octet-stream"},
                blob.path,
                scope=scope,
            )
        if final.status != 201:
            raise RegistryError(f"finish upload of {blob.digest}", final)

    def _send_with_token(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | Path | None,
        *,
        scope: str,
        offset: int = 0,
        length: int | None = None,
    ) -> Response:
        # Upload URLs come from the registry with a token already negotiated
        # for scope by the POST; reuse it rather than risk a 401 mid-stream.
        with self._lock:
            token = self._tokens.get(scope)
        sent = dict(headers)
        sent.setdefault("User-Agent", "regcache-test-client")
        if token:
            sent["Authorization"] = "Bearer " + token
        return self._send(method, url, sent, body, offset=offset, length=length)

    def _absolute(self, location: str) -> str:
        return urllib.parse.urljoin(self.base_url + "/", location)

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """``PUT`` a manifest; return the digest the registry reports."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Content-Type": media_type},
            body=raw,
            scope=f"repository:{repository}:pull,push",
        )
        if response.status != 201:
            raise RegistryError(f"put manifest {repository}:{reference}", response)
        digest = response.headers.get("docker-content-digest", "")
        expected = "sha256:" + hashlib.sha256(raw).hexdigest()
        if digest != expected:
            raise RegistryError(f"manifest digest {digest!r} != {expected!r}", response)
        return digest

    def push_image(
        self,
        repository: str,
        image: ImageManifest,
        tag: str | None = None,
        *,
        chunk_size: int | None = None,
    ) -> PushedImage:
        """Push blobs then the manifest (by tag, or by digest when tag is None)."""
        for blob in image.blobs:
            self.push_blob(repository, blob, chunk_size=chunk_size)
        self.put_manifest(repository, tag or image.digest, image.raw, image.media_type)
        return PushedImage(repository, tag, image)

    def push_index(
        self,
        repository: str,
        index: ImageIndex,
        tag: str | None = None,
        *,
        chunk_size: int | None = None,
    ) -> PushedIndex:
        """Push every platform's image by digest, then the index."""
        for image in index.manifests:
            self.push_image(repository, image, None, chunk_size=chunk_size)
        self.put_manifest(repository, tag or index.digest, index.raw, index.media_type)
        return PushedIndex(repository, tag, index)

    def delete_manifest(self, repository: str, digest: str) -> Response:
        """``DELETE /v2/<repository>/manifests/<digest>``."""
        return self.request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            scope=f"repository:{repository}:pull,push,delete",
        )


def _with_digest(location: str, digest: str) -> str:
    separator = "&" if "?" in location else "?"
    return f"{location}{separator}digest={urllib.parse.quote(digest)}"
