"""The CONNECT front end: skopeo with HTTPS_PROXY pointed at regcache.

skopeo is Go: it sends a host name (never a loopback literal) through the
proxy without resolving it, so the test registry is addressed by the name
upstream.regcache.test, which only regcache knows how to reach (its url is
the counting relay on 127.0.0.1). Only regcache's own CA is given to skopeo.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from regcache.core import hash_password
from support import (
    PKI,
    CountingRelay,
    Regcache,
    Skopeo,
    StandardImages,
    UpstreamRegistry,
    mirror_config,
    sha256,
)

pytestmark = pytest.mark.e2e

NAME = "upstream.regcache.test"


def connect_config(upstream_url: str, pki: PKI, *, tag_ttl: str = "5m", extra: str = "") -> str:
    return mirror_config(upstream_url, pki, tag_ttl=tag_ttl, extra=extra)


def proxied_skopeo(tmp_path: Path, regcache: Regcache, *, trust: bool = True) -> Skopeo:
    return Skopeo(
        tmp_path / "skopeo",
        ca_file=regcache.ca_file if trust else None,
        env={"HTTPS_PROXY": regcache.proxy_url, "HTTP_PROXY": regcache.proxy_url},
    )


def copy(skopeo: Skopeo, reference: str, dest: Path, **kwargs: object) -> set[str]:
    result = skopeo.copy(f"docker://{NAME}/{reference}", dest, **kwargs)  # type: ignore[arg-type]
    assert result.ok, result.text
    return set(skopeo.verify_dir(dest).blob_digests)


def raw_connect(port: int, target: str, headers: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 2000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.fixture
def regcache(tmp_path: Path, relay: CountingRelay, pki: PKI) -> Regcache:
    process = Regcache(tmp_path / "rc", connect_config(relay.url, pki), proxy=True).start()
    yield process
    assert process.stop() == 0, process.log()[-3000:]


def test_skopeo_pulls_through_the_connect_proxy_sharing_the_mirror_cache(
    regcache: Regcache, relay: CountingRelay, images: StandardImages, tmp_path: Path
) -> None:
    image = images.public
    layer = image.blobs[-1]
    # First through the mirror port...
    status, _, body = regcache.request("GET", f"/v2/{image.repository}/blobs/{layer.digest}")
    assert status == 200 and sha256(body) == layer.digest
    # ...then through the CONNECT proxy: every byte checked, one fetch in all.
    skopeo = proxied_skopeo(tmp_path, regcache)
    assert copy(skopeo, image.reference, tmp_path / "pulled") == {b.digest for b in image.blobs}
    assert skopeo.verify_dir(tmp_path / "pulled").manifest_digest == image.digest
    served = [
        request
        for request in relay.requests(side="registry")
        if request.method == "GET" and request.path.endswith(layer.digest) and request.status == 200
    ]
    assert len(served) == 1
    log = regcache.log()
    assert f"intercepting {NAME}" in log


def test_private_images_need_the_clients_credentials(
    regcache: Regcache,
    images: StandardImages,
    tmp_path: Path,
    upstream_credentials: tuple[str, str],
) -> None:
    skopeo = proxied_skopeo(tmp_path, regcache)
    private = images.private
    anonymous = skopeo.copy(f"docker://{NAME}/{private.reference}", tmp_path / "anon")
    assert not anonymous.ok
    assert "unauthorized" in anonymous.stderr.lower() or "denied" in anonymous.stderr.lower()
    seen = copy(skopeo, private.reference, tmp_path / "creds", creds=upstream_credentials)
    assert seen == {blob.digest for blob in private.blobs}
    assert upstream_credentials[1] not in regcache.log()


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(
    regcache: Regcache, images: StandardImages, tmp_path: Path
) -> None:
    skopeo = proxied_skopeo(tmp_path, regcache, trust=False)
    result = skopeo.copy(f"docker://{NAME}/{images.public.reference}", tmp_path / "x")
    assert not result.ok
    assert "x509" in result.stderr or "certificate" in result.stderr
    assert "does the client trust regcache's CA" in regcache.log()


def test_ca_certificate_and_refusals_with_curl(regcache: Regcache, tmp_path: Path) -> None:
    ca = subprocess.run(
        ["curl", "-fsS", f"http://127.0.0.1:{regcache.proxy_port}/ca.crt"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    assert ca == regcache.ca_file.read_bytes()
    mode = stat.S_IMODE((regcache.data_dir / "ca" / "ca.key").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((regcache.data_dir / "ca").stat().st_mode) == 0o700
    # Not a registry, not a tunnel: refused, with the way to allow it.
    refused = subprocess.run(
        ["curl", "-sS", "-p", "-x", regcache.proxy_url, "https://example.test/"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0
    answer = raw_connect(regcache.proxy_port, "example.test:443")
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"[proxy] tunnel" in answer
    assert b"HTTP/1.1 400" in raw_connect(regcache.proxy_port, "no-port-here")


def test_configured_tunnel_and_proxy_authentication(
    tmp_path: Path, relay: CountingRelay, upstream: UpstreamRegistry, pki: PKI
) -> None:
    encoded = hash_password("proxy-pass", salt=os.urandom(16), iterations=1000)
    extra = f'[proxy]\ntunnel = ["127.0.0.1"]\nusers = {{ node = "{encoded}" }}\n'
    with Regcache(tmp_path / "rc", connect_config(relay.url, pki, extra=extra), proxy=True) as rc:
        target = f"https://127.0.0.1:{upstream.port}/v2/"
        base = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(pki.ca_pem)]
        no_auth = subprocess.run(
            [*base, "-x", rc.proxy_url, target],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert no_auth.returncode != 0  # 407 to the CONNECT
        assert b"407" in raw_connect(rc.proxy_port, f"127.0.0.1:{upstream.port}")
        tunnelled = subprocess.run(
            [*base, "-x", rc.proxy_url, "--proxy-user", "node:proxy-pass", target],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # The upstream's own certificate (trusted via the test CA) and its own
        # 401: the bytes went through untouched.
        assert tunnelled.stdout == "401", tunnelled.stderr
        assert "tunnel to 127.0.0.1" in rc.log()
        assert "proxy-pass" not in rc.log()


def test_upstream_outage_keeps_cached_public_images_pulling(
    tmp_path: Path,
    upstream: UpstreamRegistry,
    pki: PKI,
    images: StandardImages,
    upstream_credentials: tuple[str, str],
) -> None:
    config = connect_config(upstream.url, pki, tag_ttl="1s")
    with Regcache(tmp_path / "rc", config, proxy=True) as rc:
        skopeo = proxied_skopeo(tmp_path, rc)
        public, private = images.public, images.private
        copy(skopeo, public.reference, tmp_path / "warm-public")
        copy(skopeo, private.reference, tmp_path / "warm-private", creds=upstream_credentials)
        upstream.stop()
        time.sleep(1.2)  # the tags are due for revalidation, which fails
        by_tag = copy(skopeo, public.reference, tmp_path / "tag")
        assert by_tag == {blob.digest for blob in public.blobs}
        by_digest = copy(skopeo, public.digest_reference, tmp_path / "digest")
        assert by_digest == {blob.digest for blob in public.blobs}
        anonymous = skopeo.copy(f"docker://{NAME}/{private.reference}", tmp_path / "anon")
        assert not anonymous.ok
        # The credentials whose access was confirmed before the outage still work.
        copy(skopeo, private.reference, tmp_path / "private", creds=upstream_credentials)
        assert "stale" in rc.log()


def test_setup_script_trusts_the_ca_and_configures_runtimes_idempotently(
    regcache: Regcache, tmp_path: Path
) -> None:
    script = subprocess.run(
        [
            "curl",
            "-fsS",
            "-H",
            "Host: regcache.example:3128",
            f"http://127.0.0.1:{regcache.proxy_port}/setup.sh",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert 'PROXY_URL="http://regcache.example:3128"' in script
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=ubuntu\nID_LIKE=debian\n")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "calls.log"
    for command in ("update-ca-certificates", "update-ca-trust"):
        (fake_bin / command).write_text(f'#!/bin/sh\necho "{command} $*" >> "{calls}"\n')
    # A fake systemctl: docker and containerd exist; everything else is logged.
    (fake_bin / "systemctl").write_text(
        f'#!/bin/sh\nif [ "$1" = cat ]; then exit 0; fi\necho "systemctl $*" >> "{calls}"\n'
    )
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "REGCACHE_SETUP_ROOT": str(root)}

    def run() -> str:
        result = subprocess.run(
            ["sh", "-s"],
            input=script,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    first = run()
    assert "wrote /usr/local/share/ca-certificates/regcache.crt" in first
    installed = root / "usr/local/share/ca-certificates/regcache.crt"
    assert installed.read_text().strip() == regcache.ca_file.read_text().strip()
    drop_in = root / "etc/systemd/system/docker.service.d/regcache-proxy.conf"
    text = drop_in.read_text()
    assert "HTTPS_PROXY=http://regcache.example:3128" in text
    assert "NO_PROXY=" in text and ".svc" in text and "regcache.example" in text
    assert (root / "etc/systemd/system/containerd.service.d/regcache-proxy.conf").exists()
    first_calls = calls.read_text().splitlines()
    assert "update-ca-certificates " in first_calls
    assert "systemctl restart docker.service" in first_calls
    assert "systemctl restart containerd.service" in first_calls
    second = run()
    assert "nothing changed; nothing restarted" in second
    assert calls.read_text().splitlines() == first_calls


def test_setup_script_refuses_a_hostile_host_header(regcache: Regcache) -> None:
    script = subprocess.run(
        [
            "curl",
            "-fsS",
            "-H",
            'Host: x";rm -rf /;"',
            f"http://127.0.0.1:{regcache.proxy_port}/setup.sh",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert "rm -rf" not in script
    assert json.dumps("x") not in script


def test_the_upstream_token_realm_is_answered_for_the_registry(
    regcache: Regcache, images: StandardImages, tmp_path: Path, token_issuer: object
) -> None:
    """A client that goes to the upstream's realm (learned before it used the
    proxy) gets a login from regcache that the registry host accepts."""
    skopeo = proxied_skopeo(tmp_path, regcache)
    copy(skopeo, images.public.reference, tmp_path / "warm")  # regcache learns the realm
    realm = token_issuer.realm  # type: ignore[attr-defined]
    upstream_logins = token_issuer.request_count  # type: ignore[attr-defined]
    base = ["curl", "-sS", "--cacert", str(regcache.ca_file), "-x", regcache.proxy_url]
    token_answer = subprocess.run(
        [*base, f"{realm}?service=x&scope=repository:public/app:pull"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    token = json.loads(token_answer.stdout)["token"]
    ping = subprocess.run(
        [
            *base,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            f"Authorization: Bearer {token}",
            f"https://{NAME}/v2/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ping.stdout == "200", ping.stderr
    # The login never reached the upstream's realm.
    assert token_issuer.request_count == upstream_logins  # type: ignore[attr-defined]
