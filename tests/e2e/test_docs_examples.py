"""The client configurations the docs show, used as a new user would use them.

The blocks marked ``<!-- tested: ... -->`` in docs/mirror.md are read from the
page, their example names replaced by the test's, and driven: skopeo (which
reads registries.conf like cri-o and podman) pulls through them; containerd
cannot run here, so its hosts.toml is followed by hand exactly as containerd
does (the host URL from the file, ``/v2/...`` with ``?ns=<registry>``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from support import (
    PKI,
    REGISTRY,
    CountingRelay,
    Regcache,
    Skopeo,
    StandardImages,
    mirror_config,
    sha256,
)

pytestmark = pytest.mark.e2e

MIRROR_PAGE = Path(__file__).parents[2] / "docs" / "mirror.md"


def docs_block(name: str) -> str:
    """The fenced block that follows ``<!-- tested: name -->`` in docs/mirror.md."""
    text = MIRROR_PAGE.read_text()
    found = re.search(rf"<!-- tested: {re.escape(name)} -->\n```\w*\n(.*?)```", text, re.S)
    assert found, f"docs/mirror.md has no tested {name} block"
    return found.group(1)


@pytest.fixture
def mirror(tmp_path: Path, relay: CountingRelay, pki: PKI) -> Regcache:
    process = Regcache(tmp_path / "rc", mirror_config(relay.url, pki)).start()
    yield process
    assert process.stop() == 0


def test_registries_conf_from_the_docs_pulls_through_the_mirror(
    mirror: Regcache, skopeo: Skopeo, images: StandardImages, tmp_path: Path
) -> None:
    block = docs_block("registries.conf")
    assert "regcache.example:5000" in block and '"docker.io"' in block
    conf = block.replace("regcache.example:5000", mirror.netloc).replace(
        '"docker.io"', f'"{REGISTRY}"'
    )
    tomllib.loads(conf)
    skopeo.set_registries_conf('short-name-mode = "disabled"\n' + conf)
    image = images.public
    result = skopeo.copy(f"docker://{REGISTRY}/{image.reference}", tmp_path / "pulled")
    assert result.ok, result.text
    assert skopeo.verify_dir(tmp_path / "pulled").manifest_digest == image.digest
    assert f"GET /v2/{image.repository}/manifests/{image.tag}" in mirror.log()


def test_hosts_toml_from_the_docs_is_what_containerd_needs(
    mirror: Regcache, images: StandardImages
) -> None:
    hosts = tomllib.loads(docs_block("hosts.toml"))
    (host_url,) = hosts["host"]
    assert host_url == "http://regcache.example:5000"
    assert set(hosts["host"][host_url]["capabilities"]) == {"pull", "resolve"}
    # containerd: resolve (HEAD by tag), then fetch by digest, each with ?ns=.
    image = images.public
    base = host_url.replace("http://regcache.example:5000", "")
    accept = {"Accept": image.media_type}
    ns = f"ns={REGISTRY}"
    status, headers, _ = mirror.request(
        "HEAD", f"{base}/v2/{image.repository}/manifests/{image.tag}?{ns}", accept
    )
    assert status == 200 and headers["docker-content-digest"] == image.digest
    status, _, body = mirror.request(
        "GET", f"{base}/v2/{image.repository}/manifests/{image.digest}?{ns}", accept
    )
    assert status == 200 and sha256(body) == image.digest
    for blob in image.blobs:
        status, _, body = mirror.request(
            "GET", f"{base}/v2/{image.repository}/blobs/{blob.digest}?{ns}"
        )
        assert status == 200 and sha256(body) == blob.digest
