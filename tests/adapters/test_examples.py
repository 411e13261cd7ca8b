"""The examples run: the CA minter, the pre-warming job and the gunicorn setup."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from adapter_hosts import ROOT, Host, server_env
from cryptography import x509

from support import PKI, REGISTRY, CountingRelay, StandardImages, free_port, mirror_config

pytestmark = pytest.mark.e2e

EXAMPLES = ROOT / "examples"


def run_example(script: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def write_config(directory: Path, relay: CountingRelay, pki: PKI) -> Path:
    path = directory / "regcache.toml"
    path.write_text(f'data_dir = "{directory / "data"}"\n' + mirror_config(relay.url, pki))
    return path


def test_mint_ca_writes_a_ca_and_a_leaf_it_signed(tmp_path: Path) -> None:
    env = server_env(tmp_path / "unused.toml", MINT_DIR=str(tmp_path / "pki"), MINT_HOST="r.test")
    run_example("mint_ca.py", env, tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.crt").read_bytes())
    chain = x509.load_pem_x509_certificates((tmp_path / "pki" / "server.crt").read_bytes())
    leaf = chain[0]
    leaf.verify_directly_issued_by(ca)
    assert chain[1] == ca
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["r.test"]
    assert leaf.not_valid_before_utc <= datetime.now(UTC) <= leaf.not_valid_after_utc
    assert b"PRIVATE KEY" in (tmp_path / "pki" / "server.key").read_bytes()
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o077 == 0


def test_prewarm_caches_an_image_then_served_without_upstream(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    image = images.public_docker
    config = write_config(tmp_path, relay, pki)
    env = server_env(config, PREWARM_IMAGES=f"{REGISTRY}/{image.reference}")
    output = run_example("prewarm.py", env, tmp_path)
    assert image.digest in output
    for blob in image.blobs:
        hex_digest = blob.digest.removeprefix("sha256:")
        path = tmp_path / "data" / "store" / "blobs" / "sha256" / hex_digest[:2] / hex_digest
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == blob.digest
        assert relay.blob_requests(blob.digest) == 1


def test_gunicorn_config_serves_and_stops_cleanly(
    tmp_path: Path, relay: CountingRelay, pki: PKI, images: StandardImages
) -> None:
    config = write_config(tmp_path, relay, pki)
    port = free_port()
    env = server_env(config, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_THREADS="4")
    argv = [sys.executable, "-m", "gunicorn", "-c", str(EXAMPLES / "gunicorn.conf.py")]
    with Host(tmp_path, [*argv, "wsgi_app:app"], env, port) as host:
        status, _, _ = host.request("GET", "/v2/")
        assert status == 200
        layer = images.public.blobs[-1]
        status, _, body = host.request(
            "GET", f"/v2/{images.public.repository}/blobs/{layer.digest}"
        )
        assert status == 200 and hashlib.sha256(body).hexdigest() == layer.digest[7:]
    assert host.exit_code == 0, host.log()
