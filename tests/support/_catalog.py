"""The standard set of images the end-to-end tests pull, and an image factory.

Repositories under ``public/`` are anonymously pullable from the test
upstream, those under ``private/`` need credentials (see TokenIssuer).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import attrs

from ._client import PushedImage, PushedIndex, RegistryClient
from ._images import ImageBuilder, ManifestFormat

# Small enough to push in well under a second, with one layer larger than a
# relay chunk so streaming paths are exercised.
STANDARD_LAYER_SIZES = (2048, 300_000)


@attrs.frozen
class StandardImages:
    """Images pushed once per test session."""

    public: PushedImage
    """``public/app:v1``: OCI manifest, anonymous pull."""
    public_docker: PushedImage
    """``public/docker-app:v1``: Docker v2 schema 2 manifest, anonymous pull."""
    private: PushedImage
    """``private/app:v1``: OCI manifest, needs credentials."""
    multiarch: PushedIndex
    """``public/multi:v1``: OCI index, linux/amd64 and linux/arm64."""
    multiarch_docker: PushedIndex
    """``public/multi-docker:v1``: Docker manifest list, same platforms."""


def push_standard_images(client: RegistryClient, builder: ImageBuilder) -> StandardImages:
    """Build and push the standard images with a client that may push."""
    sizes = STANDARD_LAYER_SIZES
    return StandardImages(
        public=client.push_image("public/app", builder.image("public-app", sizes), "v1"),
        public_docker=client.push_image(
            "public/docker-app", builder.image("public-docker-app", sizes, format="docker"), "v1"
        ),
        private=client.push_image("private/app", builder.image("private-app", sizes), "v1"),
        multiarch=client.push_index("public/multi", builder.index("public-multi", sizes), "v1"),
        multiarch_docker=client.push_index(
            "public/multi-docker",
            builder.index("public-multi-docker", sizes, format="docker"),
            "v1",
        ),
    )


class ImageFactory:
    """Pushes images on demand; the same arguments return the cached result."""

    def __init__(self, client: RegistryClient, builder: ImageBuilder) -> None:
        self.client = client
        self.builder = builder
        self._lock = threading.Lock()
        self._pushed: dict[tuple[object, ...], PushedImage | PushedIndex] = {}

    def image(
        self,
        repository: str,
        tag: str | None = "v1",
        layer_sizes: Sequence[int] = STANDARD_LAYER_SIZES,
        *,
        seed: str | None = None,
        format: ManifestFormat = "oci",
        chunk_size: int | None = None,
    ) -> PushedImage:
        """Push a single-platform image (seed defaults to repository:tag)."""
        key = ("image", repository, tag, tuple(layer_sizes), seed, format)
        with self._lock:
            cached = self._pushed.get(key)
            if isinstance(cached, PushedImage):
                return cached
            image = self.builder.image(seed or f"{repository}:{tag}", layer_sizes, format=format)
            pushed = self.client.push_image(repository, image, tag, chunk_size=chunk_size)
            self._pushed[key] = pushed
            return pushed

    def index(
        self,
        repository: str,
        tag: str | None = "v1",
        layer_sizes: Sequence[int] = STANDARD_LAYER_SIZES,
        *,
        seed: str | None = None,
        format: ManifestFormat = "oci",
    ) -> PushedIndex:
        """Push a linux/amd64 + linux/arm64 image."""
        key = ("index", repository, tag, tuple(layer_sizes), seed, format)
        with self._lock:
            cached = self._pushed.get(key)
            if isinstance(cached, PushedIndex):
                return cached
            index = self.builder.index(seed or f"{repository}:{tag}", layer_sizes, format=format)
            pushed = self.client.push_index(repository, index, tag)
            self._pushed[key] = pushed
            return pushed
