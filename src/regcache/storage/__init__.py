"""Storage backends: the filesystem blob store (the default) and the metadata index.

Each blob backend implements :class:`regcache.core.BlobStore`. An object-store
backend for multi-node deployments would sit beside the filesystem one.
"""

from ._filesystem import FilesystemBlobWriter, FilesystemStore
from ._index import ManifestEntry, MetadataIndex

__all__ = ["FilesystemBlobWriter", "FilesystemStore", "ManifestEntry", "MetadataIndex"]
