"""The CA and leaf minting of the CONNECT proxy: extensions, validity, loading, caching."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from regcache.core._errors import ConfigError, LocalProtocolError, RegcacheError
from regcache.core._pki import (
    CLOCK_SKEW_ALLOWANCE,
    MAX_LEAF_LIFETIME,
    CertificateAuthority,
    LeafCache,
    LeafCertificate,
    LeafKeyType,
)

_E = TypeVar("_E", bound=x509.ExtensionType)

NOW = datetime(2027, 3, 1, 12, 30, 15, 999_999, tzinfo=UTC)
NOW_SECONDS = NOW.replace(microsecond=0)

# An operator's CA as `openssl req -x509 -newkey ec -pkeyopt
# ec_paramgen_curve:P-384` makes it: P-384, no KeyUsage, valid
# 2026-11-28 to 2126-11-04, and a key in traditional form after an
# EC PARAMETERS block, as `openssl ecparam -genkey` writes it.
OPERATOR_CA_PEM = b"""-----BEGIN CERTIFICATE-----
MIICATCCAYigAwIBAgIUPvKXlSDasOEUVxTtAug6J5t5jL8wCgYIKoZIzj0EAwIw
NzEVMBMGA1UECgwMRXhhbXBsZSBDb3JwMR4wHAYDVQQDDBVFeGFtcGxlIENvcnAg
UHJveHkgQ0EwIBcNMjYxMTI4MDA0MDAzWhgPMjEyNjExMDQwMDQwMDNaMDcxFTAT
BgNVBAoMDEV4YW1wbGUgQ29ycDEeMBwGA1UEAwwVRXhhbXBsZSBDb3JwIFByb3h5
IENBMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAELzIdtLKBK6MaF4xE45sEf+JeY2lG
1l0nQfzpBbR3/e+0OO72QOi5FSd2WL/vcUunVuFs47FI/Y9J4b2uWxP1habY8tJk
gq1KzFXjh8puqoV0MU9tF3QTlyzERr3sKekxo1MwUTAdBgNVHQ4EFgQUWoatyeyu
KjBSkHHc7yflA5R/UqswHwYDVR0jBBgwFoAUWoatyeyuKjBSkHHc7yflA5R/Uqsw
DwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNnADBkAjAi5lxGvEgUOXno7Pig
TozFBF25kbYJZ45hyP054MOJ0naU9bcRG4dA1Frp9+b+hQYCMBjjROqwv0/axijW
5Din51CeKuiII9MDLtKhMTHb9jsJnC2xzmpx85XkM/tQEcJeTQ==
-----END CERTIFICATE-----
"""
OPERATOR_KEY_PEM = b"""-----BEGIN EC PARAMETERS-----
BgUrgQQAIg==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDD2BXXl4YhqnVVlL7eLPsh/8UHJh6RIyrYokoQA2woTrH+W309oGMY0
z1SlCf+TPYqgBwYFK4EEACKhZANiAAQvMh20soEroxoXjETjmwR/4l5jaUbWXSdB
/OkFtHf977Q47vZA6LkVJ3ZYv+9xS6dW4WzjsUj9j0nhva5bE/WFptjy0mSCrUrM
VeOHym6qhXQxT20XdBOXLMRGvewp6TE=
-----END EC PRIVATE KEY-----
"""
OPERATOR_CA_FINGERPRINT = "f3cec7b884ed2d1f05185994c74767db894dfd05c849ff886f74f6f63d30eade"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(now=NOW)


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create(now=NOW, common_name="another CA")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    subject: str,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    ca: bool = True,
    key_usage: x509.KeyUsage | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
) -> x509.Certificate:
    """A certificate made the way other tools make them, for loading tests."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(*, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    password: bytes | None = None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.fixture(scope="module")
def rsa_root() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _issue(key, "Corp Root", key, "Corp Root"), key


