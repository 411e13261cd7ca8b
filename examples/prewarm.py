"""Pre-warm the cache with a list of images before the nodes ask for them.

Run: ``REGCACHE_CONFIG=regcache.toml python prewarm.py`` with the images in
PREWARM_IMAGES (space separated; default: a small public one). Uses the
configuration and data directory the mirror uses.
"""

from __future__ import annotations

import os

import trio
from _config import config_from_environment

from regcache import Mirror
from regcache.core import Platform


async def main() -> None:
    images = os.environ.get("PREWARM_IMAGES", "docker.io/library/busybox:latest").split()
    wanted = os.environ.get("PREWARM_PLATFORMS", "")
    platforms = [Platform.parse(p) for p in wanted.split()] or None
    async with Mirror(config_from_environment()) as mirror:
        for image in images:
            result = await mirror.pull(image, platforms=platforms)
            print(f"{image} {result.digest} {len(result.blobs)} blobs {result.blob_bytes} bytes")


if __name__ == "__main__":
    trio.run(main)
