"""regcache as a library: one object that owns the store, the index and the engine.

Embedding programs (the ASGI and WSGI adapters, a pre-warming job, another
service) build a :class:`Mirror` from a :class:`~regcache.config.Config`
and run it with ``async with``; inside, :meth:`Mirror.handle` answers
registry requests exactly as the mirror front end does, and :meth:`Mirror.pull`
pulls an image into the cache through the same engine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

import attrs

from .config import Config, registry_name_map
from .core import (
    BlobRoute,
    Digest,
    LocalProtocolError,
    ManifestRoute,
    Platform,
    Reference,
    RegistryMap,
    canonical_registry,
    parse_manifest,
)
from .engine import Engine
from .proxy._mirror import MirrorApp
from .proxy._server import Reply, Request
from .storage import FilesystemStore, MetadataIndex

log = logging.getLogger("regcache")

#: Accept header of a pull: every modern manifest type, indexes included.
_PULL_ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json,"
    " application/vnd.docker.distribution.manifest.list.v2+json,"
    " application/vnd.docker.distribution.manifest.v2+json",
)


def registry_map_of(config: Config) -> RegistryMap:
    """The router's view of the configured registries."""
    return RegistryMap(
        default_registry=canonical_registry(config.mirror.default_registry),
        names=registry_name_map(config),
        allow_unknown_registries=config.mirror.allow_unknown_registries,
    )


@attrs.frozen
class PullResult:
    """What :meth:`Mirror.pull` cached for one image reference."""

    reference: Reference
    #: The digest the reference resolved to (an index or a manifest).
    digest: Digest
    #: Manifests cached (the index and each platform's manifest).
    manifests: tuple[Digest, ...]
    #: Blobs (configs and layers) now in the cache, and their total size.
    blobs: tuple[Digest, ...]
    blob_bytes: int


class Mirror:
    """An embeddable regcache mirror over one data directory."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self._stack: AsyncExitStack | None = None
        self._engine: Engine | None = None
        self._app: MirrorApp | None = None

    @property
    def engine(self) -> Engine:
        """The engine (only while the mirror runs)."""
        if self._engine is None:
            raise LocalProtocolError("the mirror is not running: use 'async with Mirror(...)'")
        return self._engine

    @property
    def app(self) -> MirrorApp:
        """The registry API handler (only while the mirror runs)."""
        if self._app is None:
            raise LocalProtocolError("the mirror is not running: use 'async with Mirror(...)'")
        return self._app

    async def __aenter__(self) -> Mirror:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = FilesystemStore(self.data_dir / "store", scan=False)
        removed = store.recover()
        if removed:
            log.info("removed %d partial downloads left by an earlier run", removed)
        index = MetadataIndex(self.data_dir / "metadata.db")
        stack = AsyncExitStack()
        stack.callback(index.close)
        try:
            engine = Engine(
                self.config, store=store, index=index, registry_map=registry_map_of(self.config)
            )
            await stack.enter_async_context(engine.running())
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._engine = stack, engine
        self._app = MirrorApp(engine, users=self.config.mirror.users)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._engine, self._app = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    async def handle(self, request: Request) -> Reply:
        """Answer one registry API request (``/v2/...``) as the mirror does."""
        return await self.app.handle(request)

    async def pull(
        self, reference: str | Reference, *, platforms: Sequence[Platform] | None = None
    ) -> PullResult:
        """Pull an image into the cache: its manifests and every blob.

        ``platforms`` limits an index to those platforms (all when None).
        A short name is normalised as Docker does (``nginx`` is
        ``docker.io/library/nginx:latest``).
        """
        ref = Reference.parse(reference) if isinstance(reference, str) else reference
        engine = self.engine
        registry = engine.registry_map.lookup(ref.registry) or ref.registry
        top = await engine.manifest(
            ManifestRoute(registry, ref.repository, ref.digest or ref.reference), _PULL_ACCEPT
        )
        manifests = [top.digest]
        images = [parse_manifest(top.content, top.media_type, expected_digest=top.digest)]
        if images[0].is_index:
            index = images.pop()
            for child in index.manifests:
                if platforms is not None and not any(
                    _platform_matches(wanted, child.platform) for wanted in platforms
                ):
                    continue
                answer = await engine.manifest(
                    ManifestRoute(registry, ref.repository, child.digest), _PULL_ACCEPT
                )
                manifests.append(answer.digest)
                images.append(
                    parse_manifest(answer.content, answer.media_type, expected_digest=child.digest)
                )
        blobs: dict[Digest, int] = {}
        for image in images:
            for descriptor in image.blobs():
                if descriptor.digest in blobs:
                    continue
                blob = await engine.blob(
                    BlobRoute(registry, ref.repository, descriptor.digest), None
                )
                if blob.fetch is not None:
                    await blob.fetch.wait_done()
                    blob.fetch.raise_if_failed()
                blobs[descriptor.digest] = blob.size
        return PullResult(ref, top.digest, tuple(manifests), tuple(blobs), sum(blobs.values()))


def _platform_matches(wanted: Platform, actual: Platform | None) -> bool:
    if actual is None:
        return False
    if (wanted.os, wanted.architecture) != (actual.os, actual.architecture):
        return False
    return wanted.variant is None or wanted.variant == actual.variant