def _leaf(leaf: LeafCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(leaf.cert_pem)


def _ext(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


def _san(leaf: LeafCertificate) -> list[str]:
    san = _leaf(leaf).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in san]


# --- the CA ---------------------------------------------------------------


def test_created_ca_is_a_p256_ca_for_leaves_only(ca: CertificateAuthority) -> None:
    cert = ca.certificate
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value == x509.KeyUsage(
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
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    assert aki.value.key_identifier == ski.value.digest
    cert.verify_directly_issued_by(cert)
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.subject.rfc4514_string() == "CN=regcache CA,O=regcache"
    assert ca.common_name == "regcache CA"
    assert cert.not_valid_before_utc == NOW_SECONDS - CLOCK_SKEW_ALLOWANCE
    assert ca.not_after == NOW_SECONDS + timedelta(days=3650)
    assert ca.fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    assert len(ca.fingerprint) == 64


def test_create_takes_names_and_lifetime() -> None:
    ca = CertificateAuthority.create(
        now=NOW, common_name="Lab CA", organization="Lab", valid_for=timedelta(days=30)
    )
    assert ca.certificate.subject.rfc4514_string() == "CN=Lab CA,O=Lab"
    assert ca.not_after == NOW_SECONDS + timedelta(days=30)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"valid_for": timedelta(0)},
        {"common_name": ""},
        {"common_name": "x" * 65},
        {"organization": ""},
    ],
)
def test_create_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        CertificateAuthority.create(now=NOW, **kwargs)  # type: ignore[arg-type]


def test_naive_time_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(LocalProtocolError, match="timezone"):
        CertificateAuthority.create(now=datetime(2027, 1, 1))
    with pytest.raises(LocalProtocolError, match="timezone"):
        ca.mint_leaf("example.com", now=datetime(2027, 1, 1))


def test_ca_pem_round_trip(ca: CertificateAuthority) -> None:
    assert ca.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert ca.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    loaded = CertificateAuthority.from_pem(ca.cert_pem, ca.key_pem, now=NOW)
    assert loaded == ca
    assert loaded.fingerprint == ca.fingerprint
    assert loaded.key_pem == ca.key_pem
    _leaf(loaded.mint_leaf("example.com", now=NOW)).verify_directly_issued_by(ca.certificate)


def test_encrypted_key_needs_its_password(ca: CertificateAuthority) -> None:
    encrypted = _key_pem(ca.private_key, b"s3cret")
    loaded = CertificateAuthority.from_pem(ca.cert_pem, encrypted, password=b"s3cret")
    assert loaded.fingerprint == ca.fingerprint
    for password in (b"wrong", None):
        with pytest.raises(ConfigError) as info:
            CertificateAuthority.from_pem(ca.cert_pem, encrypted, password=password)
        assert info.value.key_path == "proxy.ca_key"
    with pytest.raises(ConfigError) as info:
        CertificateAuthority.from_pem(ca.cert_pem, ca.key_pem, password=b"surplus")
    assert info.value.key_path == "proxy.ca_key"


def test_mismatched_key_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    with pytest.raises(ConfigError, match="does not match") as info:
        CertificateAuthority.from_pem(ca.cert_pem, other_ca.key_pem)
    assert info.value.key_path == "proxy.ca_key"


