"""regcache: a caching proxy for container images.

``import regcache`` is cheap and pure: the embedding API (:class:`Mirror`,
which needs trio) is loaded on first use, so programs that only want the
sans-IO core (``regcache.core``) never import an I/O library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Mirror", "PullResult", "__version__"]

if TYPE_CHECKING:
    from ._library import Mirror, PullResult


def __getattr__(name: str) -> Any:
    if name in ("Mirror", "PullResult"):
        from . import _library

        return getattr(_library, name)
    raise AttributeError(f"module 'regcache' has no attribute {name!r}")
