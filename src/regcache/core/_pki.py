"""The CA and the per-host leaf certificates of the CONNECT proxy.

The CONNECT front end terminates TLS for the registry host a client asked for,
so it needs a certificate for that host signed by a CA the nodes trust. This
module makes that CA (or loads the operator's own), mints leaf certificates on
demand and keeps a bounded cache of them. It does no I/O: PEM bytes come in
and go out, and the current time is an argument.

The certificates follow RFC 5280 section 4.2 and the CA/Browser Forum
Baseline Requirements section 7.1 where they matter to the verifiers the
proxy must satisfy (Go's ``crypto/x509`` in skopeo, containerd and dockerd;
OpenSSL in curl and Python):

- the identity is in subjectAltName only (Go ignores the common name); a DNS
  name or an IP address, never a wildcard;
- the leaf has KeyUsage digitalSignature (critical), ExtendedKeyUsage
  serverAuth, BasicConstraints CA:FALSE (critical), and a subject and
  authority key identifier;
- the CA has BasicConstraints CA:TRUE (critical) and KeyUsage keyCertSign
  (critical);
- a leaf lives at most 397 days (:data:`MAX_LEAF_LIFETIME`) and never past
  its CA.

Keys are ECDSA on P-256 with SHA-256 signatures, for the CA made here and for
every leaf: Go, OpenSSL and Python accept them, and a key takes well under a
millisecond to make where RSA-2048 takes tens, which matters when a leaf is
minted while a client waits in its handshake. RSA-2048 leaves are available
(:attr:`LeafKeyType.RSA_2048`) for clients without ECDSA. An operator's CA
may hold an RSA (2048 bits or more) or an ECDSA (P-256, P-384, P-521) key;
leaves are then signed with RSA PKCS#1 v1.5 and SHA-256, or with ECDSA and
the hash that matches the curve.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias, TypeVar

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._errors import ConfigError, LocalProtocolError

#: The private key types a CA may hold.
CAPrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_SignatureHash: TypeAlias = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
_E = TypeVar("_E", bound=x509.ExtensionType)

#: Lifetime of the CA made on first start. Nodes trust it by hand, so it
#: should outlive the clusters that trust it.
DEFAULT_CA_LIFETIME: Final = timedelta(days=3650)

#: Lifetime of a minted leaf unless the caller asks for another.
DEFAULT_LEAF_LIFETIME: Final = timedelta(days=90)

#: The longest a leaf may live. Go does not enforce it, but Apple's and
#: Chrome's verifiers refuse TLS server certificates valid for more than 397
#: days (CA/B Forum BR 6.3.2), and a leaf that one client refuses is a leaf
#: that breaks a cluster in a way nobody can debug.
MAX_LEAF_LIFETIME: Final = timedelta(days=397)

#: How far into the past a certificate's validity starts. Nodes whose clocks
#: lag the proxy's would otherwise refuse a leaf minted a moment ago as "not
#: yet valid".
CLOCK_SKEW_ALLOWANCE: Final = timedelta(hours=1)

#: A cached leaf is replaced once less than this (or a third of its lifetime,
#: whichever is less) remains, so a node never sees one about to expire.
RENEW_BEFORE: Final = timedelta(days=30)

#: Cached leaves at most. Clients choose the SNI names the proxy mints for,
#: so without a bound a flood of names would grow the cache without limit.
MAX_LEAVES: Final = 1024

#: Longest DNS name, without the trailing dot (RFC 1035 section 2.3.4).
MAX_HOST_LENGTH: Final = 253

#: Longest DNS label (RFC 1035 section 2.3.4).
MAX_LABEL_LENGTH: Final = 63

#: The X.520 upper bound of a common name (RFC 5280 appendix A,
#: ``ub-common-name``). Longer host names go in the SAN only.
MAX_COMMON_NAME_LENGTH: Final = 64

#: Weakest RSA CA key accepted: OpenSSL at Debian's default security level
#: refuses chains with shorter keys, so a leaf signed by one would fail on
#: half the nodes.
MIN_RSA_KEY_BITS: Final = 2048

# Where a refused CA is configured; errors about it name these keys.
_CA_CERT_KEY: Final = "proxy.ca_cert"
_CA_KEY_KEY: Final = "proxy.ca_key"

# Letters, digits, hyphens inside, and underscores (Go and OpenSSL accept
# them in host names, and container host names often have them). Applied
# to lower-cased ASCII only.
_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_DIGITS_RE: Final = re.compile(r"[0-9]+")

# The hash an ECDSA CA signs with, matched to its curve as TLS 1.3's
# signature schemes pair them (RFC 8446 section 4.2.3).
_EC_HASHES: Final[dict[str, type[_SignatureHash]]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


class LeafKeyType(enum.Enum):
    """The key algorithm of minted leaves."""

    ECDSA_P256 = "ecdsa-p256"
    RSA_2048 = "rsa-2048"


@attrs.frozen
class LeafCertificate:
    """A minted server certificate for one host, with its key, as PEM bytes.

    ``chain_pem`` is the leaf followed by the CA (and any certificates above
    it): what ``ssl.SSLContext.load_cert_chain`` wants as its certificate.
    ``key_pem`` is unencrypted PKCS#8.
    """

    host: str
    cert_pem: bytes = attrs.field(repr=False)
    key_pem: bytes = attrs.field(repr=False)
    chain_pem: bytes = attrs.field(repr=False)
    not_before: datetime
    not_after: datetime
    ca_fingerprint: str


def _fingerprint(self: CertificateAuthority) -> str:
    return self.certificate.fingerprint(hashes.SHA256()).hex()


def _chain_pem(self: CertificateAuthority) -> bytes:
    return b"".join(
        cert.public_bytes(serialization.Encoding.PEM) for cert in (self.certificate, *self.chain)
    )


@attrs.frozen
class CertificateAuthority:
    """A CA certificate and its private key, able to mint leaf certificates.

    Build one with :meth:`create` or :meth:`from_pem`; the constructor checks
    the same things :meth:`from_pem` does. ``chain`` holds the certificates
    above an operator's intermediate CA, sent after it in every handshake.
    """

    certificate: x509.Certificate
    private_key: CAPrivateKey = attrs.field(repr=False, eq=False)
    chain: tuple[x509.Certificate, ...] = ()
    #: SHA-256 of the CA certificate's DER, in hex. Leaf caches are keyed by
    #: it, so a changed CA invalidates them.
    fingerprint: str = attrs.field(init=False, default=attrs.Factory(_fingerprint, takes_self=True))
    _ca_chain_pem: bytes = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(_chain_pem, takes_self=True)
    )

    def __attrs_post_init__(self) -> None:
        _check_authority(self.certificate, self.private_key, self.chain)

    @classmethod
    def create(
        cls,
        *,
        now: datetime,
        common_name: str = "regcache CA",
        organization: str = "regcache",
        valid_for: timedelta = DEFAULT_CA_LIFETIME,
    ) -> CertificateAuthority:
        """Make a new self-signed CA with an ECDSA P-256 key.

        It is valid from :data:`CLOCK_SKEW_ALLOWANCE` before ``now`` for
        ``valid_for``, may sign leaves but no further CAs (path length 0).
        """
        now = _utc_seconds(now)
        if valid_for <= timedelta(0):
            raise LocalProtocolError(f"a CA lifetime must be positive, not {valid_for}")
        if not common_name or len(common_name) > MAX_COMMON_NAME_LENGTH:
            raise LocalProtocolError(
                f"a CA common name must have 1 to {MAX_COMMON_NAME_LENGTH} characters"
            )
        if not organization or len(organization) > MAX_COMMON_NAME_LENGTH:
            raise LocalProtocolError(
                f"a CA organization must have 1 to {MAX_COMMON_NAME_LENGTH} characters"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
            .not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def from_pem(
        cls,
        cert_pem: bytes,
        key_pem: bytes,
        *,
        password: bytes | None = None,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """Load a CA from PEM: its certificate and its private key.

        ``cert_pem`` is the CA certificate, optionally followed by the
        certificates above it (an operator's intermediate CA and its
        issuers, in order). The key is PKCS#8 or traditional OpenSSL PEM,
        encrypted with ``password`` if one is given. When ``now`` is given,
        a CA that is expired or not yet valid is refused too.

        Raises :class:`ConfigError` naming ``proxy.ca_cert`` or
        ``proxy.ca_key`` with the reason.
        """
        try:
            certificates = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            raise ConfigError(_CA_CERT_KEY, f"not a PEM certificate ({exc})") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password)
        except TypeError as exc:
            # cryptography says TypeError when a password is missing or surplus.
            raise ConfigError(_CA_KEY_KEY, f"cannot load the private key: {exc}") from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ConfigError(
                _CA_KEY_KEY, f"not a PEM private key, or a wrong password ({exc})"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(
                _CA_KEY_KEY,
                f"a {type(key).__name__} key cannot sign for the proxy; use RSA or ECDSA",
            )
        authority = cls(certificates[0], key, tuple(certificates[1:]))
        if now is not None:
            now = _utc_seconds(now)
            if now >= authority.not_after:
                raise ConfigError(
                    _CA_CERT_KEY, f"the CA certificate expired at {authority.not_after:%Y-%m-%d}"
                )
            if now < authority.certificate.not_valid_before_utc:
                raise ConfigError(
                    _CA_CERT_KEY,
                    "the CA certificate is not valid before"
                    f" {authority.certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
                )
        return authority

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate as PEM: what the nodes must trust."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The CA's private key as unencrypted PKCS#8 PEM. Keep it secret."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def not_after(self) -> datetime:
        """When the CA certificate expires (UTC); no leaf outlives it."""
        return self.certificate.not_valid_after_utc

    @property
    def common_name(self) -> str:
        """The CA subject's common name, or its whole subject if it has none."""
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if names and isinstance(names[0].value, str):
            return names[0].value
        return self.certificate.subject.rfc4514_string()

    def mint_leaf(
        self,
        host: str,
        *,
        now: datetime,
        valid_for: timedelta = DEFAULT_LEAF_LIFETIME,
        key_type: LeafKeyType = LeafKeyType.ECDSA_P256,
    ) -> LeafCertificate:
        """Mint a TLS server certificate for ``host`` with a fresh key.

        ``host`` is a DNS name (case and one trailing dot are normalised
        away) or an IPv4 or IPv6 literal, the latter optionally in brackets.
        The leaf is valid from :data:`CLOCK_SKEW_ALLOWANCE` before ``now``
        until the earliest of ``now + valid_for``, ``now +``
        :data:`MAX_LEAF_LIFETIME` and the CA's expiry.

        Raises :class:`LocalProtocolError` for a host that is neither, and
        :class:`ConfigError` if the CA has expired.
        """
        now = _utc_seconds(now)
        if valid_for <= timedelta(0):
            raise LocalProtocolError(f"a leaf lifetime must be positive, not {valid_for}")
        name, address = _parse_host(host)
        not_after = min(now + min(valid_for, MAX_LEAF_LIFETIME), self.not_after)
        if not_after <= now:
            raise ConfigError(
                _CA_CERT_KEY,
                f"the CA certificate expired at {self.not_after:%Y-%m-%d}; replace it",
            )
        not_before = now - CLOCK_SKEW_ALLOWANCE

        key: CAPrivateKey
        if key_type is LeafKeyType.RSA_2048:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        identity: x509.GeneralName = (
            x509.IPAddress(address) if address is not None else x509.DNSName(name)
        )
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, name)]
            if len(name) <= MAX_COMMON_NAME_LENGTH
            else []
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            # RFC 5280 4.2.1.6: critical exactly when the subject is empty.
            .add_extension(x509.SubjectAlternativeName([identity]), critical=not subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(
                    digital_signature=True,
                    # RSA key exchange in TLS 1.2 encrypts to the leaf key.
                    key_encipherment=key_type is LeafKeyType.RSA_2048,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self.private_key, _signature_hash(self.private_key))
        )
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        return LeafCertificate(
            host=name,
            cert_pem=cert_pem,
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            chain_pem=cert_pem + self._ca_chain_pem,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            ca_fingerprint=self.fingerprint,
        )

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            # Verifiers that match by key identifier compute the CA's the
            # same way (RFC 5280 4.2.1.2 method 1).
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


