"""Metrics, health endpoints and JSON logs of a real regcache process.

regcache runs in front of the counting relay and the token-auth upstream;
``/metrics`` is read with the reference parser (``prometheus_client``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import PKI, REGISTRY, CountingRelay, Regcache, StandardImages, mirror_config

pytestmark = pytest.mark.e2e

#: How long the test waits for a background blob fetch to be committed.
COMMIT_TIMEOUT = 15.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(process: Regcache) -> Samples:
    """GET /metrics and parse it; samples by (name, labels)."""
    status, headers, body = process.request("GET", "/metrics")
    assert status == 200, body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in samples.items() if n == name and wanted <= series)


@pytest.fixture
def mirror(tmp_path: Path, relay: CountingRelay, pki: PKI) -> Iterator[Regcache]:
    with Regcache(tmp_path / "regcache", mirror_config(relay.url, pki)) as process:
        yield process
    assert process.exit_code == 0, process.log()[-4000:]


def test_pulls_move_the_counters(
    mirror: Regcache, relay: CountingRelay, images: StandardImages
) -> None:
    image = images.public
    layer = max(image.blobs, key=lambda blob: blob.size)
    manifest_target = f"/v2/{image.repository}/manifests/{image.tag}"
    blob_target = f"/v2/{image.repository}/blobs/{layer.digest}"
    start = scrape(mirror)

    status, _, manifest = mirror.request("GET", manifest_target, {"Accept": image.media_type})
    assert status == 200 and manifest == image.raw
    status, _, blob = mirror.request("GET", blob_target)
    assert status == 200 and "sha256:" + hashlib.sha256(blob).hexdigest() == layer.digest
    # The blob is committed in the background; the second pull must find it.
    deadline = time.monotonic() + COMMIT_TIMEOUT
    while (first := scrape(mirror)) and value(first, "regcache_store_bytes") < layer.size:
        assert time.monotonic() < deadline, "the blob was never committed"
        time.sleep(0.05)
    upstream_after_first = relay.counts()

    status, _, manifest = mirror.request("GET", manifest_target, {"Accept": image.media_type})
    assert status == 200 and manifest == image.raw
    status, _, blob = mirror.request("GET", blob_target)
    assert status == 200 and len(blob) == layer.size
    second = scrape(mirror)
    assert relay.counts() == upstream_after_first, "the second pull reached the upstream"

    def moved(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(start, name, **labels)

    # The first pull: a miss each, answered with upstream bytes.
    assert moved(first, "regcache_requests_total", route="manifest", status="200") == 1
    assert moved(first, "regcache_requests_total", route="blob", status="200") == 1
    assert moved(first, "regcache_cache_requests_total", outcome="miss") == 2
    assert moved(first, "regcache_cache_requests_total", outcome="hit") == 0
    assert moved(first, "regcache_bytes_served_total", source="upstream") == len(image.raw) + len(
        blob
    )
    assert moved(first, "regcache_bytes_served_total", source="cache") == 0
    # The second: a hit each, from the cache.
    assert moved(second, "regcache_requests_total", route="manifest", status="200") == 2
    assert moved(second, "regcache_requests_total", route="blob", status="200") == 2
    assert moved(second, "regcache_cache_requests_total", outcome="miss") == 2
    assert moved(second, "regcache_cache_requests_total", outcome="hit") == 2
    assert moved(second, "regcache_bytes_served_total", source="cache") == len(image.raw) + len(
        blob
    )
    assert moved(second, "regcache_request_seconds_count", route="blob") == 2
    # Upstream: the manifest and the blob, each answered 200, after a token.
    upstream_ok = value(second, "regcache_upstream_requests_total", registry=REGISTRY, status="200")
    assert upstream_ok >= 2
    assert total(second, "regcache_upstream_requests_total", registry=REGISTRY) == total(
        first, "regcache_upstream_requests_total", registry=REGISTRY
    )
    assert value(second, "regcache_upstream_request_seconds_count", registry=REGISTRY) == total(
        second, "regcache_upstream_requests_total", registry=REGISTRY
    )
    assert value(second, "regcache_token_fetches_total", registry=REGISTRY) >= 1
    # The layer, and whatever else the cache keeps as blobs (manifests too, maybe).
    assert layer.size <= value(second, "regcache_store_bytes") <= layer.size + len(image.raw)
    assert value(second, "regcache_evictions_total") == 0
    # Every scrape is a request too.
    assert value(second, "regcache_requests_total", route="other", status="200") >= 2


def test_health_endpoints_answer(mirror: Regcache) -> None:
    assert mirror.request("GET", "/healthz")[::2] == (200, b"ok")
    assert mirror.request("GET", "/readyz")[::2] == (200, b"ok")
    status, headers, _ = mirror.request("HEAD", "/healthz")
    assert status == 200
    assert headers["content-length"] == "2"


def test_json_logs_are_one_object_per_line(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    image = images.public
    with Regcache(
        tmp_path / "regcache", mirror_config(relay.url, pki), extra_args=("--log-format", "json")
    ) as process:
        target = f"/v2/{image.repository}/manifests/{image.tag}"
        status, _, _ = process.request(
            "GET", target, {"Accept": image.media_type, "Authorization": "Bearer s3cr3t-t0ken"}
        )
        assert status == 200
        assert process.request("GET", "/healthz")[0] == 200
    assert process.exit_code == 0
    lines = process.log().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses
    assert all(isinstance(entry, dict) for entry in entries)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    access = [entry for entry in entries if entry["logger"] == "regcache.access"]
    [manifest] = [entry for entry in access if entry["target"] == target]
    assert manifest["method"] == "GET"
    assert manifest["registry"] == REGISTRY
    assert manifest["status"] == 200
    assert manifest["bytes"] == len(image.raw)
    assert manifest["cache"] == "miss"
    assert manifest["client"] == "127.0.0.1"
    assert isinstance(manifest["ms"], float)
    assert any(entry["target"] == "/healthz" for entry in access)
    assert any("mirror listening on" in entry["message"] for entry in entries)
    assert "s3cr3t-t0ken" not in process.log()