def test_constructor_checks_like_from_pem(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    with pytest.raises(ConfigError, match="does not match"):
        CertificateAuthority(ca.certificate, other_ca.private_key)


def test_non_ca_certificate_is_refused(ca: CertificateAuthority) -> None:
    leaf = ca.mint_leaf("example.com", now=NOW)
    with pytest.raises(ConfigError, match="BasicConstraints") as info:
        CertificateAuthority.from_pem(leaf.cert_pem, leaf.key_pem)
    assert info.value.key_path == "proxy.ca_cert"
    key = ec.generate_private_key(ec.SECP256R1())
    no_constraints = (
        x509.CertificateBuilder()
        .subject_name(_name("plain"))
        .issuer_name(_name("plain"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(ConfigError, match="BasicConstraints"):
        CertificateAuthority.from_pem(_pem(no_constraints), _key_pem(key))


def test_ca_without_key_cert_sign_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(key, "no sign", key, "no sign", key_usage=_key_usage(key_cert_sign=False))
    with pytest.raises(ConfigError, match="keyCertSign") as info:
        CertificateAuthority.from_pem(_pem(cert), _key_pem(key))
    assert info.value.key_path == "proxy.ca_cert"
    signing = _issue(key, "sign", key, "sign", key_usage=_key_usage(key_cert_sign=True))
    CertificateAuthority.from_pem(_pem(signing), _key_pem(key))


@pytest.mark.parametrize(
    ("cert_pem", "key_pem", "key_path"),
    [
        (b"", OPERATOR_KEY_PEM, "proxy.ca_cert"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"", "proxy.ca_cert"),
        (OPERATOR_CA_PEM, b"", "proxy.ca_key"),
        (OPERATOR_CA_PEM, OPERATOR_CA_PEM, "proxy.ca_key"),
        (
            OPERATOR_CA_PEM,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "proxy.ca_key",
        ),
    ],
)
def test_garbage_pem_is_refused(cert_pem: bytes, key_pem: bytes, key_path: str) -> None:
    with pytest.raises(ConfigError) as info:
        CertificateAuthority.from_pem(cert_pem, key_pem)
    assert info.value.key_path == key_path


def test_weak_or_unusual_ca_keys_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_cert = _issue(weak, "weak", weak, "weak")
    with pytest.raises(ConfigError, match="too weak"):
        CertificateAuthority.from_pem(_pem(weak_cert), _key_pem(weak))
    p224 = ec.generate_private_key(ec.SECP224R1())
    p224_cert = _issue(p224, "p224", p224, "p224")
    with pytest.raises(ConfigError, match="P-256"):
        CertificateAuthority.from_pem(_pem(p224_cert), _key_pem(p224))
    with pytest.raises(ConfigError, match="Ed25519") as info:
        CertificateAuthority.from_pem(
            OPERATOR_CA_PEM, _key_pem(ed25519.Ed25519PrivateKey.generate())
        )
    assert info.value.key_path == "proxy.ca_key"


def test_expired_or_future_ca_is_refused_when_now_is_given() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _pem(
        _issue(key, "window", key, "window", not_before=NOW, not_after=NOW + timedelta(days=10))
    )
    CertificateAuthority.from_pem(cert, _key_pem(key))
    CertificateAuthority.from_pem(cert, _key_pem(key), now=NOW + timedelta(days=9))
    with pytest.raises(ConfigError, match="expired") as info:
        CertificateAuthority.from_pem(cert, _key_pem(key), now=NOW + timedelta(days=10))
    assert info.value.key_path == "proxy.ca_cert"
    with pytest.raises(ConfigError, match="not valid before"):
        CertificateAuthority.from_pem(cert, _key_pem(key), now=NOW - timedelta(seconds=1))


def test_operator_openssl_ca_loads_and_signs_with_sha384() -> None:
    ca = CertificateAuthority.from_pem(OPERATOR_CA_PEM, OPERATOR_KEY_PEM, now=NOW)
    assert ca.fingerprint == OPERATOR_CA_FINGERPRINT
    assert ca.common_name == "Example Corp Proxy CA"
    assert ca.not_after == datetime(2126, 11, 4, 0, 40, 3, tzinfo=UTC)
    leaf = _leaf(ca.mint_leaf("registry.example.com", now=NOW))
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA384)
    assert leaf.issuer == ca.certificate.subject
    leaf.verify_directly_issued_by(ca.certificate)
    aki = _ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == bytes.fromhex("5a86adc9ecae2a30529071dcef27e503947f52ab")


def test_operator_rsa_ca_mints_leaves(
    rsa_root: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    cert, key = rsa_root
    ca = CertificateAuthority.from_pem(_pem(cert), _key_pem(key), now=NOW)
    assert ca.common_name == "Corp Root"
    leaf = _leaf(ca.mint_leaf("docker.io", now=NOW))
    assert leaf.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSA_WITH_SHA256
    leaf.verify_directly_issued_by(cert)
    # The root has no SubjectKeyIdentifier: the leaf's AKI is computed the
    # way verifiers compute the missing one.
    aki = _ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest


def test_intermediate_ca_sends_its_chain(
    rsa_root: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    root, root_key = rsa_root
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = _issue(key, "Corp Proxy CA", root_key, "Corp Root")
    ca = CertificateAuthority.from_pem(_pem(intermediate) + _pem(root), _key_pem(key))
    assert ca.chain == (root,)
    assert ca.cert_pem == _pem(intermediate)
    leaf = ca.mint_leaf("quay.io", now=NOW)
    assert x509.load_pem_x509_certificates(leaf.chain_pem) == [
        _leaf(leaf),
        intermediate,
        root,
    ]
    unrelated = _issue(key, "Unrelated", key, "Unrelated")
    with pytest.raises(ConfigError, match="did not issue") as info:
        CertificateAuthority.from_pem(_pem(intermediate) + _pem(unrelated), _key_pem(key))
    assert info.value.key_path == "proxy.ca_cert"


def test_secrets_stay_out_of_reprs(ca: CertificateAuthority) -> None:
    leaf = ca.mint_leaf("example.com", now=NOW)
    assert b"PRIVATE" not in repr(leaf).encode()
    assert "PRIVATE" not in repr(ca)
    assert "example.com" in repr(leaf)


# --- leaves ---------------------------------------------------------------


def test_dns_leaf_has_the_extensions_go_and_openssl_need(ca: CertificateAuthority) -> None:
    leaf = ca.mint_leaf("registry-1.docker.io", now=NOW)
    cert = _leaf(leaf)
    assert leaf.host == "registry-1.docker.io"
    san = _ext(cert, x509.SubjectAlternativeName)
    assert not san.critical  # the subject is not empty
    assert san.value == x509.SubjectAlternativeName([x509.DNSName("registry-1.docker.io")])
    assert cert.subject == _name("registry-1.docker.io")
    assert cert.issuer == ca.certificate.subject
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=False, path_length=None)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca.certificate, x509.SubjectKeyIdentifier).value.digest
    assert {ext.oid for ext in cert.extensions} == {
        x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
        x509.oid.ExtensionOID.KEY_USAGE,
        x509.oid.ExtensionOID.EXTENDED_KEY_USAGE,
        x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
    cert.verify_directly_issued_by(ca.certificate)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_leaf_key_and_chain(ca: CertificateAuthority) -> None:
    leaf = ca.mint_leaf("ghcr.io", now=NOW)
    cert = _leaf(leaf)
    assert leaf.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(leaf.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    assert leaf.chain_pem == leaf.cert_pem + ca.cert_pem
    assert leaf.ca_fingerprint == ca.fingerprint
    assert cert.serial_number != _leaf(ca.mint_leaf("ghcr.io", now=NOW)).serial_number


def test_rsa_leaf(ca: CertificateAuthority) -> None:
    leaf = ca.mint_leaf("old-client.example", now=NOW, key_type=LeafKeyType.RSA_2048)
    cert = _leaf(leaf)
    key = serialization.load_pem_private_key(leaf.key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert key.public_key() == cert.public_key()
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.1.2.3", "10.1.2.3"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8:0:0::1]", "2001:db8::1"),
        ("2001:0db8::0001", "2001:db8::1"),
    ],
)
def test_ip_leaf_has_an_ip_san(ca: CertificateAuthority, host: str, address: str) -> None:
    leaf = ca.mint_leaf(host, now=NOW)
    assert leaf.host == address
    san = _ext(_leaf(leaf), x509.SubjectAlternativeName).value
    assert list(san) == [x509.IPAddress(ipaddress.ip_address(address))]
    assert san.get_values_for_type(x509.DNSName) == []


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("localhost", "localhost"),
        ("Registry-1.Docker.IO", "registry-1.docker.io"),
        ("quay.io.", "quay.io"),
        ("my_registry", "my_registry"),
        ("xn--caf-dma.example", "xn--caf-dma.example"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
        ("1.2.3.example", "1.2.3.example"),
    ],
)
def test_dns_names_are_normalised(ca: CertificateAuthority, host: str, name: str) -> None:
    leaf = ca.mint_leaf(host, now=NOW)
    assert leaf.host == name
    assert _san(leaf) == [name]


def test_long_name_goes_in_the_san_only(ca: CertificateAuthority) -> None:
    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(host) == 253
    cert = _leaf(ca.mint_leaf(host, now=NOW))
    assert cert.subject == x509.Name([])
    san = _ext(cert, x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280 4.2.1.6, empty subject
    assert san.value.get_values_for_type(x509.DNSName) == [host]
    at_limit = "x" * 30 + "." + "y" * 33
    assert _leaf(ca.mint_leaf(at_limit, now=NOW)).subject == _name(at_limit)
    assert _leaf(ca.mint_leaf(at_limit + "z", now=NOW)).subject == x509.Name([])


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "..",
        "a..b",
        ".example.com",
        "-a.example",
        "a-.example",
        "a b.example",
        "a\x00b",
        "example.com\n",
        "*.example.com",
        "*",
        "example.com:443",
        "[::1]:443",
        "[127.0.0.1]",
        "[localhost]",
        "[]",
        "127.1",
        "10.0.0.256",
        "010.000.000.001",
        "12345",
        "fe80::1%eth0",
        "[fe80::1%25eth0]",
        "café.example",
        "https://example.com",
        "a" * 64 + ".example",
        ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62]),
        "x" * 10_000,
    ],
)
def test_garbage_hosts_are_refused(ca: CertificateAuthority, host: str) -> None:
    with pytest.raises(LocalProtocolError):
        ca.mint_leaf(host, now=NOW)