@attrs.define
class LeafCache:
    """Leaves by host, minted on a miss and renewed before they expire.

    Bounded to ``max_leaves`` entries, the least recently used going first.
    Hosts are normalised (case, trailing dot, IPv6 brackets) before lookup,
    so every spelling of a host shares one leaf.
    """

    _authority: CertificateAuthority
    max_leaves: int = attrs.field(default=MAX_LEAVES)
    leaf_lifetime: timedelta = DEFAULT_LEAF_LIFETIME
    key_type: LeafKeyType = LeafKeyType.ECDSA_P256
    _leaves: OrderedDict[str, LeafCertificate] = attrs.field(
        init=False, factory=OrderedDict, repr=False
    )

    @max_leaves.validator
    def _check_max_leaves(self, _attribute: object, value: int) -> None:
        if value < 1:
            raise LocalProtocolError(f"a leaf cache must hold at least one leaf, not {value}")

    @property
    def authority(self) -> CertificateAuthority:
        """The CA the cached leaves are signed by."""
        return self._authority

    def get(self, host: str, now: datetime) -> LeafCertificate:
        """The leaf for ``host`` at ``now``, minted if missing or due for renewal.

        Raises what :meth:`CertificateAuthority.mint_leaf` raises.
        """
        name, _ = _parse_host(host)
        now = _utc_seconds(now)
        leaf = self._leaves.get(name)
        if leaf is not None and _is_fresh(leaf, now, self._authority.fingerprint):
            self._leaves.move_to_end(name)
            return leaf
        leaf = self._authority.mint_leaf(
            name, now=now, valid_for=self.leaf_lifetime, key_type=self.key_type
        )
        self._leaves[name] = leaf
        self._leaves.move_to_end(name)
        while len(self._leaves) > self.max_leaves:
            self._leaves.popitem(last=False)
        return leaf

    def replace_authority(self, authority: CertificateAuthority) -> None:
        """Sign with ``authority`` from now on; drop every leaf if it is another CA."""
        if authority.fingerprint != self._authority.fingerprint:
            self._leaves.clear()
        self._authority = authority

    def __len__(self) -> int:
        return len(self._leaves)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        try:
            name, _ = _parse_host(host)
        except LocalProtocolError:
            return False
        return name in self._leaves


