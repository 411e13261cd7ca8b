"""Cache policy: when a cached tag, manifest or blob may be served.

Pure decisions, no I/O and no clock: the caller passes ``now`` (seconds on a
clock of its choice, the same one it stored the entry's times with).

The rules, from DESIGN.md ("Configuration": ``[cache]``):

- a tag maps to a manifest digest for ``tag_ttl`` seconds after the upstream
  last confirmed it; after that it is revalidated with a HEAD request, which
  Docker Hub does not count against the pull limit, and fetched again only
  when the digest changed;
- a cached tag answer is reused only for a client whose ``Accept`` admits its
  media type (registries negotiate the manifest by Accept, so the same tag
  can name a list for one client and a single manifest for another);
- when the upstream fails (no connection, 5xx, 429), a cached tag is served
  stale for up to ``stale_if_error`` seconds past its freshness;
- content addressed by digest never changes, but whether a client may read it
  does: a cached object is served to a principal (a set of upstream
  credentials, or none) only while the upstream's confirmation of that
  principal's access is younger than ``access_ttl``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from ._digest import Digest
from ._media import INDEX_MEDIA_TYPES, accepts


class TagAction(enum.Enum):
    """What to do for a manifest request by tag."""

    #: The cached answer is fresh and admissible: serve it.
    SERVE = "serve"
    #: A cached answer exists but is older than ``tag_ttl``: HEAD the upstream.
    REVALIDATE = "revalidate"
    #: Nothing usable is cached (or only for another media type): GET upstream.
    FETCH = "fetch"


@attrs.frozen
class CachedTag:
    """What the cache remembers of a tag: the digest and type it resolved to."""

    digest: Digest
    media_type: str
    #: When the upstream last confirmed this mapping (the caller's clock).
    validated_at: float
    #: Whether the request that resolved the tag admitted an index. A
    #: registry flattens a multi-platform tag to one platform's manifest for a
    #: client that takes no index; that answer is no answer for one that does.
    index_admitted: bool = True


def decide_tag(
    cached: CachedTag | None,
    *,
    accept_values: Sequence[str],
    now: float,
    tag_ttl: float,
) -> TagAction:
    """Decide how to answer a manifest request by tag."""
    if cached is None or not accepts(accept_values, cached.media_type):
        return TagAction.FETCH
    if not cached.index_admitted and admits_index(accept_values):
        return TagAction.FETCH
    if now - cached.validated_at < tag_ttl:
        return TagAction.SERVE
    return TagAction.REVALIDATE


def admits_index(accept_values: Sequence[str]) -> bool:
    """Whether a client with these Accept headers takes a multi-platform index."""
    return any(accepts(accept_values, media_type) for media_type in INDEX_MEDIA_TYPES)


def is_upstream_outage(status: int | None) -> bool:
    """Whether an upstream answer counts as an outage (stale content may be served).

    ``None`` stands for no answer at all (connection refused, timeout, TLS
    failure). A 429 is an outage from the client's point of view: the rate
    limit is regcache's, shared by every node behind it. Other 4xx answers are
    the upstream's verdict and are relayed, never papered over.
    """
    return status is None or status == 429 or status >= 500


def may_serve_stale(
    cached: CachedTag, *, now: float, tag_ttl: float, stale_if_error: float
) -> bool:
    """Whether a cached tag may still be served while the upstream is failing."""
    return now - cached.validated_at <= tag_ttl + stale_if_error


def access_is_fresh(confirmed_at: float | None, *, now: float, access_ttl: float) -> bool:
    """Whether an upstream confirmation of access is recent enough to rely on."""
    return confirmed_at is not None and 0 <= now - confirmed_at < access_ttl
