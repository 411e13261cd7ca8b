"""regcache as a library: Mirror built from a Config, pulling into the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import regcache
from regcache.config import load_config
from regcache.core import LocalProtocolError, Platform
from regcache.proxy import Request
from support import PKI, REGISTRY, CountingRelay, StandardImages, mirror_config

pytestmark = pytest.mark.e2e


async def test_mirror_pulls_one_platform_and_serves_it(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    text = f'data_dir = "{tmp_path / "data"}"\n' + mirror_config(relay.url, pki)
    config = load_config(text, {})
    index = images.multiarch
    arm64 = next(m for m in index.manifests if m.manifest.platform.architecture == "arm64")
    amd64 = next(m for m in index.manifests if m.manifest.platform.architecture == "amd64")
    mirror = regcache.Mirror(config)
    with pytest.raises(LocalProtocolError):
        _ = mirror.engine
    async with mirror:
        result = await mirror.pull(
            f"{REGISTRY}/{index.repository}:{index.tag}", platforms=[Platform.parse("linux/arm64")]
        )
        assert str(result.digest) == index.digest
        assert {str(d) for d in result.manifests} == {index.digest, arm64.digest}
        assert {str(d) for d in result.blobs} == {b.digest for b in arm64.blobs}
        assert result.blob_bytes == sum(b.size for b in arm64.blobs)
        # Served from the cache through the same handler the mirror uses.
        layer = arm64.blobs[-1]
        reply = await mirror.handle(
            Request("GET", f"/v2/{index.repository}/blobs/{layer.digest}", (), "test")
        )
        assert reply.status == 200 and reply.cache == "hit"
    fetched = {
        r.path.rsplit("/", 1)[-1] for r in relay.requests(side="registry") if "/blobs/" in r.path
    }
    assert not fetched & {b.digest for b in amd64.blobs if b not in arm64.blobs}
    for digest in result.blobs:
        path = tmp_path / "data" / "store" / "blobs" / "sha256" / digest.hex[:2] / digest.hex
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == str(digest)