def _is_fresh(leaf: LeafCertificate, now: datetime, ca_fingerprint: str) -> bool:
    if leaf.ca_fingerprint != ca_fingerprint:
        return False
    renew_before = min(RENEW_BEFORE, (leaf.not_after - leaf.not_before) / 3)
    # A clock that went back past not_before makes the leaf "not yet valid".
    return leaf.not_before <= now < leaf.not_after - renew_before


def _parse_host(host: str) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    """Normalise a host for a SAN: the name, and the address if it is an IP literal."""
    # Brackets, a trailing dot: a valid host is never longer than this.
    if not isinstance(host, str) or len(host) > MAX_HOST_LENGTH + 2:
        raise LocalProtocolError(f"host {str(host)[:80]!r}... is too long for a certificate")
    if host.startswith("[") and host.endswith("]"):
        address = _parse_ip(host[1:-1])
        if not isinstance(address, ipaddress.IPv6Address):
            raise LocalProtocolError(f"{host!r} is not a bracketed IPv6 address")
        return str(address), address
    address = _parse_ip(host)
    if address is not None:
        return str(address), address
    return _parse_dns_name(host), None


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # A zone names an interface of this machine; it cannot go in a SAN.
        raise LocalProtocolError(f"IPv6 address {text!r} has a zone; leave it out")
    return address


