"""The engine: the one place that decides how a request is answered from cache
and the only code that talks to upstream registries.

Both front ends (and the adapters) hand it typed routes from the core and get
back answers that say what to send: manifest bytes, a cached blob file, or an
in-flight fetch to follow. The policy decisions are the core's
(:mod:`regcache.core._policy`); the engine carries them out.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from regcache._files import read_configured_file
from regcache.config import Config, RegistryConfig
from regcache.core import Digest, ErrorCode, RemoteProtocolError, StorageError
from regcache.core._auth import Scope, TokenCache
from regcache.core._challenge import Credentials
from regcache.core._media import MAX_MANIFEST_SIZE, OCI_INDEX, parse_manifest, upstream_accept
from regcache.core._policy import (
    CachedTag,
    TagAction,
    access_is_fresh,
    admits_index,
    decide_tag,
    is_upstream_outage,
    may_serve_stale,
)
from regcache.core._ranges import ByteRange, parse_content_range, parse_range
from regcache.core._reference import RegistryMap
from regcache.core._routes import BlobRoute, ManifestRoute, Referrers, TagsList
from regcache.core._store import BlobStore
from regcache.storage._index import ManifestEntry, MetadataIndex

from ._fetcher import BlobFetch, BodySource, FetchState, SpanSender, follow, follow_spans
from ._http import (
    HttpClient,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeoutError,
)
from ._memory import ManifestMemory
from ._registry import RegistryClient, TokenFlights, principal_of
from ._upkeep import Upkeep

log = logging.getLogger("regcache.engine")

#: Largest tags list or referrers answer relayed (they are paginated upstream).
MAX_LISTING = 16 * 1024 * 1024

#: The empty OCI index answered for referrers when the upstream has neither
#: the referrers API nor a fallback tag (OCI distribution spec, "Listing
#: Referrers": a registry must answer an index, empty when there are none).
EMPTY_INDEX = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
)


@attrs.frozen
class ManifestAnswer:
    """A manifest to send: exact upstream bytes, digest and media type."""

    digest: Digest
    media_type: str
    content: bytes
    #: hit, miss, revalidated, stale, or upstream (a HEAD answered upstream).
    cache: str
    #: The size, for HEAD answers that carry no content.
    size: int


@attrs.frozen
class BlobAnswer:
    """A blob to send: a cached file, or an in-flight fetch to follow."""

    digest: Digest
    size: int
    cache: str
    #: The byte range asked for, when it could be honoured (a 206 answer).
    byte_range: ByteRange | None = None
    #: The committed blob's local file (zero-copy path), when there is one.
    path: str | None = None
    fetch: BlobFetch | None = None
    store: BlobStore | None = None

    async def produce_spans(self, send_span: SpanSender) -> None:
        """Hand an in-flight fetch's body over in file spans (zero-copy senders)."""
        assert self.fetch is not None
        await follow_spans(self.fetch, send_span)

    async def produce(self, send: Callable[[bytes], object]) -> None:
        """Send the body through ``send`` (when there is no local path)."""
        if self.fetch is not None:
            await follow(self.fetch, send)  # type: ignore[arg-type]
            return
        assert self.store is not None
        first = 0 if self.byte_range is None else self.byte_range.first
        length = self.size if self.byte_range is None else self.byte_range.length
        with self.store.open_read(self.digest) as reader:
            reader.seek(first)
            while length > 0:
                chunk = reader.read(min(1024 * 1024, length))
                if not chunk:
                    raise StorageError(f"cached blob {self.digest} is shorter than its size")
                await send(chunk)  # type: ignore[misc]
                length -= len(chunk)


