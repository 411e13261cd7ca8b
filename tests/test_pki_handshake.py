"""Minted leaves in real TLS handshakes: Python's ssl, openssl verify, curl and skopeo (Go).

Each client trusts only the CA under test, so a handshake that succeeds
proves the chain, the extensions and the SAN are what that verifier wants;
each success is paired with a failure (another CA, another host) so the
check cannot pass by accident.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from regcache.core._pki import CertificateAuthority, LeafCertificate, LeafKeyType

# Bounds on everything that waits, so a broken handshake fails the test
# instead of hanging it.
IO_TIMEOUT = 5.0
CLIENT_TIMEOUT = 30.0
MAX_REQUEST_HEAD = 64 * 1024

BODY = b"hello from regcache\n"
MANIFEST_UNKNOWN = (
    b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown to registry"}]}'
)


def _now() -> datetime:
    # Real verifiers read the real clock.
    return datetime.now(UTC)


# --- CAs as operators bring them ------------------------------------------


@attrs.frozen
class TrustSetup:
    """A CA that signs leaves, and the certificate a client must trust for it."""

    authority: CertificateAuthority
    trust_pem: bytes
    #: Certificates between the leaf's issuer and the trusted one, for tools
    #: that do not read the chain from the server (openssl verify).
    untrusted_pem: bytes = b""


def _key_usage_ca() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_cert(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    subject: str,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
) -> x509.Certificate:
    now = _now()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    issuer_ski = (
        ski
        if issuer is None
        else issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage_ca(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def setups() -> dict[str, TrustSetup]:
    ours = CertificateAuthority.create(now=_now())
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _ca_cert(root_key, "Example Corp Root", root_key, None)
    rsa_ca = CertificateAuthority.from_pem(_pem(root), _key_pem(root_key), now=_now())
    proxy_key = ec.generate_private_key(ec.SECP384R1())
    intermediate = _ca_cert(proxy_key, "Example Corp Proxy CA", root_key, root)
    intermediate_ca = CertificateAuthority.from_pem(
        _pem(intermediate) + _pem(root), _key_pem(proxy_key), now=_now()
    )
    return {
        "regcache": TrustSetup(ours, ours.cert_pem),
        "operator-rsa": TrustSetup(rsa_ca, _pem(root)),
        "operator-intermediate": TrustSetup(intermediate_ca, _pem(root), _pem(intermediate)),
    }


@pytest.fixture(scope="module")
def stranger() -> CertificateAuthority:
    """A CA no client under test trusts."""
    return CertificateAuthority.create(now=_now(), common_name="regcache CA")


SETUPS = ["regcache", "operator-rsa", "operator-intermediate"]


# --- a tiny HTTPS server ----------------------------------------------------


@attrs.define
class TLSServer:
    port: int
    requests: list[bytes] = attrs.Factory(list)
    errors: list[BaseException] = attrs.Factory(list)


def _answer(request_head: bytes) -> bytes:
    target = request_head.split(b" ", 2)[1] if request_head.count(b" ") >= 2 else b""
    if target == b"/":
        status, content_type, body = b"200 OK", b"text/plain", BODY
    elif target == b"/v2/":
        status, content_type, body = b"200 OK", b"application/json", b"{}"
    else:
        status, content_type, body = b"404 Not Found", b"application/json", MANIFEST_UNKNOWN
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Docker-Distribution-API-Version: registry/2.0\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )


def _serve_one(context: ssl.SSLContext, conn: socket.socket, server: TLSServer) -> None:
    conn.settimeout(IO_TIMEOUT)
    with context.wrap_socket(conn, server_side=True) as tls:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
            chunk = tls.recv(4096)
            if not chunk:
                return
            head += chunk
        server.requests.append(head.split(b"\r\n", 1)[0])
        tls.sendall(_answer(head))


@contextmanager
def tls_server(leaf: LeafCertificate, tmp_path: Path) -> Iterator[TLSServer]:
    """Serve HTTPS on 127.0.0.1 with ``leaf`` until the block ends."""
    chain_file = tmp_path / f"server-{leaf.host.replace(':', '_')}.pem"
    key_file = chain_file.with_suffix(".key")
    chain_file.write_bytes(leaf.chain_pem)
    key_file.write_bytes(leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    server = TLSServer(port=listener.getsockname()[1])
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                _serve_one(context, conn, server)
            except (OSError, ssl.SSLError) as exc:
                server.errors.append(exc)
            finally:
                conn.close()

    thread = threading.Thread(target=run, name=f"tls-server-{server.port}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(IO_TIMEOUT * 2)
        listener.close()
        assert not thread.is_alive(), "the test server did not stop"


# --- Python's ssl -------------------------------------------------------------


def _python_get(
    port: int,
    server_hostname: str,
    trust_pem: bytes,
    *,
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> bytes:
    context = ssl.create_default_context(cadata=trust_pem.decode())
    # As strict as Python 3.13's default, whatever Python runs the tests.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.maximum_version = maximum_version
    with (
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock,
        context.wrap_socket(sock, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: " + server_hostname.encode() + b"\r\n\r\n")
        response = b""
        while chunk := tls.recv(4096):
            response += chunk
    return response


@pytest.mark.parametrize("setup_name", SETUPS)
@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_python_ssl_accepts_the_leaf(
    setups: dict[str, TrustSetup],
    stranger: CertificateAuthority,
    tmp_path: Path,
    setup_name: str,
    tls_version: ssl.TLSVersion,
) -> None:
    setup = setups[setup_name]
    leaf = setup.authority.mint_leaf("localhost", now=_now())
    with tls_server(leaf, tmp_path) as server:
        response = _python_get(
            server.port, "localhost", setup.trust_pem, maximum_version=tls_version
        )
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert response.endswith(BODY)
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            _python_get(server.port, "localhost", stranger.cert_pem, maximum_version=tls_version)
        # Unable to get the local issuer, or (the chain ends in a root)
        # a self-signed certificate in the chain: either way, not trusted.
        assert info.value.verify_code in {19, 20}
    assert server.requests == [b"GET / HTTP/1.1"]


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_python_ssl_checks_the_ip_san(
    setups: dict[str, TrustSetup], tmp_path: Path, host: str
) -> None:
    trust_pem = setups["regcache"].trust_pem
    authority = setups["regcache"].authority
    ip_leaf = authority.mint_leaf(host, now=_now())
    with tls_server(ip_leaf, tmp_path) as server:
        assert _python_get(server.port, ip_leaf.host, trust_pem).endswith(BODY)
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            _python_get(server.port, "10.0.0.1", trust_pem)
    name_leaf = authority.mint_leaf("localhost", now=_now())
    with (
        tls_server(name_leaf, tmp_path) as server,
        pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"),
    ):
        _python_get(server.port, ip_leaf.host, trust_pem)


def test_python_ssl_checks_the_dns_san(setups: dict[str, TrustSetup], tmp_path: Path) -> None:
    setup = setups["regcache"]
    leaf = setup.authority.mint_leaf("registry.example", now=_now())
    with tls_server(leaf, tmp_path) as server:
        assert _python_get(server.port, "REGISTRY.example", setup.trust_pem).endswith(BODY)
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            _python_get(server.port, "other.example", setup.trust_pem)


def test_python_ssl_accepts_an_rsa_leaf(setups: dict[str, TrustSetup], tmp_path: Path) -> None:
    setup = setups["regcache"]
    leaf = setup.authority.mint_leaf("localhost", now=_now(), key_type=LeafKeyType.RSA_2048)
    with tls_server(leaf, tmp_path) as server:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            response = _python_get(
                server.port, "localhost", setup.trust_pem, maximum_version=version
            )
            assert response.endswith(BODY)


# --- openssl verify -----------------------------------------------------------


def _openssl_verify(
    tmp_path: Path, setup: TrustSetup, leaf: LeafCertificate, *extra: str
) -> subprocess.CompletedProcess[str]:
    ca_file = tmp_path / "trusted.pem"
    ca_file.write_bytes(setup.trust_pem)
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(leaf.cert_pem)
    untrusted: list[str] = []
    if setup.untrusted_pem:
        untrusted_file = tmp_path / "untrusted.pem"
        untrusted_file.write_bytes(setup.untrusted_pem)
        untrusted = ["-untrusted", str(untrusted_file)]
    return subprocess.run(
        [
            "openssl", "verify", "-x509_strict", "-purpose", "sslserver",
            "-no-CApath", "-no-CAstore", "-CAfile", str(ca_file),
            *untrusted, *extra, str(leaf_file),
        ],
        capture_output=True,
        text=True,
        env=_client_env(tmp_path),
        timeout=CLIENT_TIMEOUT,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("setup_name", SETUPS)
def test_openssl_verifies_the_leaf_strictly(
    setups: dict[str, TrustSetup], stranger: CertificateAuthority, tmp_path: Path, setup_name: str
) -> None:
    setup = setups[setup_name]
    leaf = setup.authority.mint_leaf("registry.example", now=_now())
    result = _openssl_verify(tmp_path, setup, leaf, "-verify_hostname", "registry.example")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    wrong = _openssl_verify(tmp_path, TrustSetup(stranger, stranger.cert_pem), leaf)
    assert wrong.returncode != 0
    assert "unable to get local issuer certificate" in wrong.stdout + wrong.stderr
    other_host = _openssl_verify(tmp_path, setup, leaf, "-verify_hostname", "other.example")
    assert other_host.returncode != 0
    assert "hostname mismatch" in other_host.stdout + other_host.stderr


def test_openssl_verifies_ip_and_long_name_leaves(
    setups: dict[str, TrustSetup], tmp_path: Path
) -> None:
    setup = setups["regcache"]
    ip_leaf = setup.authority.mint_leaf("[::1]", now=_now())
    result = _openssl_verify(tmp_path, setup, ip_leaf, "-verify_ip", "::1")
    assert result.returncode == 0, result.stdout + result.stderr
    mismatch = _openssl_verify(tmp_path, setup, ip_leaf, "-verify_ip", "::2")
    assert "IP address mismatch" in mismatch.stdout + mismatch.stderr
    # An empty subject with a critical SAN, which -x509_strict insists on.
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    long_leaf = setup.authority.mint_leaf(long_name, now=_now())
    result = _openssl_verify(tmp_path, setup, long_leaf, "-verify_hostname", long_name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_openssl_sees_the_clamped_lifetime(setups: dict[str, TrustSetup], tmp_path: Path) -> None:
    setup = setups["regcache"]
    now = _now()
    leaf = setup.authority.mint_leaf("localhost", now=now, valid_for=timedelta(hours=2))
    inside = _openssl_verify(
        tmp_path, setup, leaf, "-attime", str(int((now + timedelta(hours=1)).timestamp()))
    )
    assert inside.returncode == 0, inside.stdout + inside.stderr
    after = _openssl_verify(
        tmp_path, setup, leaf, "-attime", str(int((now + timedelta(hours=3)).timestamp()))
    )
    assert "certificate has expired" in after.stdout + after.stderr


# --- curl ---------------------------------------------------------------------


def _client_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no proxies, no CA overrides and a private home."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C"}


def _curl(tmp_path: Path, url: str, port: int, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "curl", "-q", "--silent", "--show-error", "--noproxy", "*",
            "--max-time", str(CLIENT_TIMEOUT),
            "--resolve", f"localhost:{port}:127.0.0.1",
            *extra, url,
        ],
        capture_output=True,
        env=_client_env(tmp_path),
        timeout=CLIENT_TIMEOUT + 5,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("setup_name", SETUPS)
def test_curl_accepts_the_leaf(
    setups: dict[str, TrustSetup], stranger: CertificateAuthority, tmp_path: Path, setup_name: str
) -> None:
    setup = setups[setup_name]
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(setup.trust_pem)
    wrong_file = tmp_path / "wrong.pem"
    wrong_file.write_bytes(stranger.cert_pem)
    leaf = setup.authority.mint_leaf("localhost", now=_now())
    with tls_server(leaf, tmp_path) as server:
        url = f"https://localhost:{server.port}/"
        good = _curl(tmp_path, url, server.port, "--cacert", str(ca_file))
        assert good.returncode == 0, good.stderr
        assert good.stdout == BODY
        # The system bundle does not hold our CA, and neither does the stranger's.
        system = _curl(tmp_path, url, server.port)
        assert system.returncode == 60, system.stderr
        wrong = _curl(tmp_path, url, server.port, "--cacert", str(wrong_file))
        assert wrong.returncode == 60, wrong.stderr
    assert server.requests == [b"GET / HTTP/1.1"]


def test_curl_checks_the_ip_san(setups: dict[str, TrustSetup], tmp_path: Path) -> None:
    setup = setups["regcache"]
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(setup.trust_pem)
    leaf = setup.authority.mint_leaf("127.0.0.1", now=_now())
    with tls_server(leaf, tmp_path) as server:
        good = _curl(
            tmp_path, f"https://127.0.0.1:{server.port}/", server.port, "--cacert", str(ca_file)
        )
        assert good.returncode == 0, good.stderr
        assert good.stdout == BODY
        by_name = _curl(
            tmp_path, f"https://localhost:{server.port}/", server.port, "--cacert", str(ca_file)
        )
        assert by_name.returncode == 60, by_name.stderr


# --- skopeo: Go's crypto/x509 ---------------------------------------------------


def _skopeo_inspect(
    tmp_path: Path, trust_pem: bytes, reference: str
) -> subprocess.CompletedProcess[str]:
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "ca.crt").write_bytes(trust_pem)
    registries_conf = tmp_path / "registries.conf"
    registries_conf.write_text("")
    env = _client_env(tmp_path)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "home")
    env["CONTAINERS_REGISTRIES_CONF"] = str(registries_conf)
    env["REGISTRY_AUTH_FILE"] = str(tmp_path / "auth.json")
    return subprocess.run(
        [
            "skopeo", "--registries-conf", str(registries_conf),
            "--command-timeout", f"{int(CLIENT_TIMEOUT)}s",
            "inspect", "--tls-verify=true", "--cert-dir", str(cert_dir),
            "--no-creds", "--retry-times", "0", "--no-tags",
            f"docker://{reference}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLIENT_TIMEOUT + 5,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("setup_name", SETUPS)
def test_go_accepts_the_leaf(
    setups: dict[str, TrustSetup], stranger: CertificateAuthority, tmp_path: Path, setup_name: str
) -> None:
    setup = setups[setup_name]
    leaf = setup.authority.mint_leaf("localhost", now=_now())
    with tls_server(leaf, tmp_path) as server:
        reference = f"localhost:{server.port}/library/x:latest"
        good = _skopeo_inspect(tmp_path, setup.trust_pem, reference)
        # TLS held; the request reached HTTP and failed there, as it should.
        assert good.returncode != 0
        assert "x509" not in good.stderr, good.stderr
        assert "manifest unknown" in good.stderr, good.stderr
        assert b"GET /v2/library/x/manifests/latest HTTP/1.1" in server.requests
        wrong = _skopeo_inspect(tmp_path / "wrong", stranger.cert_pem, reference)
        assert wrong.returncode != 0
        assert "x509: certificate signed by unknown authority" in wrong.stderr, wrong.stderr


def test_go_checks_the_ip_san(setups: dict[str, TrustSetup], tmp_path: Path) -> None:
    setup = setups["regcache"]
    ip_leaf = setup.authority.mint_leaf("127.0.0.1", now=_now())
    with tls_server(ip_leaf, tmp_path) as server:
        good = _skopeo_inspect(tmp_path, setup.trust_pem, f"127.0.0.1:{server.port}/x:latest")
        assert "x509" not in good.stderr, good.stderr
        assert "manifest unknown" in good.stderr, good.stderr
    name_leaf = setup.authority.mint_leaf("localhost", now=_now())
    with tls_server(name_leaf, tmp_path) as server:
        by_ip = _skopeo_inspect(tmp_path, setup.trust_pem, f"127.0.0.1:{server.port}/x:latest")
        assert "x509: cannot validate certificate for 127.0.0.1" in by_ip.stderr, by_ip.stderr
