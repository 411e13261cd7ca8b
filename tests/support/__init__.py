"""Fixtures for regcache's end-to-end tests: a real upstream and real clients.

A test PKI, a Docker token issuer, CNCF distribution (docker-registry) as the
upstream registry, synthetic images and a pusher, an isolated skopeo, a
counting relay in front of the upstream (with fault injection and CDN
redirects) and an egress CONNECT proxy. Plain Python with threads and
subprocesses; independent of regcache itself.
"""

from ._catalog import STANDARD_LAYER_SIZES, ImageFactory, StandardImages, push_standard_images
from ._client import PushedImage, PushedIndex, RegistryClient, RegistryError, Response
from ._e2e import (
    REGISTRY,
    mirror_config,
    open_blob,
    sha256,
    slow_upstream,
    store_path,
    wait_for,
)
from ._egress import ConnectRecord, EgressProxy
from ._images import (
    AMD64,
    ARM64,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Blob,
    ImageBuilder,
    ImageIndex,
    ImageManifest,
    Platform,
)
from ._issuer import (
    DEFAULT_ISSUER,
    DEFAULT_SERVICE,
    DEFAULT_USERS,
    Scope,
    TokenIssuer,
    TokenRequest,
    decode_jwt,
)
from ._pki import PKI, SERVER_NAMES
from ._regcache import Regcache
from ._registry import AccessLogEntry, UpstreamRegistry
from ._relay import CountingRelay, RelayRequest
from ._server import format_host, free_port
from ._skopeo import (
    DirContents,
    DirVerificationError,
    RegistryEntry,
    RegistryMirror,
    Skopeo,
    SkopeoResult,
    registries_conf,
)

__all__ = [
    "REGISTRY",
    "mirror_config",
    "open_blob",
    "sha256",
    "slow_upstream",
    "store_path",
    "wait_for",
    "Regcache",
    "AMD64",
    "ARM64",
    "DEFAULT_ISSUER",
    "DEFAULT_SERVICE",
    "DEFAULT_USERS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "PKI",
    "SERVER_NAMES",
    "STANDARD_LAYER_SIZES",
    "AccessLogEntry",
    "Blob",
    "ConnectRecord",
    "CountingRelay",
    "DirContents",
    "DirVerificationError",
    "EgressProxy",
    "ImageBuilder",
    "ImageFactory",
    "ImageIndex",
    "ImageManifest",
    "Platform",
    "PushedImage",
    "PushedIndex",
    "RegistryClient",
    "RegistryEntry",
    "RegistryError",
    "RegistryMirror",
    "RelayRequest",
    "Response",
    "Scope",
    "Skopeo",
    "SkopeoResult",
    "StandardImages",
    "TokenIssuer",
    "TokenRequest",
    "UpstreamRegistry",
    "decode_jwt",
    "format_host",
    "free_port",
    "push_standard_images",
    "registries_conf",
]
