"""Cache policy decisions: tag freshness, revalidation, stale-if-error, access."""

import pytest

from regcache.core import Digest
from regcache.core._policy import (
    CachedTag,
    TagAction,
    access_is_fresh,
    decide_tag,
    is_upstream_outage,
    may_serve_stale,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DIGEST = Digest.of_bytes(b"manifest")
INDEX_TAG = CachedTag(DIGEST, OCI_INDEX, validated_at=1000.0)
ACCEPT_ALL = [f"{OCI_MANIFEST}, {OCI_INDEX}"]


def test_uncached_tag_is_fetched() -> None:
    assert decide_tag(None, accept_values=ACCEPT_ALL, now=0, tag_ttl=300) is TagAction.FETCH


def test_fresh_tag_is_served_and_stale_one_revalidated() -> None:
    assert decide_tag(INDEX_TAG, accept_values=ACCEPT_ALL, now=1299, tag_ttl=300) is TagAction.SERVE
    assert (
        decide_tag(INDEX_TAG, accept_values=ACCEPT_ALL, now=1300, tag_ttl=300)
        is TagAction.REVALIDATE
    )


def test_cached_type_the_client_does_not_accept_is_fetched() -> None:
    # An index cached for one client is no answer for a client that only
    # takes single-platform manifests: the upstream negotiates per Accept.
    decision = decide_tag(INDEX_TAG, accept_values=[OCI_MANIFEST], now=1001, tag_ttl=300)
    assert decision is TagAction.FETCH


@pytest.mark.parametrize(
    ("status", "outage"),
    [
        (None, True),
        (500, True),
        (502, True),
        (503, True),
        (429, True),
        (200, False),
        (401, False),
        (403, False),
        (404, False),
    ],
)
def test_outage_statuses(status: int | None, outage: bool) -> None:
    assert is_upstream_outage(status) is outage


def test_stale_window_counts_after_freshness() -> None:
    assert may_serve_stale(INDEX_TAG, now=1000 + 300 + 86400, tag_ttl=300, stale_if_error=86400)
    assert not may_serve_stale(INDEX_TAG, now=1000 + 300 + 86401, tag_ttl=300, stale_if_error=86400)


def test_access_confirmation_expires() -> None:
    assert not access_is_fresh(None, now=10, access_ttl=600)
    assert access_is_fresh(10, now=609, access_ttl=600)
    assert not access_is_fresh(10, now=610, access_ttl=600)
    # A confirmation from the future (clock stepped back) is not trusted.
    assert not access_is_fresh(700, now=10, access_ttl=600)


def test_a_flattened_answer_is_not_reused_for_a_client_that_takes_an_index() -> None:
    # The first client took only single manifests, so the upstream answered
    # the amd64 manifest of a multi-platform tag; an arm64 client that takes
    # the index must not get that manifest from the cache.
    flattened = CachedTag(DIGEST, OCI_MANIFEST, validated_at=1000.0, index_admitted=False)
    assert decide_tag(flattened, accept_values=ACCEPT_ALL, now=1001, tag_ttl=300) is TagAction.FETCH
    assert (
        decide_tag(flattened, accept_values=[OCI_MANIFEST], now=1001, tag_ttl=300)
        is TagAction.SERVE
    )