def _parse_dns_name(host: str) -> str:
    if not host.isascii():
        raise LocalProtocolError(
            f"host {host[:80]!r} is not ASCII; use its IDNA A-label (xn--) form"
        )
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_HOST_LENGTH:
        raise LocalProtocolError(f"host {host[:80]!r} must have 1 to {MAX_HOST_LENGTH} characters")
    labels = name.split(".")
    for label in labels:
        if len(label) > MAX_LABEL_LENGTH or not _LABEL_RE.fullmatch(label):
            raise LocalProtocolError(
                f"host {host[:80]!r} has an invalid label {label[:80]!r}: labels are"
                f" 1 to {MAX_LABEL_LENGTH} letters, digits, '-' or '_', not starting or"
                " ending with '-'"
            )
    if _DIGITS_RE.fullmatch(labels[-1]):
        # "127.1" or "10.0.0.256" would be read as an IPv4 address by some
        # clients and as a name by others.
        raise LocalProtocolError(f"host {host[:80]!r} is neither a DNS name nor an IP address")
    return name


def _check_authority(
    certificate: x509.Certificate, key: CAPrivateKey, chain: tuple[x509.Certificate, ...]
) -> None:
    """Refuse a CA that cannot sign leaves every client accepts."""
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(_CA_KEY_KEY, "the CA key must be RSA or ECDSA")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_KEY_BITS:
        raise ConfigError(
            _CA_KEY_KEY,
            f"an RSA CA key of {key.key_size} bits is too weak; use {MIN_RSA_KEY_BITS} or more",
        )
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _EC_HASHES:
        raise ConfigError(
            _CA_KEY_KEY,
            f"ECDSA curve {key.curve.name} is not widely accepted; use P-256, P-384 or P-521",
        )
    public_der = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        cert_key = certificate.public_key().public_bytes(serialization.Encoding.DER, public_der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            _CA_CERT_KEY, f"unreadable public key in the CA certificate ({exc})"
        ) from None
    if cert_key != key.public_key().public_bytes(serialization.Encoding.DER, public_der):
        raise ConfigError(_CA_KEY_KEY, "the private key does not match the CA certificate")
    try:
        constraints = _extension(certificate, x509.BasicConstraints)
        usage = _extension(certificate, x509.KeyUsage)
    except (ValueError, x509.DuplicateExtension) as exc:
        raise ConfigError(
            _CA_CERT_KEY, f"the CA certificate has broken extensions ({exc})"
        ) from None
    if constraints is None or not constraints.ca:
        raise ConfigError(
            _CA_CERT_KEY,
            "not a CA certificate: it needs BasicConstraints CA:TRUE to sign leaves",
        )
    # RFC 5280 4.2.1.3: without KeyUsage every use is allowed.
    if usage is not None and not usage.key_cert_sign:
        raise ConfigError(_CA_CERT_KEY, "the CA certificate's KeyUsage does not allow keyCertSign")
    subject = certificate
    for issuer in chain:
        try:
            subject.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise ConfigError(
                _CA_CERT_KEY,
                f"{issuer.subject.rfc4514_string()!r} did not issue"
                f" {subject.subject.rfc4514_string()!r}: list the certificates after"
                " the CA in order, each followed by its issuer",
            ) from None
        subject = issuer


def _extension(certificate: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _signature_hash(key: CAPrivateKey) -> _SignatureHash:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _EC_HASHES[key.curve.name]()
    return hashes.SHA256()


def _utc_seconds(now: datetime) -> datetime:
    """``now`` in UTC, truncated to the second a certificate can express."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise LocalProtocolError("times must be timezone-aware (UTC), not naive datetimes")
    return now.astimezone(UTC).replace(microsecond=0)