def test_leaf_validity_defaults_to_90_days(ca: CertificateAuthority) -> None:
    leaf = ca.mint_leaf("example.com", now=NOW)
    cert = _leaf(leaf)
    assert leaf.not_before == cert.not_valid_before_utc == NOW_SECONDS - timedelta(hours=1)
    assert leaf.not_after == cert.not_valid_after_utc == NOW_SECONDS + timedelta(days=90)


def test_leaf_validity_is_capped_at_397_days(ca: CertificateAuthority) -> None:
    assert timedelta(days=397) == MAX_LEAF_LIFETIME
    leaf = ca.mint_leaf("example.com", now=NOW, valid_for=timedelta(days=1000))
    assert leaf.not_after == _leaf(leaf).not_valid_after_utc == NOW_SECONDS + MAX_LEAF_LIFETIME
    huge = ca.mint_leaf("example.com", now=NOW, valid_for=timedelta.max)
    assert huge.not_after == NOW_SECONDS + MAX_LEAF_LIFETIME
    short = ca.mint_leaf("example.com", now=NOW, valid_for=timedelta(hours=2))
    assert short.not_after == NOW_SECONDS + timedelta(hours=2)


def test_leaf_never_outlives_its_ca() -> None:
    ca = CertificateAuthority.create(now=NOW, valid_for=timedelta(days=10))
    leaf = ca.mint_leaf("example.com", now=NOW + timedelta(days=3))
    assert leaf.not_after == ca.not_after == _leaf(leaf).not_valid_after_utc
    with pytest.raises(ConfigError, match="expired") as info:
        ca.mint_leaf("example.com", now=NOW + timedelta(days=10))
    assert info.value.key_path == "proxy.ca_cert"


