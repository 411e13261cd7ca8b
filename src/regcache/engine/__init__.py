"""The trio engine: upstream client, token dance, single-flight fetcher."""

from ._engine import BlobAnswer, Engine, ManifestAnswer, RelayedAnswer, registry_credentials
from ._fetcher import BlobFetch, FetchState
from ._registry import RegistryClient

__all__ = [
    "BlobAnswer",
    "BlobFetch",
    "Engine",
    "FetchState",
    "ManifestAnswer",
    "RegistryClient",
    "RelayedAnswer",
    "registry_credentials",
]
