"""regcache: a caching proxy for container images."""

__version__ = "0.1.0"
