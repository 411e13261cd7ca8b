"""A throw-away PKI for the end-to-end tests.

One CA (made with trustme), one server certificate valid for every loopback
name the fixtures answer on, and one token-signing certificate whose key signs
the JWTs of the token issuer (ES256, RFC 7518 section 3.4). Everything is
written as PEM files into one directory so that external programs (the
registry, skopeo, curl) can read them.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Names the server certificate is valid for: every address and host name the
# fixtures listen on or map through the egress proxy.
SERVER_NAMES = (
    "localhost",
    "127.0.0.1",
    "127.0.0.2",
    "::1",
    "upstream.regcache.test",
    "cdn.regcache.test",
)

SIGNER_NAME = "token-signer.regcache.test"


@attrs.frozen
class PKI:
    """PEM files of the test CA, the server certificate and the token signer."""

    directory: Path
    ca: trustme.CA
    ca_pem: Path
    """The CA certificate: trust this to talk to any fixture over TLS."""
    server_cert_pem: Path
    """Server certificate chain (leaf first) for every name in SERVER_NAMES."""
    server_key_pem: Path
    signing_cert_pem: Path
    """Certificate of the token-signing key (the registry's rootcertbundle)."""
    signing_key_pem: Path
    cert_dir: Path
    """A directory holding only ``ca.crt``: a containers/image ``--cert-dir``."""

    @classmethod
    def create(cls, directory: Path) -> PKI:
        """Mint a fresh CA, server and signing certificate under directory."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="regcache tests")
        server = ca.issue_cert(*SERVER_NAMES, common_name="localhost")
        signer = ca.issue_cert(SIGNER_NAME, common_name=SIGNER_NAME)

        ca_pem = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_pem))
        server_cert_pem = directory / "server.pem"
        server_cert_pem.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server_key_pem = directory / "server.key"
        server.private_key_pem.write_to_path(str(server_key_pem))
        signing_cert_pem = directory / "signer.pem"
        signer.cert_chain_pems[0].write_to_path(str(signing_cert_pem))
        signing_key_pem = directory / "signer.key"
        signer.private_key_pem.write_to_path(str(signing_key_pem))
        cert_dir = directory / "certs.d"
        cert_dir.mkdir(exist_ok=True)
        ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
        return cls(
            directory=directory,
            ca=ca,
            ca_pem=ca_pem,
            server_cert_pem=server_cert_pem,
            server_key_pem=server_key_pem,
            signing_cert_pem=signing_cert_pem,
            signing_key_pem=signing_key_pem,
            cert_dir=cert_dir,
        )

    def server_ssl_context(self) -> ssl.SSLContext:
        """A server-side context presenting the server certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.server_cert_pem), str(self.server_key_pem))
        return context

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client-side context trusting only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_pem))

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The private key that signs tokens (P-256)."""
        key = serialization.load_pem_private_key(self.signing_key_pem.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the token-signing key is not an EC key")
        return key

    def signing_cert_der(self) -> bytes:
        """DER bytes of the signing certificate (the JWT ``x5c`` entry)."""
        cert = x509.load_pem_x509_certificate(self.signing_cert_pem.read_bytes())
        return cert.public_bytes(serialization.Encoding.DER)