def test_leaf_lifetime_must_be_positive(ca: CertificateAuthority) -> None:
    with pytest.raises(LocalProtocolError):
        ca.mint_leaf("example.com", now=NOW, valid_for=timedelta(0))


def _expected_host(text: str) -> str | None:
    """An independent statement of the normalisation rules, for the oracle."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else None
    try:
        if inner is not None:
            return str(ipaddress.IPv6Address(inner))
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    return None if inner is not None else text.lower().removesuffix(".")


_labels = st.from_regex(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,20}[A-Za-z0-9_])?", fullmatch=True)
_dns_names = st.builds(
    lambda labels, tld, dot: ".".join([*labels, tld]) + dot,
    st.lists(_labels, max_size=4),
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9-]{0,8}[a-zA-Z]", fullmatch=True),
    st.sampled_from(["", "."]),
)
_ip_literals = st.ip_addresses().flatmap(
    lambda address: st.sampled_from(
        [str(address), address.exploded.upper()]
        + ([f"[{address}]"] if address.version == 6 else [])
    )
)
_host_like = st.text(alphabet="abcXYZ019-_.:[]%* \x00é", max_size=30)


@given(host=st.one_of(st.text(), _host_like, _dns_names, _ip_literals))
def test_any_host_is_refused_cleanly_or_lands_in_the_san(
    ca: CertificateAuthority, host: str
) -> None:
    try:
        leaf = ca.mint_leaf(host, now=NOW)
    except RegcacheError:
        return
    assert leaf.host == _expected_host(host)
    assert _san(leaf) == [leaf.host]


@given(host=st.one_of(_dns_names, _ip_literals))
def test_valid_hosts_are_accepted(ca: CertificateAuthority, host: str) -> None:
    assert ca.mint_leaf(host, now=NOW).host == _expected_host(host)


# --- the leaf cache -------------------------------------------------------


def test_cache_hit_shares_one_leaf_between_spellings(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca)
    leaf = cache.get("Registry.Example", NOW)
    assert leaf.host == "registry.example"
    assert cache.get("registry.example.", NOW + timedelta(days=1)) is leaf
    assert cache.get("[::1]", NOW) is cache.get("::1", NOW)
    assert len(cache) == 2
    assert "REGISTRY.example" in cache
    assert "other.example" not in cache
    assert "not a host" not in cache


def test_cache_renews_before_expiry(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca)
    leaf = cache.get("example.com", NOW)
    # 90 days of life, renewed once fewer than 30 remain.
    assert cache.get("example.com", NOW + timedelta(days=59, hours=23)) is leaf
    renewed = cache.get("example.com", NOW + timedelta(days=60))
    assert renewed is not leaf
    assert renewed.not_after == NOW_SECONDS + timedelta(days=150)
    assert cache.get("example.com", NOW + timedelta(days=61)) is renewed
    # A clock set back before the leaf's start gets a leaf valid now.
    back = NOW + timedelta(days=60) - CLOCK_SKEW_ALLOWANCE - timedelta(seconds=1)
    rewound = cache.get("example.com", back)
    assert rewound is not renewed
    assert rewound.not_before <= back


def test_cache_renews_short_leaves_at_two_thirds(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca, leaf_lifetime=timedelta(hours=5))
    leaf = cache.get("example.com", NOW)
    # 6 hours from not_before to not_after: renewed with 2 left.
    assert cache.get("example.com", NOW + timedelta(hours=2, minutes=59)) is leaf
    assert cache.get("example.com", NOW + timedelta(hours=3)) is not leaf


def test_cache_is_bounded_and_evicts_the_least_recently_used(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca, max_leaves=3)
    first = cache.get("a.example", NOW)
    cache.get("b.example", NOW)
    cache.get("c.example", NOW)
    assert cache.get("a.example", NOW) is first  # now the most recent
    cache.get("d.example", NOW)
    assert len(cache) == 3
    assert "b.example" not in cache
    assert cache.get("a.example", NOW) is first
    for index in range(50):
        cache.get(f"flood{index}.example", NOW)
    assert len(cache) == 3
    assert "a.example" not in cache


def test_cache_drops_leaves_when_the_ca_changes(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    cache = LeafCache(ca)
    leaf = cache.get("example.com", NOW)
    same = CertificateAuthority.from_pem(ca.cert_pem, ca.key_pem)
    cache.replace_authority(same)
    assert cache.authority is same
    assert cache.get("example.com", NOW) is leaf
    cache.replace_authority(other_ca)
    assert len(cache) == 0
    fresh = cache.get("example.com", NOW)
    assert fresh.ca_fingerprint == other_ca.fingerprint
    _leaf(fresh).verify_directly_issued_by(other_ca.certificate)


def test_cache_refuses_garbage_and_bad_bounds(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca)
    with pytest.raises(LocalProtocolError):
        cache.get("*.example.com", NOW)
    assert len(cache) == 0
    with pytest.raises(LocalProtocolError):
        LeafCache(ca, max_leaves=0)


def test_cache_passes_key_type_on(ca: CertificateAuthority) -> None:
    cache = LeafCache(ca, key_type=LeafKeyType.RSA_2048)
    key = serialization.load_pem_private_key(cache.get("example.com", NOW).key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
