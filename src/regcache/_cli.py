"""The operator's command line: ``python -m regcache COMMAND``.

prefetch   pull images into the cache before they are needed
ls         cached repositories, tags, sizes and last use
stats      store size, hit ratio, bytes served from cache
gc         run eviction now (``--dry-run`` to only list)
rm         forget an image and free what nothing else uses
verify     re-hash every blob; quarantine those that do not match

Each command opens the same data directory as the server (it may be
running: the store and the index are safe to share between processes).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import trio

from . import __version__
from ._library import Mirror
from .config import Config
from .core import (
    BlobInfo,
    BlobStore,
    ConfigError,
    Digest,
    Platform,
    Reference,
    RegcacheError,
    parse_manifest,
)
from .proxy._main import build_config

log = logging.getLogger("regcache")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float) -> str:
    for limit, unit in ((120, "s"), (7200, "min"), (172800, "h")):
        if seconds < limit:
            divisor = {"s": 1, "min": 60, "h": 3600}[unit]
            return f"{seconds / divisor:.0f} {unit} ago"
    return f"{seconds / 86400:.0f} d ago"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of ``python -m regcache``."""
    parser = argparse.ArgumentParser(
        prog="python -m regcache",
        description="regcache's operator command line: pre-warm, inspect and tidy the cache.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration (default: $REGCACHE_CONFIG)"
    )
    parser.add_argument("--data-dir", help="the cache's data directory (default from the config)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="warning"
    )
    parser.add_argument("--version", action="version", version=f"regcache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prefetch = commands.add_parser("prefetch", help="pull images into the cache")
    prefetch.add_argument("images", nargs="*", metavar="IMAGE")
    prefetch.add_argument(
        "--from", dest="from_file", metavar="FILE", help="image list, one per line ('-': stdin)"
    )
    prefetch.add_argument(
        "--platform",
        help="comma-separated platforms to pull from indexes, e.g. linux/amd64 (default: all)",
    )
    commands.add_parser("ls", help="list cached repositories and tags")
    commands.add_parser("stats", help="size, hit ratio, bytes saved")
    gc = commands.add_parser("gc", help="evict down to the size limit now")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be evicted")
    rm = commands.add_parser("rm", help="forget an image; free blobs nothing else uses")
    rm.add_argument("image", metavar="IMAGE")
    commands.add_parser("verify", help="re-hash every blob; quarantine mismatches")
    # The proxy's flags, fixed, so build_config can be shared.
    parser.set_defaults(mirror_listen=None, proxy_listen=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m regcache``; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(message)s"
    )
    try:
        config = build_config(args, os.environ)
    except ConfigError as exc:
        print(f"regcache: configuration error: {exc}", file=sys.stderr)
        return 2
    command = {
        "prefetch": _prefetch,
        "ls": _ls,
        "stats": _stats,
        "gc": _gc,
        "rm": _rm,
        "verify": _verify,
    }[args.command]
    try:
        return trio.run(command, config, args)
    except RegcacheError as exc:
        print(f"regcache: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (| head): not an error of ours.
        sys.stderr.close()
        return 0


# -- prefetch -----------------------------------------------------------------


def _image_list(args: argparse.Namespace) -> list[str]:
    images = list(args.images)
    if args.from_file:
        if args.from_file == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = Path(args.from_file).read_text().splitlines()
        images += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return images


async def _prefetch(config: Config, args: argparse.Namespace) -> int:
    images = _image_list(args)
    if not images:
        print("regcache prefetch: no images given (arguments or --from FILE)", file=sys.stderr)
        return 2
    platforms = (
        [Platform.parse(text.strip()) for text in args.platform.split(",") if text.strip()]
        if args.platform
        else None
    )
    failed = 0
    total_bytes = 0
    async with Mirror(config) as mirror:
        for number, image in enumerate(images, 1):
            started = time.monotonic()
            print(f"[{number}/{len(images)}] {image} ...", flush=True)
            try:
                result = await mirror.pull(image, platforms=platforms)
            except RegcacheError as exc:
                failed += 1
                print(f"[{number}/{len(images)}] FAILED {image}: {exc}", flush=True)
                continue
            total_bytes += result.blob_bytes
            print(
                f"[{number}/{len(images)}] ok {result.reference} -> {result.digest}:"
                f" {len(result.manifests)} manifests, {len(result.blobs)} blobs,"
                f" {_size(result.blob_bytes)} in {time.monotonic() - started:.1f}s",
                flush=True,
            )
    print(f"{len(images) - failed} of {len(images)} images cached ({_size(total_bytes)})")
    return 1 if failed else 0


# -- inspection ---------------------------------------------------------------


def _manifest_blobs(mirror: Mirror, digest: Digest) -> set[Digest]:
    """The blobs (and child manifests) a cached manifest refers to."""
    try:
        with mirror.engine.store.open_read(digest) as reader:
            raw = reader.read()
    except RegcacheError:
        return set()
    media_type = mirror.engine.index.find_manifest_type(digest)
    try:
        manifest = parse_manifest(raw, media_type)
    except RegcacheError:
        return set()
    referenced = {descriptor.digest for descriptor in manifest.blobs()}
    for child in manifest.manifests:
        referenced.add(child.digest)
        referenced |= _manifest_blobs(mirror, child.digest)
    return referenced


async def _ls(config: Config, args: argparse.Namespace) -> int:
    now = time.time()
    async with Mirror(config) as mirror:
        index = mirror.engine.index
        usage = {digest: (size, used) for digest, size, used in index.all_blobs()}
        for registry, repository in index.repositories():
            digests: set[Digest] = set()
            for entry in index.manifests_of(registry, repository):
                digests.add(entry.digest)
                digests |= _manifest_blobs(mirror, entry.digest)
            size = sum(usage[d][0] for d in digests if d in usage)
            last = max((usage[d][1] for d in digests if d in usage), default=0.0)
            print(f"{registry}/{repository}  {_size(size)}  last used {_age(now - last)}")
            for tag, cached in index.tags_of(registry, repository):
                print(f"  {tag:<24} {cached.digest}  {cached.media_type}")
    return 0


async def _stats(config: Config, args: argparse.Namespace) -> int:
    async with Mirror(config) as mirror:
        index = mirror.engine.index
        blobs = index.all_blobs()
        total = sum(size for _, size, _ in blobs)
        counters = index.counters()
        repositories = sum(1 for _ in index.repositories())
    served = {
        key[len("requests_") :]: value
        for key, value in counters.items()
        if key.startswith("requests_")
    }
    answered = sum(served.values())
    from_cache = sum(served.get(outcome, 0) for outcome in ("hit", "stale", "revalidated"))
    ratio = f"{100 * from_cache / answered:.1f}%" if answered else "n/a"
    limit = config.cache.max_size
    share = 100 * total / limit
    print(f"store:          {_size(total)} of {_size(limit)} ({share:.1f}%), {len(blobs)} objects")
    print(f"repositories:   {repositories}")
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(served.items()))
    print(f"requests:       {answered} ({outcomes or 'none'})")
    print(f"hit ratio:      {ratio}")
    print(f"from cache:     {_size(counters.get('bytes_from_cache', 0))} (upstream bytes saved)")
    print(f"from upstream:  {_size(counters.get('bytes_from_upstream', 0))}")
    return 0


async def _gc(config: Config, args: argparse.Namespace) -> int:
    async with Mirror(config) as mirror:
        chosen = await mirror.engine.evict(dry_run=args.dry_run)
    verb = "would evict" if args.dry_run else "evicted"
    for digest, size in chosen:
        print(f"{verb} {digest} ({_size(size)})")
    print(f"{verb} {len(chosen)} objects, {_size(sum(size for _, size in chosen))}")
    return 0


async def _rm(config: Config, args: argparse.Namespace) -> int:
    reference = Reference.parse(args.image)
    async with Mirror(config) as mirror:
        engine = mirror.engine
        registry = engine.registry_map.lookup(reference.registry) or reference.registry
        index = engine.index
        if reference.digest is not None:
            removed = [reference.digest]
        else:
            tags = dict(index.tags_of(registry, reference.repository))
            cached = tags.get(reference.tag or "")
            if cached is None:
                print(f"regcache rm: {reference} is not cached", file=sys.stderr)
                return 1
            index.delete_repository_tag(registry, reference.repository, reference.tag)
            removed = [cached.digest]
        # What is still referenced after the removal stays: mark and sweep.
        still_tagged = {
            cached.digest
            for reg, repo in index.repositories()
            for _, cached in index.tags_of(reg, repo)
        }
        keep: set[Digest] = set()
        for digest in still_tagged:
            keep.add(digest)
            keep |= _manifest_blobs(mirror, digest)
        candidates: set[Digest] = set()
        for digest in removed:
            candidates.add(digest)
            candidates |= _manifest_blobs(mirror, digest)
        freed = 0
        for digest in sorted(candidates - keep, key=str):
            info = engine.store.stat(digest)
            await trio.to_thread.run_sync(engine.store.delete, digest)
            index.forget_blob(digest)
            freed += info.size if info else 0
        print(f"removed {reference}: {len(candidates - keep)} objects, {_size(freed)} freed")
    return 0


async def _verify(config: Config, args: argparse.Namespace) -> int:
    quarantine = Path(config.data_dir) / "quarantine"
    async with Mirror(config) as mirror:
        store, index = mirror.engine.store, mirror.engine.index
        bad = await trio.to_thread.run_sync(_rehash_all, list(store.iter_blobs()), store)
        for digest in bad:
            path = store.local_path(digest)
            if path is not None:
                quarantine.mkdir(exist_ok=True)
                Path(path).replace(quarantine / f"{digest.algorithm}-{digest.hex}")
            index.forget_blob(digest)
            print(f"quarantined {digest}: its content does not match its digest")
        count = sum(1 for _ in store.iter_blobs())
    print(
        f"verified {count + len(bad)} blobs: {len(bad)} quarantined in {quarantine}"
        if bad
        else f"verified {count} blobs: all match"
    )
    return 1 if bad else 0


def _rehash_all(infos: Iterable[BlobInfo], store: BlobStore) -> list[Digest]:
    bad = []
    for info in infos:
        hasher = hashlib.new(info.digest.algorithm)
        with store.open_read(info.digest) as reader:
            while chunk := reader.read(1024 * 1024):
                hasher.update(chunk)
        if hasher.hexdigest() != info.digest.hex:
            bad.append(info.digest)
    return bad