@attrs.frozen
class RelayedAnswer:
    """An upstream answer relayed as is (tags list, referrers)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def registry_credentials(name: str, registry: RegistryConfig) -> Credentials | None:
    """The credentials configured for a registry, reading ``password_file``."""
    if not registry.username:
        return None
    if registry.password_file:
        key_path = f'registries."{name}".password_file'
        password = read_configured_file(registry.password_file, key_path).decode().strip()
    else:
        password = registry.password
    return Credentials(registry.username, password)


def _ssl_context(*ca_files: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca_file in ca_files:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _principal_key(data_dir: Path) -> bytes:
    """The HMAC key that names credentials on disk; made once, kept 0600."""
    path = data_dir / "principal.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.hex())
    return key


class Engine:
    """Answers registry requests from the cache, fetching from upstream once."""

    def __init__(
        self,
        config: Config,
        *,
        store: BlobStore,
        index: MetadataIndex,
        registry_map: RegistryMap,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.index = index
        self.registry_map = registry_map
        self._clock = clock
        self._fetches: dict[Digest, BlobFetch] = {}
        self._manifests = ManifestMemory()
        self.upkeep = Upkeep(
            index,
            store,
            max_size=config.cache.max_size,
            in_flight=self._fetches.__contains__,
            on_evicted=self._manifests.discard,
            clock=clock,
        )
        self._nursery: trio.Nursery | None = None
        self._principal_key = _principal_key(Path(config.data_dir))
        self._tokens = TokenCache()
        self._token_flights = TokenFlights()
        self.registries: dict[str, RegistryClient] = {
            name: self._make_client(name, registry) for name, registry in config.registries.items()
        }

    def _make_client(self, name: str, registry: RegistryConfig | None) -> RegistryClient:
        upstream = self.config.upstream
        if registry is None:
            # An unconfigured registry that allow_unknown_registries admits:
            # anonymous, over HTTPS, with the global upstream settings.
            base_urls: tuple[str, ...] = (f"https://{name}",)
            credentials, proxy, ca_file = None, upstream.proxy, ""
        else:
            base_urls = (*registry.mirrors, registry.url)
            credentials = registry_credentials(name, registry)
            proxy, ca_file = registry.proxy or upstream.proxy, registry.ca_file
        context = _ssl_context(upstream.ca_file, ca_file)
        http = HttpClient(
            ssl_context=context,
            proxy_for=lambda _origin: proxy or None,
            connect_timeout=upstream.connect_timeout,
            read_timeout=upstream.timeout,
        )
        return RegistryClient(
            name,
            base_urls,
            http=http,
            credentials=credentials,
            principal=principal_of(credentials, self._principal_key),
            tokens=self._tokens,
            token_flights=self._token_flights,
            clock=self._clock,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Engine]:
        """Run the engine's background work (fetches, upkeep) for the duration of the block."""
        clean_start = self.index.mark_open()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.upkeep.run, clean_start)
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                self.upkeep.flush()
                self.index.mark_closed()
                for client in self.registries.values():
                    await client.aclose()

    # -- usage and the size limit (see _upkeep) --------------------------------

    @property
    def evictions(self) -> int:
        """How many blobs and manifests the size limit has evicted."""
        return self.upkeep.evictions

    @property
    def stored_bytes(self) -> int:
        """The size of the store as the index accounts it (no directory walk)."""
        return self.upkeep.stored_bytes

    async def evict(self, *, dry_run: bool = False) -> list[tuple[Digest, int]]:
        """Evict least recently used content now (see :meth:`Upkeep.evict`)."""
        return await self.upkeep.evict(dry_run=dry_run)

    def token_hosts(self) -> dict[str, str]:
        """Token realm hosts the upstreams named so far -> the registry they serve."""
        return {
            host: name for name, client in self.registries.items() for host in client.realm_hosts()
        }

    def registry(self, name: str, credentials: Credentials | None = None) -> RegistryClient:
        """The client for a registry, acting for ``credentials`` where that applies.

        A registry's configured credentials always win; a client's own
        credentials (the CONNECT front end passes them on) are used only for
        registries configured without any. NAME_UNKNOWN for registries that
        are not configured, unless allow_unknown_registries.
        """
        client = self.registries.get(name)
        if client is None:
            if not self.registry_map.allow_unknown_registries:
                raise RemoteProtocolError(
                    ErrorCode.NAME_UNKNOWN, f"registry {name!r} is not configured"
                )
            client = self.registries[name] = self._make_client(name, None)
        if credentials is None or client.credentials is not None:
            return client
        principal = principal_of(credentials, self._principal_key)
        return client.acting_as(credentials, principal)

    # -- access -----------------------------------------------------------

    async def _ensure_access(
        self, client: RegistryClient, repository: str, kind: str, digest: Digest
    ) -> None:
        """Serve cached content only to a principal the upstream let read it."""
        now = self._clock()
        confirmed_at = self.index.access_confirmed_at(
            client.name, repository, digest, client.principal
        )
        if access_is_fresh(confirmed_at, now=now, access_ttl=self.config.cache.access_ttl):
            return
        scope = Scope.pull(repository)
        headers = (("Accept", upstream_accept(())),) if kind == "manifests" else ()
        try:
            response = await client.request(
                "HEAD", f"/v2/{repository}/{kind}/{digest}", scopes=(scope,), headers=headers
            )
        except (UpstreamConnectError, UpstreamTimeoutError) as exc:
            if confirmed_at is not None:
                log.warning(
                    "%s: upstream unreachable (%s); serving %s/%s, confirmed readable before",
                    client.name,
                    exc,
                    repository,
                    digest,
                )
                return
            raise RemoteProtocolError(
                ErrorCode.UNAVAILABLE,
                f"{client.name} is unreachable and access to {repository} was never confirmed",
            ) from exc
        async with response:
            status = response.status
        if status == 200:
            self.index.confirm_access(client.name, repository, digest, client.principal, now)
            return
        if is_upstream_outage(status) and confirmed_at is not None:
            log.warning(
                "%s: upstream answered %d; serving %s/%s, confirmed readable before",
                client.name,
                status,
                repository,
                digest,
            )
            return
        raise self._upstream_refusal(client, status, kind, repository)

    def _upstream_refusal(
        self, client: RegistryClient, status: int, kind: str, repository: str
    ) -> RemoteProtocolError:
        if status in (401, 403):
            return RemoteProtocolError(
                ErrorCode.DENIED,
                f"{client.name} refused access to {repository}"
                + (" with the configured credentials" if client.credentials else " anonymously"),
            )
        if status == 404:
            code = {
                "manifests": ErrorCode.MANIFEST_UNKNOWN,
                "blobs": ErrorCode.BLOB_UNKNOWN,
            }.get(kind, ErrorCode.NAME_UNKNOWN)
            return RemoteProtocolError(
                code, f"{client.name} has no such {kind[:-1]} in {repository}"
            )
        if status == 429:
            return RemoteProtocolError(
                ErrorCode.TOOMANYREQUESTS, f"{client.name} is rate-limiting regcache"
            )
        return RemoteProtocolError(
            ErrorCode.UPSTREAM_ERROR, f"{client.name} answered {status} for {repository}"
        )

    # -- manifests --------------------------------------------------------

    def _load_manifest(self, digest: Digest) -> bytes | None:
        """The stored bytes of a manifest the index says is cached (memory first)."""
        content = self._manifests.get(digest)
        if content is not None:
            return content
        try:
            with self.store.open_read(digest) as reader:
                content = reader.read(MAX_MANIFEST_SIZE + 1)
        except StorageError:
            return None
        self._manifests.put(digest, content)
        return content

    async def manifest(
        self,
        route: ManifestRoute,
        accept_values: Sequence[str],
        credentials: Credentials | None = None,
    ) -> ManifestAnswer:
        """Answer a manifest GET or HEAD, by tag or by digest."""
        client = self.registry(route.registry, credentials)
        if isinstance(route.reference, Digest):
            answer = await self._manifest_by_digest(client, route, route.reference, accept_values)
        else:
            answer = await self._manifest_by_tag(client, route, route.reference, accept_values)
        self.upkeep.note_use(answer.digest, answer.cache, 0)
        return answer

    async def _manifest_by_digest(
        self,
        client: RegistryClient,
        route: ManifestRoute,
        digest: Digest,
        accept_values: Sequence[str],
    ) -> ManifestAnswer:
        entry = self.index.get_manifest(client.name, route.repository, digest)
        media_type = entry.media_type if entry else self.index.find_manifest_type(digest)
        content = self._load_manifest(digest) if media_type else None
        if content is not None and media_type is not None:
            await self._ensure_access(client, route.repository, "manifests", digest)
            if entry is None:
                self.index.put_manifest(
                    ManifestEntry(client.name, route.repository, digest, media_type, len(content))
                )
            return ManifestAnswer(digest, media_type, content, "hit", len(content))
        if route.head:
            return await self._head_manifest(client, route, str(digest), accept_values)
        return await self._fetch_manifest(client, route, str(digest), accept_values, digest)

    async def _manifest_by_tag(
        self, client: RegistryClient, route: ManifestRoute, tag: str, accept_values: Sequence[str]
    ) -> ManifestAnswer:
        now = self._clock()
        cache = self.config.cache
        cached = self.index.get_tag(client.name, route.repository, tag)
        action = decide_tag(cached, accept_values=accept_values, now=now, tag_ttl=cache.tag_ttl)
        if cached is not None and action is not TagAction.FETCH:
            content = self._load_manifest(cached.digest)
            if content is None:
                action = TagAction.FETCH
            elif action is TagAction.SERVE:
                confirmed_at = self.index.access_confirmed_at(
                    client.name, route.repository, cached.digest, client.principal
                )
                if access_is_fresh(confirmed_at, now=now, access_ttl=cache.access_ttl):
                    return ManifestAnswer(
                        cached.digest, cached.media_type, content, "hit", len(content)
                    )
            if action is not TagAction.FETCH and content is not None:
                answer = await self._revalidate(client, route, tag, cached, content, accept_values)
                if answer is not None:
                    return answer
        if route.head:
            return await self._head_manifest(client, route, tag, accept_values)
        return await self._fetch_manifest(client, route, tag, accept_values, None)

    async def _revalidate(
        self,
        client: RegistryClient,
        route: ManifestRoute,
        tag: str,
        cached: CachedTag,
        content: bytes,
        accept_values: Sequence[str],
    ) -> ManifestAnswer | None:
        """HEAD the tag upstream; the cached answer if it still holds, None to refetch."""
        status: int | None
        digest_header: str | None = None
        try:
            response = await client.request(
                "HEAD",
                f"/v2/{route.repository}/manifests/{tag}",
                scopes=(Scope.pull(route.repository),),
                headers=(("Accept", upstream_accept(accept_values)),),
            )
            async with response:
                status = response.status
                digest_header = response.header("docker-content-digest")
        except (UpstreamConnectError, UpstreamTimeoutError) as exc:
            status, reason = None, str(exc)
        else:
            reason = f"status {status}"
        now = self._clock()
        if is_upstream_outage(status):
            cache = self.config.cache
            confirmed = self.index.access_confirmed_at(
                client.name, route.repository, cached.digest, client.principal
            )
            if confirmed is not None and may_serve_stale(
                cached, now=now, tag_ttl=cache.tag_ttl, stale_if_error=cache.stale_if_error
            ):
                log.warning(
                    "%s: upstream failing (%s); serving %s:%s stale, last confirmed %.0fs ago",
                    client.name,
                    reason,
                    route.repository,
                    tag,
                    now - cached.validated_at,
                )
                return ManifestAnswer(
                    cached.digest, cached.media_type, content, "stale", len(content)
                )
            raise RemoteProtocolError(
                ErrorCode.UNAVAILABLE if status is None else ErrorCode.UPSTREAM_ERROR,
                f"{client.name} is failing ({reason}) and {route.repository}:{tag}"
                " is not cached within stale_if_error",
            )
        assert status is not None
        if status == 200 and digest_header == str(cached.digest):
            self.index.put_tag(
                client.name, route.repository, tag, attrs.evolve(cached, validated_at=now)
            )
            self.index.confirm_access(
                client.name, route.repository, cached.digest, client.principal, now
            )
            return ManifestAnswer(
                cached.digest, cached.media_type, content, "revalidated", len(content)
            )
        if status == 404:
            self.index.delete_tag(client.name, route.repository, tag)
        if status != 200:
            raise self._upstream_refusal(client, status, "manifests", route.repository)
        return None

    async def _head_manifest(
        self,
        client: RegistryClient,
        route: ManifestRoute,
        reference: str,
        accept_values: Sequence[str],
    ) -> ManifestAnswer:
        """Answer an uncached HEAD from the upstream's HEAD (free on Docker Hub)."""
        response = await self._request_upstream(
            client,
            "HEAD",
            f"/v2/{route.repository}/manifests/{reference}",
            route.repository,
            (("Accept", upstream_accept(accept_values)),),
        )
        async with response:
            status = response.status
            digest_text = response.header("docker-content-digest")
            media_type = response.header("content-type")
            length = response.content_length
        if status != 200:
            raise self._upstream_refusal(client, status, "manifests", route.repository)
        if not digest_text or not media_type or length is None:
            # Without these a HEAD answer is useless to the client: fetch it.
            return await self._fetch_manifest(client, route, reference, accept_values, None)
        digest = Digest.parse(digest_text)
        return ManifestAnswer(digest, media_type.split(";")[0].strip(), b"", "upstream", length)

    async def _request_upstream(
        self,
        client: RegistryClient,
        method: str,
        path: str,
        repository: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> UpstreamResponse:
        try:
            return await client.request(
                method, path, scopes=(Scope.pull(repository),), headers=headers
            )
        except (UpstreamConnectError, UpstreamTimeoutError) as exc:
            raise RemoteProtocolError(
                ErrorCode.UNAVAILABLE, f"{client.name} is unreachable: {exc}"
            ) from exc

    async def _fetch_manifest(
        self,
        client: RegistryClient,
        route: ManifestRoute,
        reference: str,
        accept_values: Sequence[str],
        expected: Digest | None,
    ) -> ManifestAnswer:
        response = await self._request_upstream(
            client,
            "GET",
            f"/v2/{route.repository}/manifests/{reference}",
            route.repository,
            (("Accept", upstream_accept(accept_values)),),
        )
        async with response:
            if response.status != 200:
                raise self._upstream_refusal(client, response.status, "manifests", route.repository)
            raw = await response.read_all(MAX_MANIFEST_SIZE)
            content_type = response.header("content-type")
            digest_header = response.header("docker-content-digest")
        manifest = parse_manifest(raw, content_type, expected_digest=expected)
        if digest_header:
            announced = Digest.parse(digest_header)
            if announced.algorithm == manifest.digest.algorithm and announced != manifest.digest:
                raise RemoteProtocolError(
                    ErrorCode.UPSTREAM_ERROR,
                    f"{client.name} announced {announced} for {route.repository}:{reference}"
                    f" but sent content hashing to {manifest.digest}",
                )
        await self._store_bytes(manifest.digest, raw)
        now = self._clock()
        self.index.put_manifest(
            ManifestEntry(
                client.name, route.repository, manifest.digest, manifest.media_type, len(raw)
            )
        )
        if expected is None:
            self.index.put_tag(
                client.name,
                route.repository,
                reference,
                CachedTag(
                    manifest.digest,
                    manifest.media_type,
                    now,
                    index_admitted=admits_index(accept_values),
                ),
            )
        self.index.confirm_access(
            client.name, route.repository, manifest.digest, client.principal, now
        )
        return ManifestAnswer(manifest.digest, manifest.media_type, raw, "miss", len(raw))

    async def _store_bytes(self, digest: Digest, content: bytes) -> None:
        def write() -> None:
            with self.store.begin_write(digest) as writer:
                writer.write(content)
                writer.commit(len(content))

        await trio.to_thread.run_sync(write)
        self.upkeep.committed(digest, len(content))
        self._manifests.put(digest, content)

    # -- blobs ------------------------------------------------------------

    async def blob(
        self,
        route: BlobRoute,
        range_header: str | None,
        credentials: Credentials | None = None,
    ) -> BlobAnswer:
        """Answer a blob GET or HEAD: from the store, by joining a fetch, or by starting one."""
        answer = await self._blob(route, range_header, credentials)
        if not route.head:
            served = answer.size if answer.byte_range is None else answer.byte_range.length
            self.upkeep.note_use(answer.digest, answer.cache, served)
        return answer

    async def _blob(
        self, route: BlobRoute, range_header: str | None, credentials: Credentials | None
    ) -> BlobAnswer:
        client = self.registry(route.registry, credentials)
        digest = route.digest
        info = self.store.stat(digest)
        if info is not None:
            await self._ensure_access(client, route.repository, "blobs", digest)
            return self._cached_blob(digest, info.size, range_header, "hit")
        fetch = self._fetches.get(digest)
        cache = "joined"
        if fetch is None:
            if route.head:
                return await self._head_blob(client, route)
            fetch = self._start_fetch(client, route.repository, digest)
            cache = "miss"
        elif fetch.owner != (client.name, route.repository, client.principal):
            # Joining a fetch started for another repository or principal:
            # the upstream must first say this one may read it too.
            await self._ensure_access(client, route.repository, "blobs", digest)
        await fetch.wait_started()
        fetch.raise_if_failed()
        if range_header is not None or fetch.size is None:
            # Ranges and size-less answers are served once the blob is verified.
            await fetch.wait_done()
            fetch.raise_if_failed()
            assert fetch.info is not None
            return self._cached_blob(digest, fetch.info.size, range_header, cache)
        return BlobAnswer(digest, fetch.size, cache, fetch=fetch)

    def _cached_blob(
        self, digest: Digest, size: int, range_header: str | None, cache: str
    ) -> BlobAnswer:
        byte_range = parse_range(range_header, size)
        return BlobAnswer(
            digest,
            size,
            cache,
            byte_range=byte_range,
            path=self.store.local_path(digest),
            store=self.store,
        )

    async def _head_blob(self, client: RegistryClient, route: BlobRoute) -> BlobAnswer:
        response = await self._request_upstream(
            client, "HEAD", f"/v2/{route.repository}/blobs/{route.digest}", route.repository
        )
        async with response:
            status, length = response.status, response.content_length
        if status != 200:
            raise self._upstream_refusal(client, status, "blobs", route.repository)
        if length is None:
            raise RemoteProtocolError(
                ErrorCode.UPSTREAM_ERROR, f"{client.name} sent no size for blob {route.digest}"
            )
        self.index.confirm_access(
            client.name, route.repository, route.digest, client.principal, self._clock()
        )
        return BlobAnswer(route.digest, length, "upstream")

    def _start_fetch(self, client: RegistryClient, repository: str, digest: Digest) -> BlobFetch:
        assert self._nursery is not None, "the engine is not running"
        fetch = BlobFetch(
            digest, owner=(client.name, repository, client.principal), clock=self._clock
        )
        self._fetches[digest] = fetch
        path = f"/v2/{repository}/blobs/{digest}"

        async def open_upstream(offset: int) -> BodySource:
            headers = () if offset == 0 else (("Range", f"bytes={offset}-"),)
            response = await self._request_upstream(client, "GET", path, repository, headers)
            if offset == 0 and response.status == 200:
                self.index.confirm_access(
                    client.name, repository, digest, client.principal, self._clock()
                )
                return response
            if offset and response.status == 206:
                span = parse_content_range(response.header("content-range"))
                if span is not None and span[0] == offset:
                    return response
            await response.aclose()
            if offset and response.status in (200, 206):
                raise UpstreamError(
                    f"{client.name} did not honour a resume of {digest} at byte {offset}"
                )
            raise self._upstream_refusal(client, response.status, "blobs", repository)

        async def run() -> None:
            try:
                await fetch.run(self.store, open_upstream)
            finally:
                self._fetches.pop(digest, None)
                if fetch.state is FetchState.COMMITTED:
                    # Its last use is when it went out whole, not the
                    # (later) end of the commit: other content may have been
                    # used in between.
                    self.upkeep.committed(digest, fetch.written, fetch.verified_at)
                    log.info(
                        "%s: cached %s/%s (%d bytes)",
                        client.name,
                        repository,
                        digest,
                        fetch.written,
                    )
                elif fetch.error is not None:
                    log.warning(
                        "%s: fetch of %s/%s failed: %s",
                        client.name,
                        repository,
                        digest,
                        fetch.error,
                    )

        self._nursery.start_soon(run)
        return fetch

    # -- listings ---------------------------------------------------------

    async def tags(
        self, route: TagsList, query: str, credentials: Credentials | None = None
    ) -> RelayedAnswer:
        """Relay a tags list from the upstream (paginated with n and last)."""
        client = self.registry(route.registry, credentials)
        path = f"/v2/{route.repository}/tags/list" + (f"?{query}" if query else "")
        return await self._relay(client, path, route.repository, "tags")

    async def referrers(
        self, route: Referrers, credentials: Credentials | None = None
    ) -> RelayedAnswer:
        """Relay referrers; fall back to the referrers tag schema, then to an empty index."""
        client = self.registry(route.registry, credentials)
        path = f"/v2/{route.repository}/referrers/{route.digest}"
        if route.artifact_type:
            path += f"?artifactType={route.artifact_type}"
        answer = await self._relay(client, path, route.repository, "referrers", allow=(404,))
        if answer.status != 404:
            return answer
        tag = f"{route.digest.algorithm}-{route.digest.hex}"
        fallback = await self._relay(
            client,
            f"/v2/{route.repository}/manifests/{tag}",
            route.repository,
            "manifests",
            allow=(404,),
            headers=(("Accept", OCI_INDEX),),
        )
        if fallback.status == 200:
            return RelayedAnswer(200, (("Content-Type", OCI_INDEX),), fallback.body)
        return RelayedAnswer(200, (("Content-Type", OCI_INDEX),), EMPTY_INDEX)

    async def _relay(
        self,
        client: RegistryClient,
        path: str,
        repository: str,
        kind: str,
        *,
        allow: tuple[int, ...] = (),
        headers: Sequence[tuple[str, str]] = (),
    ) -> RelayedAnswer:
        response = await self._request_upstream(client, "GET", path, repository, headers)
        async with response:
            if response.status != 200 and response.status not in allow:
                raise self._upstream_refusal(client, response.status, kind, repository)
            body = await response.read_all(MAX_LISTING)
            relayed = tuple(
                (name, value)
                for name, value in response.headers
                if name in ("content-type", "link")
            )
        return RelayedAnswer(response.status, relayed, body)

    def catalog(self) -> list[str]:
        """Every cached repository, as ``registry/repository``."""
        return [f"{registry}/{repository}" for registry, repository in self.index.repositories()]
