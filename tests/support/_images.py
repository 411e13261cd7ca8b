"""Synthetic container images: random layer blobs, configs, manifests, indexes.

Layers are seeded pseudo-random bytes written to files (a 100 MiB layer never
sits in memory) and labelled as uncompressed tar: a registry never looks
inside a layer. Manifests follow the OCI image spec (image-manifest.md,
image-index.md) or Docker's image manifest v2 schema 2 and manifest list.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

ManifestFormat = Literal["oci", "docker"]

# Blob files are generated and hashed in pieces of this size.
_GENERATE_CHUNK = 1 << 20


@attrs.frozen
class Platform:
    """An image's platform, as in an index entry."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def as_json(self) -> dict[str, str]:
        """The ``platform`` object of an index entry."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


@attrs.frozen
class Blob:
    """A blob held in a file: its digest, size, media type and path."""

    digest: str
    size: int
    media_type: str
    path: Path

    def descriptor(self) -> dict[str, Any]:
        """An OCI descriptor for this blob."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def read_bytes(self) -> bytes:
        """The blob's content (mind the size)."""
        return self.path.read_bytes()


@attrs.frozen
class ImageManifest:
    """A single-platform image: manifest bytes, config and layers."""

    media_type: str
    raw: bytes
    config: Blob
    layers: tuple[Blob, ...]
    platform: Platform

    @property
    def digest(self) -> str:
        """``sha256:`` digest of the manifest bytes."""
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    @property
    def size(self) -> int:
        """Length of the manifest bytes."""
        return len(self.raw)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Config then layers."""
        return (self.config, *self.layers)

    def descriptor(self) -> dict[str, Any]:
        """An index entry for this manifest."""
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "platform": self.platform.as_json(),
        }


@attrs.frozen
class ImageIndex:
    """A multi-platform image: an OCI index or a Docker manifest list."""

    media_type: str
    raw: bytes
    manifests: tuple[ImageManifest, ...]

    @property
    def digest(self) -> str:
        """``sha256:`` digest of the index bytes."""
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    @property
    def size(self) -> int:
        """Length of the index bytes."""
        return len(self.raw)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Every blob of every platform (duplicates removed, order kept)."""
        seen: dict[str, Blob] = {}
        for manifest in self.manifests:
            for blob in manifest.blobs:
                seen.setdefault(blob.digest, blob)
        return tuple(seen.values())

    def for_platform(self, platform: Platform) -> ImageManifest:
        """The manifest for platform."""
        for manifest in self.manifests:
            if manifest.platform == platform:
                return manifest
        raise KeyError(platform)


def _canonical(document: Any) -> bytes:
    return json.dumps(document, indent=3, sort_keys=False).encode() + b"\n"


def _seeded_chunks(seed: str, size: int) -> Iterator[bytes]:
    # SHAKE-256 of (seed, chunk number): deterministic, fast, and different
    # seeds never share a chunk.
    index = 0
    remaining = size
    while remaining > 0:
        n = min(_GENERATE_CHUNK, remaining)
        yield hashlib.shake_256(f"{seed}\0{index}".encode()).digest(n)
        remaining -= n
        index += 1


class ImageBuilder:
    """Makes blobs and images under a directory; identical inputs reuse files.

    Thread-safe. Blob files are ``<directory>/<hex>``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seeded: dict[tuple[str, int, str], Blob] = {}

    def blob_from_bytes(self, data: bytes, media_type: str) -> Blob:
        """Store data as a blob file."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.directory / digest.removeprefix("sha256:")
        if not path.exists():
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data)
            temporary.replace(path)
        return Blob(digest=digest, size=len(data), media_type=media_type, path=path)

    def random_blob(self, seed: str, size: int, media_type: str = OCI_LAYER) -> Blob:
        """A blob of size pseudo-random bytes determined by seed."""
        key = (seed, size, media_type)
        with self._lock:
            cached = self._seeded.get(key)
            if cached is not None:
                return cached
            hasher = hashlib.sha256()
            temporary = self.directory / f"partial-{hashlib.sha256(repr(key).encode()).hexdigest()}"
            with temporary.open("wb") as out:
                for chunk in _seeded_chunks(seed, size):
                    hasher.update(chunk)
                    out.write(chunk)
            digest = "sha256:" + hasher.hexdigest()
            path = self.directory / hasher.hexdigest()
            temporary.replace(path)
            blob = Blob(digest=digest, size=size, media_type=media_type, path=path)
            self._seeded[key] = blob
            return blob

    def image(
        self,
        seed: str,
        layer_sizes: Sequence[int] = (1024,),
        *,
        format: ManifestFormat = "oci",
        platform: Platform = AMD64,
        annotations: dict[str, str] | None = None,
    ) -> ImageManifest:
        """A single-platform image whose layers are random blobs of layer_sizes."""
        layer_type = OCI_LAYER if format == "oci" else DOCKER_LAYER
        layers = tuple(
            self.random_blob(f"{seed}/{platform.architecture}/layer{i}", size, layer_type)
            for i, size in enumerate(layer_sizes)
        )
        config_document = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": platform.architecture,
            "os": platform.os,
            **({"variant": platform.variant} if platform.variant else {}),
            "config": {"Labels": {"org.regcache.test.seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "history": [{"created_by": f"regcache test layer {i}"} for i in range(len(layers))],
        }
        config = self.blob_from_bytes(
            _canonical(config_document), OCI_CONFIG if format == "oci" else DOCKER_CONFIG
        )
        media_type = OCI_MANIFEST if format == "oci" else DOCKER_MANIFEST
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
        if annotations and format == "oci":
            document["annotations"] = dict(annotations)
        return ImageManifest(
            media_type=media_type,
            raw=_canonical(document),
            config=config,
            layers=layers,
            platform=platform,
        )

    def index(
        self,
        seed: str,
        layer_sizes: Sequence[int] = (1024,),
        *,
        format: ManifestFormat = "oci",
        platforms: Sequence[Platform] = (AMD64, ARM64),
    ) -> ImageIndex:
        """A multi-platform image: one image per platform, each with its own layers."""
        manifests = tuple(
            self.image(seed, layer_sizes, format=format, platform=platform)
            for platform in platforms
        )
        media_type = OCI_INDEX if format == "oci" else DOCKER_MANIFEST_LIST
        document = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [m.descriptor() for m in manifests],
        }
        return ImageIndex(media_type=media_type, raw=_canonical(document), manifests=manifests)
