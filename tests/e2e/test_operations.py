"""Operating the cache: the size limit, crashes, a full disk, and the operator CLI."""

from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path

import pytest

from support import (
    PKI,
    REGISTRY,
    CountingRelay,
    ImageFactory,
    Regcache,
    StandardImages,
    mirror_config,
    open_blob,
    sha256,
    slow_upstream,
    store_path,
    wait_for,
)

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def cli(regcache: Regcache, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``python -m regcache --config <its config> args``."""
    return subprocess.run(
        [sys.executable, "-m", "regcache", "--config", str(regcache.config_path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=regcache.env,
        check=False,
    )


def pull_image(mirror: Regcache, repository: str, image: object) -> None:
    """Fetch a pushed image's manifest and blobs through the mirror, checking each."""
    status, _, body = mirror.request(
        "GET",
        f"/v2/{repository}/manifests/{image.tag}",
        {"Accept": image.media_type},  # type: ignore[attr-defined]
    )
    assert status == 200 and sha256(body) == image.digest  # type: ignore[attr-defined]
    for blob in image.blobs:  # type: ignore[attr-defined]
        status, _, body = mirror.request("GET", f"/v2/{repository}/blobs/{blob.digest}")
        assert status == 200 and sha256(body) == blob.digest


def stored_bytes(mirror: Regcache) -> int:
    blobs = mirror.data_dir / "store" / "blobs"
    return sum(path.stat().st_size for path in blobs.rglob("*") if path.is_file())


def test_size_limit_evicts_least_recently_used_and_spares_a_blob_being_sent(
    tmp_path: Path, relay: CountingRelay, pki: PKI, image_factory: ImageFactory
) -> None:
    images = {
        name: image_factory.image(f"public/evict-{name}", layer_sizes=(MiB,), seed=f"evict-{name}")
        for name in ("a", "b", "c", "d")
    }
    big = image_factory.image("public/evict-big", layer_sizes=(6 * MiB,), seed="evict-big")
    config = mirror_config(relay.url, pki, extra="")
    config = config.replace("[cache]", '[cache]\nmax_size = "3MiB"', 1)
    with Regcache(tmp_path / "rc", config) as mirror:
        layer = {name: image.blobs[-1].digest for name, image in images.items()}

        def cached(name: str) -> bool:
            return store_path(mirror.data_dir, layer[name]).exists()

        pull_image(mirror, "public/evict-a", images["a"])
        pull_image(mirror, "public/evict-b", images["b"])
        pull_image(mirror, "public/evict-a", images["a"])  # a is used again: b is older now
        pull_image(mirror, "public/evict-c", images["c"])
        assert wait_for(lambda: not cached("b")), "the least recently used image stayed"
        assert cached("a") and cached("c")
        assert stored_bytes(mirror) <= 3 * MiB
        pull_image(mirror, "public/evict-a", images["a"])  # now c is the oldest
        pull_image(mirror, "public/evict-d", images["d"])
        assert wait_for(lambda: not cached("c"))
        assert cached("a") and cached("d")
        assert stored_bytes(mirror) <= 3 * MiB
        assert "evicted" in mirror.log()

        # A big blob larger than the limit: cached, then sent slowly while
        # eviction removes it; the client still gets every byte.
        big_layer = big.blobs[-1]
        target = f"/v2/public/evict-big/blobs/{big_layer.digest}"
        connection, response = open_blob(mirror.port, target)
        first = response.read(64 * 1024)
        assert wait_for(lambda: not store_path(mirror.data_dir, big_layer.digest).exists())
        rest = response.read()
        connection.close()
        assert sha256(first + rest) == big_layer.digest


def test_kill_9_mid_cold_pull_leaves_nothing_partial(
    tmp_path: Path, relay: CountingRelay, pki: PKI, image_factory: ImageFactory
) -> None:
    image = image_factory.image("public/crash", layer_sizes=(100 * MiB,), seed="crash")
    layer = image.blobs[-1]
    target = f"/v2/public/crash/blobs/{layer.digest}"
    slow_upstream(relay, layer.digest, seconds=1.5)
    mirror = Regcache(tmp_path / "rc", mirror_config(relay.url, pki)).start()
    try:
        connection, response = open_blob(mirror.port, target)
        response.read(256 * 1024)
    finally:
        mirror.kill()
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        response.read()
    connection.close()
    assert not store_path(mirror.data_dir, layer.digest).exists()
    relay.latency = 0
    with Regcache(tmp_path / "rc", mirror_config(relay.url, pki)) as again:
        assert "partial download" in again.log()
        assert not any((again.data_dir / "store" / "tmp").iterdir())
        status, _, body = again.request("GET", target)
        assert status == 200 and sha256(body) == layer.digest


def test_a_full_disk_fails_the_write_cleanly_and_service_continues(
    tmp_path: Path,
    relay: CountingRelay,
    pki: PKI,
    images: StandardImages,
    image_factory: ImageFactory,
) -> None:
    big = image_factory.image("public/toobig", layer_sizes=(40 * MiB,), seed="toobig")
    small = images.public
    mirror = Regcache(
        tmp_path / "rc", mirror_config(relay.url, pki), file_size_limit=24 * MiB
    ).start()
    try:
        pull_image(mirror, small.repository, small)  # cached before the disk "fills"
        layer = big.blobs[-1]
        connection, response = open_blob(mirror.port, f"/v2/public/toobig/blobs/{layer.digest}")
        if response.status == 200:
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                response.read()
        connection.close()
        assert not store_path(mirror.data_dir, layer.digest).exists()
        assert not any((mirror.data_dir / "store" / "tmp").iterdir())
        assert "too large" in mirror.log() or "disk is full" in mirror.log()
        # Still serving what it has, and still fetching what fits.
        pull_image(mirror, small.repository, small)
        pull_image(mirror, images.public_docker.repository, images.public_docker)
    finally:
        assert mirror.stop() == 0


def test_prefetch_from_a_list_with_a_multiarch_and_a_missing_image(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    mirror = Regcache(tmp_path / "rc", mirror_config(relay.url, pki))
    multi = images.multiarch
    listing = f"# what kubeadm config images list prints\n{REGISTRY}/{multi.reference}\n"
    listing += f"{REGISTRY}/public/missing:v9\n"
    done = cli(mirror, "prefetch", "--from", "-", stdin=listing)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout and "1 of 2 images cached" in done.stdout
    for blob in multi.blobs:
        assert store_path(mirror.data_dir, blob.digest).exists()
    one = cli(
        mirror,
        "prefetch",
        "--platform",
        "linux/arm64",
        f"{REGISTRY}/{images.multiarch_docker.reference}",
    )
    assert one.returncode == 0, one.stdout + one.stderr
    arm64 = next(
        m for m in images.multiarch_docker.manifests if m.manifest.platform.architecture == "arm64"
    )
    amd64 = next(
        m for m in images.multiarch_docker.manifests if m.manifest.platform.architecture == "amd64"
    )
    assert all(store_path(mirror.data_dir, b.digest).exists() for b in arm64.blobs)
    assert not store_path(mirror.data_dir, amd64.blobs[-1].digest).exists()
    # The server then answers from what prefetch cached: no upstream blob GET.
    with mirror:
        before = relay.blob_requests(multi.blobs[-1].digest)
        status, _, body = mirror.request(
            "GET", f"/v2/{multi.repository}/blobs/{multi.blobs[-1].digest}"
        )
        assert status == 200 and sha256(body) == multi.blobs[-1].digest
        assert relay.blob_requests(multi.blobs[-1].digest) == before


def test_ls_stats_gc_rm_and_verify(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    config = mirror_config(relay.url, pki)
    with Regcache(tmp_path / "rc", config) as mirror:
        pull_image(mirror, images.public.repository, images.public)
        # Committed (made durable) after the answers: then the pull hits.
        assert wait_for(
            lambda: all(store_path(mirror.data_dir, b.digest).exists() for b in images.public.blobs)
        )
        pull_image(mirror, images.public.repository, images.public)
        pull_image(mirror, images.public_docker.repository, images.public_docker)
    listing = cli(mirror, "ls")
    assert listing.returncode == 0, listing.stderr
    assert f"{REGISTRY}/{images.public.repository}" in listing.stdout
    assert images.public.digest in listing.stdout
    stats = cli(mirror, "stats")
    assert stats.returncode == 0 and "hit ratio" in stats.stdout
    # Each image is a manifest, a config and two layers: the second pull of
    # the first image hit four times, the two first pulls missed eight times.
    assert "hit 4, miss 8" in stats.stdout
    dry = cli(mirror, "gc", "--dry-run")
    assert dry.returncode == 0 and "would evict 0 objects" in dry.stdout
    removed = cli(mirror, "rm", f"{REGISTRY}/{images.public_docker.reference}")
    assert removed.returncode == 0, removed.stderr
    assert not store_path(mirror.data_dir, images.public_docker.blobs[-1].digest).exists()
    assert store_path(mirror.data_dir, images.public.blobs[-1].digest).exists()
    # Damage a blob behind regcache's back: verify finds and quarantines it.
    damaged = store_path(mirror.data_dir, images.public.blobs[-1].digest)
    data = bytearray(damaged.read_bytes())
    data[0] ^= 0xFF
    damaged.chmod(0o644)
    damaged.write_bytes(bytes(data))
    checked = cli(mirror, "verify")
    assert checked.returncode == 1 and "quarantined" in checked.stdout
    assert not damaged.exists()
    assert (mirror.data_dir / "quarantine").is_dir()
    # The next pull fetches it again, whole.
    with mirror:
        pull_image(mirror, images.public.repository, images.public)


def test_after_a_crash_the_index_is_reconciled_with_the_store(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    image = images.public
    mirror = Regcache(tmp_path / "rc", mirror_config(relay.url, pki)).start()
    try:
        pull_image(mirror, image.repository, image)
        mirror.stop()
        before = mirror.log().count("did not end cleanly")  # a new index is reconciled once
        # A clean stop: the next start trusts the index and walks nothing.
        mirror.start()
        pull_image(mirror, image.repository, image)
        assert mirror.log().count("did not end cleanly") == before
        mirror.kill()
        store_path(mirror.data_dir, image.blobs[-1].digest).unlink()
        mirror.start()
        assert wait_for(lambda: "1 missing entries dropped" in mirror.log()), mirror.log()[-2000:]
        pull_image(mirror, image.repository, image)
        mirror.stop()
        # Having recovered and stopped cleanly, the next start is clean again.
        after_crash = mirror.log().count("did not end cleanly")
        mirror.start()
        pull_image(mirror, image.repository, image)
        assert mirror.log().count("did not end cleanly") == after_crash
    finally:
        mirror.stop()
